"""WebSocket upgrade pass-through: the upstream handshake first (so a refusal is still an
HTTP error), then frames are relayed both ways until either side closes."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.context import ProxyContext
from gateway.errors import error_response
from gateway.forward import RequestPlan
from gateway.headers import SERVER
from gateway.upstream import map_exceptions
from routing.backends import Endpoint
from routing.errors import NoEligibleEndpointError
from routing.splits import choose_endpoint

__all__ = ["is_websocket_upgrade", "proxy_websocket"]

_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "host",
    }
)


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    return (
        request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


async def proxy_websocket(
    ctx: ProxyContext,
    request: web.BaseRequest,
    plan: RequestPlan,
    endpoints: tuple[Endpoint, ...],
) -> web.StreamResponse:
    endpoint = choose_endpoint(endpoints, ctx.in_flight, ctx.rng)
    if endpoint is None:
        raise NoEligibleEndpointError("the backend has no ready endpoint")
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    url = URL.build(
        scheme="http",
        host=endpoint.address,
        port=endpoint.port,
        path=plan.path,
        query_string=plan.query,
        encoded=True,
    )
    headers = CIMultiDict((k, v) for k, v in plan.headers if k.lower() not in _HANDSHAKE)
    host = next((v for k, v in plan.headers if k.lower() == "host"), None)
    if host:
        headers["Host"] = host
    with map_exceptions(endpoint.key):
        try:
            upstream = await ctx.session.ws_connect(url, headers=headers, protocols=protocols)
        except aiohttp.WSServerHandshakeError as exc:  # an answer, not a failure: pass it on
            status = exc.status if 400 <= exc.status < 600 else 502
            message = f"{endpoint.key} refused the WebSocket upgrade: {exc.status} {exc.message}"
            return error_response(status, "websocket_refused", message)
    try:
        client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else ())
        client.headers["Server"] = SERVER
        await client.prepare(request)
        await asyncio.gather(_relay(client, upstream), _relay(upstream, client))
        return client
    finally:
        await upstream.close()


async def _relay(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for msg in source:
        if msg.type is aiohttp.WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type is aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        else:
            break
    await sink.close()
