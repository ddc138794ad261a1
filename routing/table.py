"""Compile a parsed ``Config`` into the ``RoutingTable`` the data plane looks things up in.

Everything that can be decided before a request arrives is decided here: which routes attach
to which listeners (parentRefs, sectionName, port, allowedRoutes, hostname intersection),
backend resolution, and the match order of every listener, per the HTTPRoute precedence rules
(``apis/v1/httproute_types.go``). Request-time code only looks things up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import assert_never

from routing import model as m
from routing.backends import (
    ACCEPTED_CONTROLLERS,
    PoolTarget,
    Resolver,
    unserved_reason,
)
from routing.errors import ConfigIssue
from routing.hostnames import intersect_hostnames, specificity
from routing.pools import PoolSettings, build_pool_settings, presets_by_engine
from routing.presets import Preset
from routing.rolloutconfig import RolloutSpec, bind_rollout
from routing.rules import CompiledRule, FilterSet, MirrorTarget, WeightedBackend, compile_route
from routing.tlsconfig import listener_certificates

__all__ = [
    "ACCEPTED_CONTROLLERS",
    "CompiledRule",
    "FilterSet",
    "ListenerTable",
    "MatchEntry",
    "MirrorTarget",
    "PortTable",
    "RoutingTable",
    "VirtualHost",
    "WeightedBackend",
    "allows_route",
    "build_table",
]

_PATH_RANK = {m.PathKind.EXACT: 0, m.PathKind.REGEX: 1, m.PathKind.PREFIX: 2}


@dataclass(frozen=True, slots=True, kw_only=True)
class ValueMatch:
    name: str
    exact: str | None
    regex: re.Pattern[str] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchEntry:
    rule: CompiledRule
    path_kind: m.PathKind
    path: str
    path_regex: re.Pattern[str] | None
    headers: tuple[ValueMatch, ...]
    query: tuple[ValueMatch, ...]
    method: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualHost:
    hostname: str | None
    entries: tuple[MatchEntry, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerTable:
    gateway: str
    name: str
    port: int
    hostname: str | None
    exact: Mapping[str, VirtualHost]
    wildcards: tuple[VirtualHost, ...]
    any_host: VirtualHost | None
    # an HTTPS listener's certificates (the Secrets its certificateRefs resolve to)
    certificates: tuple[m.Secret, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PortTable:
    port: int
    listeners: tuple[ListenerTable, ...]
    protocol: str = "HTTP"  # or HTTPS: every listener of the port has this protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingTable:
    ports: Mapping[int, PortTable]
    config: m.Config
    # what builds but will not act as written, each with the file and document it came from
    issues: tuple[ConfigIssue, ...] = ()
    rules: tuple[CompiledRule, ...] = field(default=())
    pools: Mapping[str, PoolSettings] = field(default_factory=dict)
    presets: Mapping[str, Preset] = field(default_factory=dict)
    # Rollouts by what they drive: (route key, rule index) or (rewrite key, rule index)
    rollouts: Mapping[tuple[str, int], RolloutSpec] = field(default_factory=dict)

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(issue.message for issue in self.issues)

    def pool_targets(self) -> tuple[PoolTarget, ...]:
        """Every InferencePool some rule routes to (once each)."""
        seen: dict[str, PoolTarget] = {}
        for rule in self.rules:
            for b in rule.backends:
                if isinstance(b.target, PoolTarget):
                    seen.setdefault(b.target.name, b.target)
        return tuple(seen.values())


@dataclass(slots=True)
class _Attached:
    route: m.HTTPRoute
    hostnames: tuple[str, ...]
    rules: tuple[CompiledRule, ...]


def build_table(config: m.Config) -> RoutingTable:
    resolver = Resolver(config)
    warnings: list[ConfigIssue] = []
    gateways = _served_gateways(config, warnings)
    ns_labels = {n.meta.name: n.meta.label_map() for n in config.namespaces}
    compiled = {r.meta.key: compile_route(r, resolver) for r in config.routes}
    per_listener: dict[tuple[str, str], list[_Attached]] = {}
    for route in config.routes:
        attached = _attach(route, gateways, ns_labels)
        if not attached and route.parent_refs:
            warnings.append(
                _warning(
                    route.meta, f"HTTPRoute {route.meta.key} is not attached to any served listener"
                )
            )
        for (gw, listener), hostnames in attached.items():
            per_listener.setdefault((gw.meta.key, listener.name), []).append(
                _Attached(route=route, hostnames=hostnames, rules=compiled[route.meta.key])
            )
    ports = _port_tables(config, gateways, per_listener, resolver, warnings)
    rollouts = _bind_rollouts(config, warnings)
    return RoutingTable(
        rollouts=rollouts,
        ports=ports,
        config=config,
        issues=tuple(warnings),
        rules=tuple(rule for rules in compiled.values() for rule in rules),
        pools=build_pool_settings(config),
        presets=presets_by_engine(config.presets),
    )


def _port_tables(
    config: m.Config,
    gateways: list[m.Gateway],
    per_listener: dict[tuple[str, str], list[_Attached]],
    resolver: Resolver,
    warnings: list[ConfigIssue],
) -> dict[int, PortTable]:
    """The served listeners by port. A port has one protocol: the oldest Gateway's served
    listener on it sets it (file order where nothing says how old), and a listener of the
    other protocol there is a warning, not served; so is an HTTPS listener whose hostname an
    older one on the port has (its certificate could never be chosen)."""
    ports: dict[int, list[ListenerTable]] = {}
    protocols: dict[int, tuple[str, str]] = {}  # port → (protocol, the listener that set it)
    secrets = {s.meta.key: s for s in config.secrets}
    for gw in sorted(gateways, key=lambda g: g.meta.creation):  # stable: file order stays
        for listener in gw.listeners:
            label = f"Gateway {gw.meta.key} listener {listener.name}"
            if listener.protocol not in ("HTTP", "HTTPS"):
                continue
            first = protocols.get(listener.port)
            if first is not None and first[0] != listener.protocol:
                message = f"{label}: port {listener.port} is {first[0]} for {first[1]}; not served"
                warnings.append(_warning(gw.meta, message))
                continue
            certificates: tuple[m.Secret, ...] = ()
            if listener.protocol == "HTTPS":
                same = [t for t in ports.get(listener.port, ()) if t.hostname == listener.hostname]
                if same:
                    where = f"Gateway {same[0].gateway} listener {same[0].name}"
                    message = (
                        f"{label}: {where} has its hostname on port {listener.port}; not served"
                    )
                    warnings.append(_warning(gw.meta, message))
                    continue
                certificates = _certificates(gw, listener, label, secrets, resolver, warnings)
                if not certificates:
                    continue
            protocols.setdefault(listener.port, (listener.protocol, label))
            attached_here = per_listener.get((gw.meta.key, listener.name), [])
            table = _listener_table(gw, listener, attached_here, certificates)
            ports.setdefault(listener.port, []).append(table)
    return {
        port: PortTable(
            port=port,
            listeners=tuple(sorted(ls, key=lambda t: specificity(t.hostname))),
            protocol=protocols[port][0],
        )
        for port, ls in ports.items()
    }


def _certificates(
    gw: m.Gateway,
    listener: m.Listener,
    label: str,
    secrets: Mapping[str, m.Secret],
    resolver: Resolver,
    warnings: list[ConfigIssue],
) -> tuple[m.Secret, ...]:
    """An HTTPS listener's certificates; each ref that does not resolve is a warning, and a
    listener left with none is not served (its Secret may arrive later)."""
    if listener.tls is None:  # the parser refuses this; a listener built in code may not
        warnings.append(_warning(gw.meta, f"{label}: HTTPS without tls; not served"))
        return ()

    found, problems = listener_certificates(gw, listener.tls, secrets, resolver)
    for problem in problems:
        warnings.append(_warning(gw.meta, f"{label}: {problem}"))
    if not found:
        warnings.append(_warning(gw.meta, f"{label}: no usable certificate; not served"))
    return found


def _warning(meta: m.Meta, message: str) -> ConfigIssue:
    return ConfigIssue(
        file=meta.source, document=meta.document, path="", message=message, severity="warning"
    )


def _bind_rollouts(
    config: m.Config, warnings: list[ConfigIssue]
) -> dict[tuple[str, int], RolloutSpec]:
    """Each Rollout's rule; an unbindable one is a warning and stays inert. Two on one rule:
    the oldest wins."""
    out: dict[tuple[str, int], RolloutSpec] = {}
    for spec in sorted(config.rollouts, key=lambda r: (r.meta.creation, r.meta.key)):
        binding = bind_rollout(spec, config)
        if isinstance(binding, str):
            warnings.append(_warning(spec.meta, f"Rollout {spec.meta.key}: {binding}"))
            continue
        where = (binding.key, binding.rule)
        if where in out:
            message = f"Rollout {spec.meta.key}: rule already driven by {out[where].meta.key}"
            warnings.append(_warning(spec.meta, message))
            continue
        out[where] = spec
    return out


def _served_gateways(config: m.Config, warnings: list[ConfigIssue]) -> list[m.Gateway]:
    served = []
    for gw in config.gateways:
        reason = unserved_reason(config, gw)
        if reason is not None:
            warnings.append(_warning(gw.meta, f"Gateway {gw.meta.key}: {reason}"))
            continue
        served.append(gw)
    return served


def _attach(
    route: m.HTTPRoute, gateways: list[m.Gateway], ns_labels: dict[str, dict[str, str]]
) -> dict[tuple[m.Gateway, m.Listener], tuple[str, ...]]:
    out: dict[tuple[m.Gateway, m.Listener], tuple[str, ...]] = {}
    for ref in route.parent_refs:
        if ref.group != m.GATEWAY_GROUP or ref.kind != "Gateway":
            continue
        ns = ref.namespace or route.meta.namespace
        for gw in gateways:
            if gw.meta.name != ref.name or gw.meta.namespace != ns:
                continue
            for listener in gw.listeners:
                if ref.section_name is not None and listener.name != ref.section_name:
                    continue
                if ref.port is not None and listener.port != ref.port:
                    continue
                if not allows_route(gw, listener, route, ns_labels):
                    continue
                hostnames = intersect_hostnames(listener.hostname, route.hostnames)
                if hostnames is None:
                    continue
                key = (gw, listener)
                out[key] = tuple(dict.fromkeys(out.get(key, ()) + hostnames))
    return out


def allows_route(
    gw: m.Gateway,
    listener: m.Listener,
    route: m.HTTPRoute,
    ns_labels: dict[str, dict[str, str]],
) -> bool:
    """The listener's ``allowedRoutes`` admit the route (kind and namespace); only HTTP and
    HTTPS listeners take HTTPRoutes."""
    if listener.protocol not in ("HTTP", "HTTPS"):
        return False
    if listener.allowed_kinds and not any(
        g == m.GATEWAY_GROUP and k == "HTTPRoute" for g, k in listener.allowed_kinds
    ):
        return False
    match listener.allowed_from:
        case m.AllowedFrom.ALL:
            return True
        case m.AllowedFrom.SAME:
            return route.meta.namespace == gw.meta.namespace
        case m.AllowedFrom.SELECTOR:
            selector = listener.allowed_selector
            labels = ns_labels.get(route.meta.namespace, {})
            return selector is not None and selector.matches(labels)
        case _:
            assert_never(listener.allowed_from)


def _listener_table(
    gw: m.Gateway,
    listener: m.Listener,
    attached: list[_Attached],
    certificates: tuple[m.Secret, ...] = (),
) -> ListenerTable:
    """Group the listener's rules into virtual hosts by effective hostname, each sorted."""
    by_host: dict[str | None, list[tuple[tuple[object, ...], MatchEntry]]] = {}
    for att in attached:
        for rule in att.rules:
            for mi, match in enumerate(rule_matches(att.route, rule.index)):
                entry = _entry(rule, match)
                key = (
                    *_precedence(match),
                    att.route.meta.creation,
                    att.route.meta.key,
                    rule.index,
                    mi,
                )
                for host in att.hostnames or (None,):
                    by_host.setdefault(host, []).append((key, entry))
    vhosts = {
        host: VirtualHost(
            hostname=host, entries=tuple(e for _, e in sorted(items, key=lambda t: t[0]))
        )
        for host, items in by_host.items()
    }
    wildcards = sorted(
        (v for h, v in vhosts.items() if h is not None and h.startswith("*.")),
        key=lambda v: specificity(v.hostname),
    )
    return ListenerTable(
        gateway=gw.meta.key,
        name=listener.name,
        port=listener.port,
        hostname=listener.hostname,
        exact={h: v for h, v in vhosts.items() if h is not None and not h.startswith("*.")},
        wildcards=tuple(wildcards),
        any_host=vhosts.get(None),
        certificates=certificates,
    )


