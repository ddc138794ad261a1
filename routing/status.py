"""The Gateway API ``status`` Sluice reports for the objects it serves, from a built table.

GatewayClasses naming Sluice's controller: ``Accepted``. Gateways of those classes: their
``Accepted`` and ``Programmed`` conditions and one entry per listener (supported kinds,
attached routes, ``Accepted``, ``ResolvedRefs``, ``Conflicted``, ``Programmed``). HTTPRoutes:
one entry in ``status.parents`` per parentRef to such a Gateway, with ``Accepted`` and
``ResolvedRefs``. Reasons are the spec's (``apis/v1/gateway_types.go``,
``shared_types.go``). Conditions carry no time: the writer keeps a condition's
``lastTransitionTime`` while its status stays, and stamps the others.

Everything here follows from the objects alone (nothing of one replica's own state, such
as a port it could not bind), so replicas that see the same objects report the same.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from routing import model as m
from routing.backends import ACCEPTED_CONTROLLERS, InvalidTarget, Resolver, unserved_reason
from routing.hostnames import intersect_hostnames
from routing.table import RoutingTable, allows_route
from routing.tlsconfig import listener_certificates

__all__ = ["ObjectStatus", "desired_statuses", "left_out_statuses"]

_HTTP_ROUTE = {"group": m.GATEWAY_GROUP, "kind": "HTTPRoute"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectStatus:
    """The status Sluice wants an object to have. For an HTTPRoute, ``status`` holds only
    Sluice's entries of ``parents`` (others' entries are the writer's to keep; Sluice's
    not listed are withdrawn, except those whose parentRef is in ``keep``)."""

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


@dataclass(slots=True)
class _Facts:
    """What every status of one table needs, indexed once."""

    table: RoutingTable
    resolver: Resolver
    secrets: dict[str, m.Secret]
    bad_secrets: Collection[str]
    served: dict[tuple[str, str], tuple[m.Secret, ...]]  # (gateway, listener) → certificates
    invalid_routes: dict[str, InvalidTarget]  # route → its first unresolved backend
    controllers: dict[str, str]  # GatewayClass → controllerName
    gateways_seen: frozenset[str]  # every Gateway in the table's config, served or not


def _facts(table: RoutingTable, bad_secrets: Collection[str]) -> _Facts:
    invalid: dict[str, InvalidTarget] = {}
    for rule in table.rules:
        for backend in rule.backends:
            if isinstance(backend.target, InvalidTarget):
                invalid.setdefault(rule.route, backend.target)
    config = table.config
    return _Facts(
        table=table,
        resolver=Resolver(config),
        secrets={s.meta.key: s for s in config.secrets},
        bad_secrets=bad_secrets,
        served={
            (lt.gateway, lt.name): lt.certificates
            for pt in table.ports.values()
            for lt in pt.listeners
        },
        invalid_routes=invalid,
        controllers={c.meta.name: c.controller_name for c in config.gateway_classes},
        gateways_seen=frozenset(g.meta.key for g in config.gateways),
    )


def desired_statuses(table: RoutingTable, bad_secrets: Collection[str] = ()) -> list[ObjectStatus]:
    """Every status Sluice owns for ``table`` (whose config came from a cluster).
    ``bad_secrets``: Secrets (``ns/name``) whose certificate and key do not load."""
    config = table.config
    facts = _facts(table, bad_secrets)
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
    gateways = {g.meta.key: g for g in config.gateways if unserved_reason(config, g) is None}
    ns_labels = {n.meta.name: n.meta.label_map() for n in config.namespaces}
    attached: dict[tuple[str, str], int] = {}  # (gateway, listener) → routes attached
    for route in config.routes:
        parents, keep, listeners = _route_parents(facts, route, gateways, ns_labels)
        for key in listeners:
            attached[key] = attached.get(key, 0) + 1
        status: dict[str, Any] = {"parents": parents}  # none: Sluice's entries are withdrawn
        if keep:
            status["keep"] = keep
        out.append(
            ObjectStatus(
                kind="HTTPRoute",
                namespace=route.meta.namespace,
                name=route.meta.name,
                status=status,
            )
        )
    out += [_gateway_status(facts, gw, attached) for gw in gateways.values()]
    return out


def left_out_statuses(
    left_out: Collection[tuple[str, str, str]],
    gateways: Iterable[tuple[str, str, str, int]],
    routes: Iterable[tuple[str, str, int, Mapping[str, Any]]],
) -> list[ObjectStatus]:
    """For objects of Sluice's the loader left out for an error (``left_out``: kind,
    namespace, name; the log names the field): ``gateways`` (namespace, name, controllerName
    of their class, generation) are not Accepted, and Sluice's entries in ``routes``
    (namespace, name, generation, status) say the route is not."""
    message = "the object has an error Sluice cannot serve it with (its log names the field)"
    out = [
        ObjectStatus(
            kind="Gateway",
            namespace=ns,
            name=name,
            status={
                "conditions": [
                    _condition("Accepted", False, "Invalid", message, generation),
                    _condition("Programmed", False, "Invalid", message, generation),
                ],
                "listeners": [],
            },
        )
        for ns, name, controller, generation in gateways
        if controller in ACCEPTED_CONTROLLERS and ("Gateway", ns, name) in left_out
    ]
    for ns, name, generation, status in routes:
        ours = [p for p in status.get("parents") or ()
                if p.get("controllerName") in ACCEPTED_CONTROLLERS]  # fmt: skip
        if not ours or ("HTTPRoute", ns, name) not in left_out:
            continue
        condition = _condition("Accepted", False, "UnsupportedValue", message, generation)
        parents = [{**p, "conditions": [condition]} for p in ours]
        out.append(ObjectStatus(kind="HTTPRoute", namespace=ns, name=name,
                                status={"parents": parents}))  # fmt: skip
    return out


def _route_parents(
    facts: _Facts,
    route: m.HTTPRoute,
    gateways: dict[str, m.Gateway],
    ns_labels: dict[str, dict[str, str]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[tuple[str, str]]]:
    """The route's parents entries for Sluice's Gateways, the parentRefs to Gateways this
    table does not have (their entries are kept: the Gateway may be left out for an error,
    or in a namespace this replica does not read), and the listeners it attaches to."""
    generation = route.meta.generation
    invalid = facts.invalid_routes.get(route.meta.key)
    resolved = (
        _condition("ResolvedRefs", False, invalid.code, invalid.reason, generation)
        if invalid is not None
        else _condition("ResolvedRefs", True, "ResolvedRefs", "", generation)
    )
    parents: list[dict[str, Any]] = []
    keep: list[dict[str, Any]] = []  # parentRefs whose entries Sluice leaves as they are
    listeners: set[tuple[str, str]] = set()
    for ref in route.parent_refs:
        if ref.group != m.GATEWAY_GROUP or ref.kind != "Gateway":
            continue
        key = f"{ref.namespace or route.meta.namespace}/{ref.name}"
        gw = gateways.get(key)
        if gw is None:
            if key not in facts.gateways_seen:
                keep.append(_parent_ref(ref))  # not in this table (left out, not visible)
            continue  # another controller's Gateway: its controller reports it
        ok, reason, message, allowed = _acceptance(route, ref, gw, ns_labels)
        listeners.update((gw.meta.key, listener.name) for listener in allowed)
        parents.append(
            {
                "parentRef": _parent_ref(ref),
                "controllerName": facts.controllers.get(
                    gw.class_name, "sluice.dev/gateway-controller"
                ),
                "conditions": [_condition("Accepted", ok, reason, message, generation), resolved],
            }
        )
    return parents, keep, listeners


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
    listeners whose allowedRoutes admit it (``attachedRoutes`` counts those, accepted by
    hostname or not)."""
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
    if all(intersect_hostnames(x.hostname, route.hostnames) is None for x in allowed):
        message = "no listener hostname matches its hostnames"
        return False, "NoMatchingListenerHostname", message, allowed
    return True, "Accepted", "", allowed


