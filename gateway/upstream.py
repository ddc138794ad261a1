"""Upstream connections: the pooled ClientSession and the one place aiohttp client
exceptions become Sluice's upstream errors.

    SluiceError
    └── UpstreamError
        ├── UpstreamConnectError   could not connect                      → 502
        ├── UpstreamResetError     connection dropped before the response → 503
        └── UpstreamTimeoutError   a timeout expired                      → 504
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp

from routing.errors import SluiceError

__all__ = [
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamResetError",
    "UpstreamTimeoutError",
    "make_session",
    "map_exceptions",
]

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_POOL_SIZE = 1024
# Below uvicorn's 5 s default (vLLM, SGLang), so a pooled connection is dropped by us before
# the server closes it under our feet.
KEEPALIVE_TIMEOUT_S = 4.0


class UpstreamError(SluiceError):
    code = "upstream_error"


class UpstreamConnectError(UpstreamError):
    code = "upstream_connect_error"


class UpstreamResetError(UpstreamError):
    code = "upstream_reset"


class UpstreamTimeoutError(UpstreamError):
    code = "upstream_timeout"


@contextmanager
def map_exceptions(target: str) -> Iterator[None]:
    """Translate aiohttp client exceptions raised inside into ``UpstreamError``s; one caused
    by the client's own request body (too large, too slow: the body is read while it is sent)
    stays the client's error, so the client gets its 413 or 408, not a 503."""
    try:
        yield
    except (aiohttp.ClientError, ConnectionError) as exc:
        own = _sluice_cause(exc)
        if own is not None:
            raise own from None
        raise _upstream_error(exc, target) from exc
    except TimeoutError as exc:
        raise UpstreamTimeoutError(f"{target} timed out") from exc


def _sluice_cause(exc: BaseException) -> SluiceError | None:
    """A Sluice error (not an upstream one) among the causes of ``exc``: the request body's
    reader raised it inside aiohttp's body writer, which reports it as a connection error."""
    seen: set[int] = set()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, SluiceError) and not isinstance(cause, UpstreamError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _upstream_error(exc: BaseException, target: str) -> UpstreamError:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamConnectError(f"cannot connect to {target}: {exc.os_error}")
    if isinstance(exc, TimeoutError):  # aiohttp.ServerTimeoutError
        return UpstreamTimeoutError(f"{target} timed out")
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
        return UpstreamResetError(f"{target} closed the connection: {exc}")
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamResetError(f"{target}: {type(exc).__name__}: {exc}")
    return UpstreamResetError(f"{target}: {exc}")


def make_session(*, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> aiohttp.ClientSession:
    """One pooled keep-alive session for every upstream. Bodies pass through untouched
    (no decompression), no cookies are kept, and no proxy environment is read."""
    connector = aiohttp.TCPConnector(
        limit=DEFAULT_POOL_SIZE,
        limit_per_host=0,
        keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        enable_cleanup_closed=False,
        ttl_dns_cache=10,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout_s),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        trust_env=False,
    )
    # aiohttp silently re-sends an idempotent request once when a pooled connection drops.
    # A route's retry policy must count every attempt the backend sees, so Sluice does all
    # retrying itself (gateway/forward.py).
    session._retry_connection = False
    return session
