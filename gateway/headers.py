"""Header hygiene for a proxy (RFC 9110 §7.6.1): hop-by-hop headers are not forwarded,
including every header the Connection header names; X-Forwarded-* are set."""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDictProxy

__all__ = ["HOP_BY_HOP", "SERVER", "end_to_end", "forwarded_request_headers"]

# The Server header of Sluice's own answers, and of proxied ones whose backend sent none:
# no version, no language or library (aiohttp would say "Python/3.11 aiohttp/3.x", which
# security scanners report as version disclosure). A backend's own Server passes through.
SERVER = "sluice"

HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "http2-settings",
    }
)


def end_to_end(headers: CIMultiDictProxy[str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers a proxy may forward: hop-by-hop ones and those listed in Connection dropped."""
    items = list(headers.items()) if isinstance(headers, CIMultiDictProxy) else list(headers)
    named = {
        token.strip().lower()
        for name, value in items
        if name.lower() == "connection"
        for token in value.split(",")
    }
    return [(k, v) for k, v in items if (lk := k.lower()) not in HOP_BY_HOP and lk not in named]


def forwarded_request_headers(
    headers: CIMultiDictProxy[str], *, client_ip: str | None, scheme: str
) -> list[tuple[str, str]]:
    """End-to-end request headers plus X-Forwarded-For (appended) and X-Forwarded-Proto."""
    out = [(k, v) for k, v in end_to_end(headers) if k.lower() != "x-forwarded-proto"]
    if client_ip:
        prior = [v for k, v in out if k.lower() == "x-forwarded-for"]
        out = [(k, v) for k, v in out if k.lower() != "x-forwarded-for"]
        out.append(("X-Forwarded-For", ", ".join([*prior, client_ip])))
    out.append(("X-Forwarded-Proto", scheme))
    return out