def _gateway_status(
    facts: _Facts, gw: m.Gateway, attached: dict[tuple[str, str], int]
) -> ObjectStatus:
    generation = gw.meta.generation
    listeners = [_listener_status(facts, gw, listener, attached) for listener in gw.listeners]
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
    facts: _Facts, gw: m.Gateway, listener: m.Listener, attached: dict[tuple[str, str], int]
) -> dict[str, Any]:
    generation = gw.meta.generation
    key = (gw.meta.key, listener.name)
    protocol_ok = listener.protocol in ("HTTP", "HTTPS")
    kinds_ok = (
        not listener.allowed_kinds or (m.GATEWAY_GROUP, "HTTPRoute") in listener.allowed_kinds
    )
    unsupported = [k for g, k in listener.allowed_kinds if (g, k) != (m.GATEWAY_GROUP, "HTTPRoute")]
    refs = _listener_refs(facts, gw, listener, unsupported)
    served = key in facts.served
    certificates = facts.served.get(key, ())
    # served, and not an HTTPS listener whose every certificate fails to load (no handshake)
    usable = served and not (
        certificates and all(c.meta.key in facts.bad_secrets for c in certificates)
    )
    conflict = "" if served or not protocol_ok else _conflict_reason(facts, gw, listener)
    conditions = [
        _condition("Accepted", True, "Accepted", "", generation)
        if protocol_ok
        else _condition(
            "Accepted",
            False,
            "UnsupportedProtocol",
            f"{listener.protocol} is not served",
            generation,
        ),
        _condition("ResolvedRefs", refs[0], refs[1], refs[2], generation),
        _condition("Conflicted", bool(conflict), conflict or "NoConflicts", "", generation),
        _condition("Programmed", True, "Programmed", "", generation)
        if usable
        else _condition("Programmed", False, "Invalid", "the listener is not served", generation),
    ]
    return {
        "name": listener.name,
        "supportedKinds": [dict(_HTTP_ROUTE)] if protocol_ok and kinds_ok else [],
        "attachedRoutes": attached.get(key, 0),
        "conditions": conditions,
    }


