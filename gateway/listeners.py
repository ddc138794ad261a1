"""The set of listening sockets, one per Gateway listener port, kept in step with the table.

Applying a new table first binds every new port; if any bind fails, the new ones are closed
again and the error is raised, so a reload either takes effect whole or not at all. Ports
that are gone stop accepting; their open connections finish their requests. With
``skip_unbindable`` (a config from a cluster, where one Gateway with a port the pod may not
bind must not stop every other object's updates) a port that cannot be bound is left out,
named in ``unbound``, and tried again at the next apply.

An HTTPS port's socket terminates TLS (``gateway.tls.PortTLS``); its certificates follow
the table without rebinding. A port that changes between HTTP and HTTPS is closed and bound
again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from gateway.context import ProxyContext
from gateway.proxy import Handler, make_handler
from gateway.server import GatewayServer
from gateway.tls import PortTLS
from routing.table import PortTable, RoutingTable

__all__ = ["ListenerSet"]

log = logging.getLogger("sluice.listeners")


@dataclass(slots=True)
class _Bound:
    server: GatewayServer
    socket_server: asyncio.Server
    tls: PortTLS | None = None  # an HTTPS port's


class ListenerSet:
    def __init__(
        self,
        ctx: ProxyContext,
        *,
        address: str,
        handler_factory: Callable[[ProxyContext, int], Handler] = make_handler,
    ) -> None:
        self._ctx = ctx
        self._address = address
        self._factory = handler_factory
        self._bound: dict[int, _Bound] = {}
        self.unbound: dict[int, str] = {}  # port → why it could not be bound (last apply)

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(sorted(self._bound))

    async def apply(
        self, table: RoutingTable, *, skip_unbindable: bool = False
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        """Bind every port ``table`` needs; stop accepting on the ports it no longer has.

        Returns the drain of the removed ports' open connections, for the caller to run
        after it has swapped in the new table (so the new ports never serve the old one)."""
        wanted = set(table.ports)
        # a port changing protocol is closed first: its socket cannot be bound twice
        switched = {
            port: self._bound.pop(port)
            for port in sorted(wanted & set(self._bound))
            if (self._bound[port].tls is None) != (table.ports[port].protocol == "HTTP")
        }
        for b in switched.values():
            b.socket_server.close()
        new: dict[int, _Bound] = {}
        unbound: dict[int, str] = {}
        try:
            for port in sorted(wanted - set(self._bound)):
                try:
                    new[port] = await self._bind(table.ports[port])
                except OSError as exc:
                    if not skip_unbindable:
                        raise
                    unbound[port] = str(exc)
        except OSError:
            await _close_all(new.values(), grace_s=0)
            await self._restore(switched)
            raise
        self.unbound = unbound
        self._bound.update(new)
        gone = [self._bound.pop(port) for port in set(self._bound) - wanted]
        gone += switched.values()
        for port, b in self._bound.items():
            if b.tls is not None:
                b.tls.update(table.ports[port])  # from the next handshake, as the table swaps
        for b in gone:
            b.socket_server.close()
        grace = self._ctx.limits.shutdown_grace_s
        return lambda: _close_all(gone, grace_s=grace)

    async def _bind(self, port: PortTable) -> _Bound:
        server = GatewayServer(self._factory(self._ctx, port.port), limits=self._ctx.limits)
        tls = PortTLS(port) if port.protocol == "HTTPS" else None
        sock_server = await self._listen(server, port.port, tls)
        log.info("listening on %s:%d%s", self._address, port.port, " (HTTPS)" if tls else "")
        return _Bound(server=server, socket_server=sock_server, tls=tls)

    async def _listen(
        self, server: GatewayServer, port: int, tls: PortTLS | None
    ) -> asyncio.Server:
        return await asyncio.get_running_loop().create_server(
            server,
            self._address,
            port,
            reuse_address=True,
            backlog=1024,
            ssl=tls.context if tls else None,
            # a handshake is bounded like a request head
            ssl_handshake_timeout=self._ctx.limits.header_read_timeout_s if tls else None,
        )

    async def _restore(self, switched: dict[int, _Bound]) -> None:
        """A failed apply: the ports it closed to change their protocol listen again as
        before (their server, with its open connections, stays the same)."""
        for port, b in switched.items():
            try:
                b.socket_server = await self._listen(b.server, port, b.tls)
            except OSError as exc:
                log.error("port %d could not listen again: %s", port, exc)
                continue
            self._bound[port] = b

    async def close(self, grace_s: float) -> None:
        bound = list(self._bound.values())
        self._bound.clear()
        await _close_all(bound, grace_s=grace_s)


async def _close_all(bound: Iterable[_Bound], grace_s: float) -> None:
    """Stop accepting, close idle keep-alive connections at once (``pre_shutdown``), and give
    requests in flight up to ``grace_s`` to finish."""
    items = list(bound)
    for b in items:
        b.socket_server.close()
        b.server.pre_shutdown()
    for b in items:
        await b.server.shutdown(grace_s)
        await b.socket_server.wait_closed()
