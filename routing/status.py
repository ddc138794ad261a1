"""The Gateway API ``status`` Sluice reports for the objects it serves, from a built table.

GatewayClasses naming Sluice's controller: ``Accepted``. Gateways of those classes: their
``Accepted`` and ``Programmed`` conditions and one entry per listener (supported kinds,
attached routes, ``Accepted``, ``ResolvedRefs``, ``Conflicted``, ``Programmed``). HTTPRoutes:
one entry in ``status.parents`` per parentRef to such a Gateway, with ``Accepted`` and
``ResolvedRefs``. Reasons are the spec's (``apis/v1/gateway_types.go``,
``shared_types.go``). Conditions carry no time: the writer keeps a condition's
``lastTransitionTime`` while its status stays, and stamps the others.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from routing import model as m
from routing.backends import ACCEPTED_CONTROLLERS, InvalidTarget, Resolver, unserved_reason
from routing.hostnames import intersect_hostnames
from routing.table import RoutingTable, allows_route
from routing.tlsconfig import listener_certificates

__all__ = ["CONTROLLER", "ObjectStatus", "desired_statuses"]

CONTROLLER = "sluice.dev/gateway-controller"  # the name Sluice writes as controllerName
_ROUTE_KINDS = ({"group": m.GATEWAY_GROUP, "kind": "HTTPRoute"},)


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectStatus:
    """The status Sluice wants an object to have. For an HTTPRoute, ``status`` holds only
    Sluice's entries of ``parents`` (others' entries are the writer's to keep)."""

    kind: str  # GatewayClass, Gateway or HTTPRoute
    namespace: str  # "" for a GatewayClass
    name: str
    status: dict[str, Any]


def _condition(
    kind: str, ok: bool, reason: str, message: str = "", generation: int = 0
) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def desired_statuses(
    table: RoutingTable, unbound_ports: Collection[int] = ()
) -> list[ObjectStatus]:
    """Every status Sluice owns for ``table`` (whose config came from a cluster).
    ``unbound_ports``: listener ports this replica could not bind (not Programmed)."""
    config = table.config
    out = [
        ObjectStatus(
            kind="GatewayClass",
            namespace="",
            name=c.meta.name,
            status={
                "conditions": [_condition("Accepted", True, "Accepted", "", c.meta.generation)]
            },
        )
        for c in config.gateway_classes
        if c.controller_name in ACCEPTED_CONTROLLERS
    ]
    gateways = [g for g in config.gateways if unserved_reason(config, g) is None]
    ns_labels = {n.meta.name: n.meta.label_map() for n in config.namespaces}
    attached: dict[tuple[str, str], int] = {}  # (gateway, listener) → routes attached
    for route in config.routes:
        parents, listeners = _route_parents(table, route, gateways, ns_labels)
        for key in listeners:
            attached[key] = attached.get(key, 0) + 1
        if parents:
            out.append(
                ObjectStatus(
                    kind="HTTPRoute",
                    namespace=route.meta.namespace,
                    name=route.meta.name,
                    status={"parents": parents},
                )
            )
    out += [_gateway_status(table, gw, attached, unbound_ports) for gw in gateways]
    return out


def _route_parents(
    table: RoutingTable,
    route: m.HTTPRoute,
    gateways: list[m.Gateway],
    ns_labels: dict[str, dict[str, str]],
) -> tuple[list[dict[str, Any]], set[tuple[str, str]]]:
    """The route's parents entries for Sluice's Gateways, and the listeners it attaches to."""
    generation = route.meta.generation
    resolved = _resolved_refs(table, route)
    parents: list[dict[str, Any]] = []
    listeners: set[tuple[str, str]] = set()
    for ref in route.parent_refs:
        if ref.group != m.GATEWAY_GROUP or ref.kind != "Gateway":
            continue
        ns = ref.namespace or route.meta.namespace
        gw = next((g for g in gateways if g.meta.name == ref.name and g.meta.namespace == ns), None)
        if gw is None:
            continue  # not a Gateway Sluice serves: its controller reports it
        ok, reason, message, matched = _acceptance(route, ref, gw, ns_labels)
        listeners.update((gw.meta.key, listener.name) for listener in matched)
        parents.append(
            {
                "parentRef": _parent_ref(ref),
                "controllerName": CONTROLLER,
                "conditions": [
                    _condition("Accepted", ok, reason, message, generation),
                    _condition("ResolvedRefs", resolved[0], resolved[1], resolved[2], generation),
                ],
            }
        )
    return parents, listeners


def _parent_ref(ref: m.ParentRef) -> dict[str, Any]:
    out: dict[str, Any] = {"group": ref.group, "kind": ref.kind, "name": ref.name}
    if ref.namespace is not None:
        out["namespace"] = ref.namespace
    if ref.section_name is not None:
        out["sectionName"] = ref.section_name
    if ref.port is not None:
        out["port"] = ref.port
    return out


