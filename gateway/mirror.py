"""RequestMirror: send a copy of the request to another backend and discard the answer.

The primary path never waits for a mirror: copies run as background tasks, bounded in number
(``Limits.mirror_max_in_flight``) and time; a copy that does not fit is dropped and counted.
A fraction below 1 samples requests with the gateway's RNG.
"""

from __future__ import annotations

import asyncio

from multidict import CIMultiDict
from yarl import URL

from gateway.context import ProxyContext
from gateway.forward import RequestPlan
from gateway.upstream import UpstreamError, map_exceptions
from routing.backends import InvalidTarget, Target
from routing.rolloutconfig import Shadow
from routing.splits import choose_endpoint
from routing.table import MirrorTarget

__all__ = ["send_mirrors", "send_shadow"]


def send_mirrors(
    ctx: ProxyContext, mirrors: tuple[MirrorTarget, ...], plan: RequestPlan, body: bytes | None
) -> None:
    for mirror in mirrors:
        sampled_out = ctx.rng.randrange(mirror.denominator) >= mirror.numerator
        if mirror.numerator < mirror.denominator and sampled_out:
            continue
        if isinstance(mirror.target, InvalidTarget):
            continue
        endpoint = choose_endpoint(mirror.target.ready_endpoints, ctx.in_flight, ctx.rng)
        if endpoint is None or ctx.mirrors_in_flight >= ctx.limits.mirror_max_in_flight:
            ctx.metrics.mirrors.labels("dropped").inc()
            continue
        url = URL.build(
            scheme="http",
            host=endpoint.address,
            port=endpoint.port,
            path=plan.path,
            query_string=plan.query,
            encoded=True,
        )
        ctx.mirrors_in_flight += 1
        task = asyncio.create_task(_send(ctx, plan, url, body))
        ctx.background.add(task)
        task.add_done_callback(ctx.background.discard)


def send_shadow(
    ctx: ProxyContext,
    target: Target,
    plan: RequestPlan,
    body: bytes | None,
    shadow: Shadow,
) -> None:
    """A Rollout's shadow copy: like a mirror, but bounded by the Rollout's own in-flight and
    body-size limits and counted apart (``sluice_shadow_requests_total``); never client
    traffic, never waited for."""
    if ctx.rng.randrange(100) >= shadow.percent:
        return
    endpoints = target.ready_endpoints if not isinstance(target, InvalidTarget) else ()
    endpoint = choose_endpoint(endpoints, ctx.in_flight, ctx.rng)
    too_big = body is not None and len(body) > shadow.max_bytes
    busy = ctx.shadows_in_flight >= shadow.max_in_flight
    if endpoint is None or too_big or busy:
        ctx.metrics.shadow.labels("dropped").inc()
        return
    url = URL.build(
        scheme="http",
        host=endpoint.address,
        port=endpoint.port,
        path=plan.path,
        query_string=plan.query,
        encoded=True,
    )
    ctx.shadows_in_flight += 1
    task = asyncio.create_task(_send(ctx, plan, url, body, shadow=True))
    ctx.background.add(task)
    task.add_done_callback(ctx.background.discard)


async def _send(
    ctx: ProxyContext, plan: RequestPlan, url: URL, body: bytes | None, *, shadow: bool = False
) -> None:
    counter = ctx.metrics.shadow if shadow else ctx.metrics.mirrors
    try:
        async with asyncio.timeout(ctx.limits.mirror_timeout_s):
            with map_exceptions(str(url.origin())):
                async with ctx.session.request(
                    plan.method,
                    url,
                    headers=CIMultiDict(plan.headers),
                    data=body,
                    allow_redirects=False,
                ) as response:
                    await response.read()
        counter.labels("sent").inc()
    except (UpstreamError, TimeoutError):
        counter.labels("failed").inc()
    finally:
        if shadow:
            ctx.shadows_in_flight -= 1
        else:
            ctx.mirrors_in_flight -= 1