def rule_matches(route: m.HTTPRoute, index: int) -> tuple[m.RouteMatch, ...]:
    return route.rules[index].matches


def _precedence(match: m.RouteMatch) -> tuple[object, ...]:
    """Spec order: Exact path; longest prefix; method; most headers; most query params."""
    value = match.path.value
    if match.path.kind is m.PathKind.PREFIX:
        value = _normalise_prefix(value)
    return (
        _PATH_RANK[match.path.kind],
        -len(value),
        0 if match.method else 1,
        -len(match.headers),
        -len(match.query_params),
    )


def _normalise_prefix(value: str) -> str:
    # "/abc/" and "/abc" are the same prefix: a trailing slash is ignored (Ingress semantics).
    return value.rstrip("/") or "/"


def _entry(rule: CompiledRule, match: m.RouteMatch) -> MatchEntry:
    path = match.path
    return MatchEntry(
        rule=rule,
        path_kind=path.kind,
        path=_normalise_prefix(path.value) if path.kind is m.PathKind.PREFIX else path.value,
        path_regex=re.compile(path.value) if path.kind is m.PathKind.REGEX else None,
        headers=tuple(_value_match(h.name.lower(), h.kind, h.value) for h in match.headers),
        query=tuple(_value_match(q.name, q.kind, q.value) for q in match.query_params),
        method=match.method,
    )


def _value_match(name: str, kind: m.MatchKind, value: str) -> ValueMatch:
    if kind is m.MatchKind.REGEX:
        return ValueMatch(name=name, exact=None, regex=re.compile(value))
    return ValueMatch(name=name, exact=value, regex=None)