def _acceptance(
    route: m.HTTPRoute, ref: m.ParentRef, gw: m.Gateway, ns_labels: dict[str, dict[str, str]]
) -> tuple[bool, str, str, list[m.Listener]]:
    """Whether ``route`` attaches to ``gw`` through ``ref``, the spec's reason, and the
    listeners it attaches to."""
    candidates = [
        listener
        for listener in gw.listeners
        if (ref.section_name is None or listener.name == ref.section_name)
        and (ref.port is None or listener.port == ref.port)
    ]
    if not candidates:
        return False, "NoMatchingParent", "no listener matches sectionName and port", []
    allowed = [x for x in candidates if allows_route(gw, x, route, ns_labels)]
    if not allowed:
        return False, "NotAllowedByListeners", "the listeners' allowedRoutes do not admit it", []
    matched = [x for x in allowed if intersect_hostnames(x.hostname, route.hostnames) is not None]
    if not matched:
        return False, "NoMatchingListenerHostname", "no listener hostname matches its hostnames", []
    return True, "Accepted", "", matched


def _resolved_refs(table: RoutingTable, route: m.HTTPRoute) -> tuple[bool, str, str]:
    for rule in table.rules:
        if rule.route != route.meta.key:
            continue
        for backend in rule.backends:
            if isinstance(backend.target, InvalidTarget):
                return False, backend.target.code, backend.target.reason
    return True, "ResolvedRefs", ""


def _gateway_status(
    table: RoutingTable,
    gw: m.Gateway,
    attached: dict[tuple[str, str], int],
    unbound_ports: Collection[int],
) -> ObjectStatus:
    generation = gw.meta.generation
    served = {
        (lt.gateway, lt.name): pt.protocol for pt in table.ports.values() for lt in pt.listeners
    }
    listeners = [
        _listener_status(table, gw, listener, served, attached, unbound_ports)
        for listener in gw.listeners
    ]
    valid = [x for x in listeners if _is_true(x["conditions"], "Accepted")]
    programmed = [x for x in listeners if _is_true(x["conditions"], "Programmed")]
    conditions = [
        _condition("Accepted", True, "Accepted", "", generation)
        if valid
        else _condition("Accepted", False, "ListenersNotValid", "no listener is valid", generation),
        _condition("Programmed", True, "Programmed", "", generation)
        if programmed
        else _condition("Programmed", False, "Invalid", "no listener is served", generation),
    ]
    return ObjectStatus(
        kind="Gateway",
        namespace=gw.meta.namespace,
        name=gw.meta.name,
        status={"conditions": conditions, "listeners": listeners},
    )


def _listener_status(
    table: RoutingTable,
    gw: m.Gateway,
    listener: m.Listener,
    served: dict[tuple[str, str], str],
    attached: dict[tuple[str, str], int],
    unbound_ports: Collection[int],
) -> dict[str, Any]:
    generation = gw.meta.generation
    key = (gw.meta.key, listener.name)
    supported = listener.protocol in ("HTTP", "HTTPS")
    refs_ok, refs_reason, refs_message = True, "ResolvedRefs", ""
    if listener.protocol == "HTTPS" and listener.tls is not None:
        secrets = {s.meta.key: s for s in table.config.secrets}
        resolver = Resolver(table.config)

        def permitted(ref: m.ObjectRef, ns: str) -> bool:
            return resolver.is_permitted(ref, ns, from_kind="Gateway", from_ns=gw.meta.namespace)

        _found, problems = listener_certificates(gw, listener.tls, secrets, permitted)
        if problems:
            reason = (
                "RefNotPermitted"
                if all("ReferenceGrant" in p for p in problems)
                else ("InvalidCertificateRef")
            )
            refs_ok, refs_reason, refs_message = False, reason, "; ".join(problems)
    conflicted = supported and refs_ok and key not in served
    if key in served and listener.port in unbound_ports:
        programmed = ("Pending", f"port {listener.port} is not bound on this replica")
    elif key in served:
        programmed = ("Programmed", "")
    else:
        programmed = ("Invalid", "the listener is not served")
    conditions = [
        _condition("Accepted", True, "Accepted", "", generation)
        if supported
        else _condition(
            "Accepted",
            False,
            "UnsupportedProtocol",
            f"{listener.protocol} is not served",
            generation,
        ),
        _condition("ResolvedRefs", refs_ok, refs_reason, refs_message, generation),
        _condition(
            "Conflicted",
            conflicted,
            _conflict_reason(table, listener) if conflicted else "NoConflicts",
            "",
            generation,
        ),
        _condition("Programmed", programmed[0] == "Programmed", *programmed, generation),
    ]
    return {
        "name": listener.name,
        "supportedKinds": list(_ROUTE_KINDS) if supported else [],
        "attachedRoutes": attached.get(key, 0),
        "conditions": conditions,
    }


def _conflict_reason(table: RoutingTable, listener: m.Listener) -> str:
    port = table.ports.get(listener.port)
    return (
        "ProtocolConflict"
        if port is not None and port.protocol != listener.protocol
        else ("HostnameConflict")
    )


def _is_true(conditions: Iterable[dict[str, Any]], kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)
