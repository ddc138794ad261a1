"""Send one request upstream with the rule's retries and timeouts, and stream the answer back.

Rules: the response streams chunk by chunk as the upstream writes it (an SSE event is never
held back); once its first byte is sent the status cannot change, so a later failure aborts
the client connection and counts ``sluice_stream_aborts_total{reason}``. A client that goes
away cancels this task, and the ``finally`` blocks close the upstream connection at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.context import ProxyContext
from gateway.headers import SERVER, end_to_end
from gateway.upstream import (
    UpstreamError,
    UpstreamResetError,
    UpstreamTimeoutError,
    map_exceptions,
)
from gateway.usage import StreamTap
from routing.backends import Endpoint
from routing.errors import NoEligibleEndpointError
from routing.model import RetryPolicy, Timeouts
from routing.splits import choose_endpoint

__all__ = ["Body", "RequestPlan", "forward"]

Body = bytes | Callable[[], AsyncIterator[bytes]] | None
ResponseHook = Callable[[web.StreamResponse], None]


@dataclass(slots=True, kw_only=True)
class RequestPlan:
    """The request as it will be sent upstream, after the route's filters."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]


@dataclass(slots=True, kw_only=True)
class Attempt:
    endpoint: Endpoint
    response: aiohttp.ClientResponse


async def forward(
    ctx: ProxyContext,
    request: web.BaseRequest,
    *,
    plan: RequestPlan,
    endpoints: tuple[Endpoint, ...],
    body: Body,
    timeouts: Timeouts,
    retry: RetryPolicy | None,
    on_response: ResponseHook,
    route: str,
    tap: StreamTap | None = None,
) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    request_deadline = _deadline(loop.time(), timeouts.request_s)
    tries = 1 + (retry.attempts if retry is not None else 0)
    for attempt_no in range(tries):
        last = attempt_no == tries - 1
        deadline = _earliest(request_deadline, _deadline(loop.time(), timeouts.backend_request_s))
        endpoint = choose_endpoint(endpoints, ctx.in_flight, ctx.rng)
        if endpoint is None:
            raise NoEligibleEndpointError("the backend has no ready endpoint")
        ctx.in_flight[endpoint.key] = ctx.in_flight.get(endpoint.key, 0) + 1
        try:
            upstream = await _send(ctx, plan, endpoint, body, deadline)
            if not last and retry is not None and upstream.status in retry.codes:
                upstream.release()
            else:
                return await _stream_back(ctx, request, upstream, deadline, on_response, tap)
        except UpstreamError as exc:
            ctx.metrics.upstream_errors.labels(endpoint.key, exc.code).inc()
            out_of_time = request_deadline is not None and loop.time() >= request_deadline
            if last or out_of_time or retry is None:
                raise
        finally:
            ctx.in_flight[endpoint.key] -= 1
        ctx.metrics.retries.labels(route).inc()
        await _backoff(ctx, attempt_no, retry, request_deadline)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _deadline(now: float, seconds: float | None) -> float | None:
    # A timeout of 0 disables it (Gateway API: "zero means no timeout").
    return now + seconds if seconds else None


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


async def _backoff(
    ctx: ProxyContext, attempt_no: int, retry: RetryPolicy | None, deadline: float | None
) -> None:
    minimum = retry.backoff_s if retry is not None else None
    if minimum is not None:
        # the route's backoff is the least wait between attempts (Gateway API): doubled per
        # attempt, jittered upwards only, capped at 10× the minimum
        delay = min(minimum * (2**attempt_no), 10 * minimum) * (1 + ctx.rng.random() / 2)
    else:
        base = ctx.limits.retry_backoff_base_s
        delay = min(base * (2**attempt_no), ctx.limits.retry_backoff_max_s)
        delay *= 0.5 + ctx.rng.random() / 2  # jitter, so retries of a burst do not align
    loop = asyncio.get_running_loop()
    if deadline is not None:
        delay = min(delay, max(0.0, deadline - loop.time()))
    if delay > 0:
        await asyncio.sleep(delay)


async def _send(
    ctx: ProxyContext,
    plan: RequestPlan,
    endpoint: Endpoint,
    body: Body,
    deadline: float | None,
) -> aiohttp.ClientResponse:
    url = URL.build(
        scheme="http",
        host=endpoint.address,
        port=endpoint.port,
        path=plan.path,
        query_string=plan.query,
        encoded=True,
    )
    data = body() if callable(body) else body
    with map_exceptions(endpoint.key):
        try:
            async with asyncio.timeout_at(deadline):
                return await ctx.session.request(
                    plan.method,
                    url,
                    headers=CIMultiDict(plan.headers),
                    data=data,
                    allow_redirects=False,
                    compress=None,
                )
        except TimeoutError as exc:
            raise UpstreamTimeoutError(f"{endpoint.key} did not answer in time") from exc


async def _stream_back(
    ctx: ProxyContext,
    request: web.BaseRequest,
    upstream: aiohttp.ClientResponse,
    deadline: float | None,
    on_response: ResponseHook,
    tap: StreamTap | None = None,
) -> web.StreamResponse:
    complete = False
    cut: str | None = "client_disconnect"  # if cancelled before the pump returns: the client left
    try:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in end_to_end(upstream.headers):
            response.headers.add(name, value)
        response.headers.setdefault("Server", SERVER)
        on_response(response)
        if tap is not None:
            tap.on_headers(upstream.headers.get("Content-Type", ""))
        if request.method == "HEAD" or upstream.status in (204, 304):
            await response.prepare(request)
            complete = True
            return response
        await response.prepare(request)
        try:
            cut = await _pump(ctx, request, upstream, response, deadline, tap)
        except asyncio.CancelledError:  # the client left mid-stream (its handler cancelled)
            ctx.metrics.stream_aborts.labels("client_disconnect").inc()
            raise
        complete = cut is None
        if complete:
            await response.write_eof()
        return response
    finally:
        if tap is not None:
            # a cut stream: 499 when the client left (nginx's code), 599 when the upstream
            # or a timeout cut it (the variant's fault)
            tap.finish(upstream.status if complete else 499 if cut == "client_disconnect" else 599)
        if complete:
            upstream.release()
        else:
            upstream.close()


async def _pump(
    ctx: ProxyContext,
    request: web.BaseRequest,
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    deadline: float | None,
    tap: StreamTap | None = None,
) -> str | None:
    """Copy the body chunk by chunk; None when complete, else why it was cut (and the client
    connection aborted)."""
    reason = None
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                with map_exceptions("upstream"):
                    chunk = await upstream.content.readany()
                if not chunk:
                    return None
                await response.write(chunk)
                if tap is not None:
                    tap.on_chunk(chunk)
    except TimeoutError:
        reason = "timeout"
    except UpstreamResetError:
        reason = "upstream_reset"
    except ConnectionResetError:
        reason = "client_disconnect"
    ctx.metrics.stream_aborts.labels(reason).inc()
    if request.transport is not None:
        request.transport.abort()
    return reason
