"""Match a request to a rule: listener by Host, virtual host by Host, then the first rule
in precedence order (compiled by ``routing.table``).

Listener isolation: a request is only matched against routes of the single most specific
listener on its port whose hostname matches. Within a listener, the most specific route
hostname that matches the request wins, as virtual hosts do in Envoy; its rules are tried in
the spec's precedence order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import assert_never

from routing import model as m
from routing.errors import NoRouteMatchedError
from routing.hostnames import hostname_matches
from routing.table import (
    ListenerTable,
    MatchEntry,
    PortTable,
    RoutingTable,
    ValueMatch,
    VirtualHost,
)

__all__ = [
    "RequestFacts",
    "is_misdirected",
    "match_request",
    "select_listener",
    "select_vhost",
    "tls_listener",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestFacts:
    """What matching needs to know of a request. ``headers`` keys are lower case."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    host: str


def match_request(table: RoutingTable, port: int, req: RequestFacts) -> MatchEntry:
    port_table = table.ports.get(port)
    listener = select_listener(port_table, req.host) if port_table else None
    vhost = select_vhost(listener, req.host) if listener else None
    if vhost is not None:
        for entry in vhost.entries:
            if is_match(entry, req):
                return entry
    raise NoRouteMatchedError(f"no route matches {req.method} {req.path} for host {req.host!r}")


def select_listener(port_table: PortTable, host: str) -> ListenerTable | None:
    for listener in port_table.listeners:  # most specific hostname first
        if hostname_matches(listener.hostname, host):
            return listener
    return None


def tls_listener(port_table: PortTable, server_name: str | None) -> ListenerTable | None:
    """The listener whose certificate a TLS handshake gets: the one ``server_name`` (SNI)
    selects, as a Host would; without SNI, only a listener with no hostname (a client that
    names no host gets no named listener's certificate)."""
    if server_name:
        return select_listener(port_table, server_name.lower().rstrip("."))
    return next((lt for lt in port_table.listeners if lt.hostname is None), None)


def is_misdirected(port_table: PortTable, handshake: tuple[str, str] | None, host: str) -> bool:
    """A request over TLS whose Host selects another listener of the port than its
    connection's handshake did (``handshake``: that listener's gateway and name; None for a
    connection without TLS): answered 421, so one listener's certificate never fronts
    another's routes."""
    if handshake is None:
        return False
    chosen = select_listener(port_table, host)
    return chosen is None or (chosen.gateway, chosen.name) != handshake


def select_vhost(listener: ListenerTable, host: str) -> VirtualHost | None:
    exact = listener.exact.get(host)
    if exact is not None:
        return exact
    for vhost in listener.wildcards:  # longest wildcard first
        if vhost.hostname is not None and hostname_matches(vhost.hostname, host):
            return vhost
    return listener.any_host


def is_match(entry: MatchEntry, req: RequestFacts) -> bool:
    if entry.method is not None and entry.method != req.method:
        return False
    if not _path_matches(entry, req.path):
        return False
    for h in entry.headers:
        value = req.headers.get(h.name)
        if value is None or not _value_matches(h, value):
            return False
    for q in entry.query:
        value = req.query.get(q.name)
        if value is None or not _value_matches(q, value):
            return False
    return True


def _path_matches(entry: MatchEntry, path: str) -> bool:
    match entry.path_kind:
        case m.PathKind.EXACT:
            return path == entry.path
        case m.PathKind.PREFIX:
            prefix = entry.path
            if prefix == "/":
                return True
            # element-wise: /abc matches /abc, /abc/ and /abc/def, never /abcd
            return path.startswith(prefix) and (
                len(path) == len(prefix) or path[len(prefix)] == "/"
            )
        case m.PathKind.REGEX:
            return entry.path_regex is not None and entry.path_regex.fullmatch(path) is not None
        case _:
            assert_never(entry.path_kind)


def _value_matches(vm: ValueMatch, value: str) -> bool:
    if vm.regex is not None:
        return vm.regex.fullmatch(value) is not None
    return value == vm.exact
