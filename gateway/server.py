"""The HTTP/1.1 server under every listener: aiohttp's low-level server with Sluice's answers
to bad input (JSON bodies, 431 for oversized headers, 400 for malformed requests, a header
read deadline against slow clients). Every such answer closes the connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from gateway.context import Limits
from gateway.errors import error_response

__all__ = ["GatewayServer", "send_continue"]

# request key: bytes of interim (1xx) answers written before the response itself
_INTERIM_BYTES = web.RequestKey("sluice.interim_bytes", int)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _raw_answer(status: str, code: str, message: str, *, retry_after: bool = False) -> bytes:
    """A whole JSON error answer as bytes, for the moments no request object exists yet (a
    head too slow or too large, a connection over the cap); the connection closes after it."""
    kind = "server_error" if status.startswith("5") else "invalid_request_error"
    body = json.dumps({"error": {"code": code, "message": message, "type": kind}}).encode()
    head = f"HTTP/1.1 {status}\r\nServer: sluice\r\n"
    if retry_after:
        head += "Retry-After: 1\r\n"
    head += "Content-Type: application/json\r\nConnection: close\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


_TIMEOUT_RESPONSE = _raw_answer(
    "408 Request Timeout", "header_timeout", "request headers arrived too slowly"
)
_HEAD_TOO_LARGE_RESPONSE = _raw_answer(
    "431 Request Header Fields Too Large", "headers_too_large", "the request head is too large"
)
_TOO_MANY_CONNECTIONS_RESPONSE = _raw_answer(
    "503 Service Unavailable",
    "too_many_connections",
    "too many open connections; retry",
    retry_after=True,
)


async def send_continue(request: web.BaseRequest) -> None:
    """``100 Continue`` for a client that asked for it (``Expect: 100-continue``) before its
    body is read; never to an HTTP/1.0 client (RFC 9110 §15.2). An error after it is still
    answered (``handle_error`` discounts it)."""
    if request.version < (1, 1) or request.get(_INTERIM_BYTES):
        return
    request[_INTERIM_BYTES] = len(_CONTINUE)
    await request.writer.write(_CONTINUE)


class GatewayProtocol(RequestHandler):
    """One client connection. Adds a deadline for request heads and JSON error answers."""

    def __init__(self, manager: GatewayServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gateway_server = manager
        self._header_timeout_s = manager.limits.header_read_timeout_s
        limits = manager.limits
        self._max_head_bytes = limits.max_request_line_bytes + limits.max_header_bytes
        self._head_bytes = 0  # bytes of a request head that has not ended yet
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._gateway_server
        server.open_connections += 1
        if server.open_connections > server.limits.max_connections:
            # over the listener's cap: a clear answer and the connection closed, so memory
            # and file descriptors stay bounded however many clients connect
            cast(asyncio.WriteTransport, transport).write(_TOO_MANY_CONNECTIONS_RESPONSE)
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._gateway_server.open_connections -= 1
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # waiting for a request: these bytes are (part of) a head, not a body
        idle = self._waiter is not None and not self._waiter.done() and not self._messages
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued:
            self._head_bytes = 0
            self._fail_body_on_error()
        elif idle:
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head_bytes and self.transport is not None:
                # refused before all of it is held: each line may be within its own limit
                self._disarm()
                self.transport.write(_HEAD_TOO_LARGE_RESPONSE)
                self.transport.close()
                return
        if self._messages or self._current_request is not None:
            self._disarm()  # a whole request head arrived
        elif self._head_deadline is None:
            self._arm()  # bytes of a new request head on a kept-alive connection

    def _fail_body_on_error(self) -> None:
        """Malformed bytes in a body the parser had already started (bad chunk framing sent
        after the head): the parser queues an error, but the request being read would wait for
        the rest of its body until the body timeout. Its body fails now instead (400)."""
        error = getattr(self._messages[-1][0], "exc", None)
        if not isinstance(error, HttpProcessingError):
            return
        if self._current_request is not None:
            self._current_request.content.set_exception(error)
        elif len(self._messages) > 1:  # the request whose body it is has not started yet
            self._messages[-2][1].set_exception(error)

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._head_deadline = loop.call_later(self._header_timeout_s, self._on_head_timeout)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _on_head_timeout(self) -> None:
        self._head_deadline = None
        if self._messages or self._current_request is not None or self.transport is None:
            return
        self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > request.get(_INTERIM_BYTES, 0):
            raise ConnectionError("response already started; cannot send an error")
        if isinstance(exc, LineTooLong):
            resp = error_response(431, "headers_too_large", str(exc.message), close=True)
        elif isinstance(exc, BadHttpMessage):
            text = str(exc.message)
            if "Too many headers" in text:
                resp = error_response(431, "too_many_headers", text, close=True)
            else:
                resp = error_response(400, "bad_request", f"malformed request: {text}", close=True)
        elif status == 500:
            self.log_exception("unhandled error", exc_info=exc)
            resp = error_response(500, "internal_error", "internal error", close=True)
        else:
            resp = error_response(status, "bad_request", message or "bad request", close=True)
        return resp


class GatewayServer(web.Server):
    """``web.Server`` that makes ``GatewayProtocol`` connections."""

    def __init__(self, handler: Any, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(
            handler,
            handler_cancellation=True,  # a client that leaves cancels its upstream request
            keepalive_timeout=limits.keepalive_timeout_s,
            max_line_size=limits.max_request_line_bytes,
            max_field_size=limits.max_header_field_bytes,
            max_headers=limits.max_headers,
            auto_decompress=False,  # bodies pass through byte for byte
            **kwargs,
        )
        self.limits = limits
        self.open_connections = 0  # client connections of this listener now

    def __call__(self) -> RequestHandler:
        return GatewayProtocol(self, loop=self._loop, **self._kwargs)
