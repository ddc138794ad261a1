"""Hostname rules of the Gateway API (listener and HTTPRoute hostnames).

A wildcard ``*.example.com`` matches any name with one or more extra leading labels
(``a.example.com``, ``a.b.example.com``) but not ``example.com`` itself. Specificity orders
the most specific first: exact names, then wildcards by length, then "any".
"""

from __future__ import annotations

__all__ = [
    "host_of",
    "hostname_matches",
    "intersect_hostnames",
    "specificity",
]


def host_of(header: str) -> str:
    """The host of a Host header without port or trailing dot, in lower case."""
    host = header.strip().lower()
    if host.startswith("["):  # IPv6 literal: [::1]:8080
        end = host.find("]")
        return host[: end + 1] if end >= 0 else host
    colon = host.rfind(":")
    if colon >= 0 and host[colon + 1 :].isdigit():
        host = host[:colon]
    return host.rstrip(".")


def hostname_matches(pattern: str | None, host: str) -> bool:
    """Whether ``host`` (no port, lower case) is matched by ``pattern`` (None matches all)."""
    if pattern is None:
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) and len(host) > len(suffix)
    return pattern == host


def intersect_hostnames(listener: str | None, route: tuple[str, ...]) -> tuple[str, ...] | None:
    """The effective hostnames of a route on a listener, () for "any", None for "no overlap"."""
    if not route:
        return (listener,) if listener else ()
    if listener is None:
        return route
    out = []
    for name in route:
        if _covers(listener, name):
            out.append(name)
        elif _covers(name, listener):
            out.append(listener)
    return tuple(dict.fromkeys(out)) or None


def _covers(pattern: str, name: str) -> bool:
    """Whether every host ``name`` can match is matched by ``pattern``."""
    if pattern == name:
        return True
    if not pattern.startswith("*."):
        return False
    if name.startswith("*."):
        return name[1:].endswith(pattern[1:]) and len(name) > len(pattern)
    return hostname_matches(pattern, name)


def specificity(pattern: str | None) -> tuple[int, int]:
    """Sort key: smaller is more specific (exact, then longer wildcards, then None)."""
    if pattern is None:
        return (2, 0)
    if pattern.startswith("*."):
        return (1, -len(pattern))
    return (0, -len(pattern))