def _listener_refs(
    facts: _Facts, gw: m.Gateway, listener: m.Listener, unsupported_kinds: list[str]
) -> tuple[bool, str, str]:
    if unsupported_kinds:
        return False, "InvalidRouteKinds", f"not served: {', '.join(unsupported_kinds)}"
    if listener.protocol != "HTTPS" or listener.tls is None:
        return True, "ResolvedRefs", ""

    found, problems = listener_certificates(gw, listener.tls, facts.secrets, facts.resolver)
    problems += tuple(
        f"certificateRef {s.meta.key}: tls.crt and tls.key do not load"
        for s in found
        if s.meta.key in facts.bad_secrets
    )
    if not problems:
        return True, "ResolvedRefs", ""
    reason = (
        "RefNotPermitted"
        if all("ReferenceGrant" in p for p in problems)
        else "InvalidCertificateRef"
    )
    return False, reason, "; ".join(problems)


def _conflict_reason(facts: _Facts, gw: m.Gateway, listener: m.Listener) -> str:
    """Why a valid listener is not served although nothing of its own is wrong: another
    protocol has its port, or an older listener its hostname there ("" when neither)."""
    port = facts.table.ports.get(listener.port)
    if port is None:
        return ""
    if port.protocol != listener.protocol:
        return "ProtocolConflict"
    if listener.protocol == "HTTPS" and any(
        lt.hostname == listener.hostname for lt in port.listeners
    ):
        return "HostnameConflict"
    return ""


def _is_true(conditions: Iterable[dict[str, Any]], kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)
