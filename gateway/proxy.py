"""The data-plane handler: match a request to a rule, apply the rule's filters, choose a
backend by weight and forward. Decisions come from ``routing``; this module performs them.

Order, per the Gateway API: listener → route match → CORS preflight → redirect → header
and URL filters → mirrors → weighted backendRef (→ its own filters) → endpoint → forward.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict, MultiDict
from yarl import URL

from gateway.context import Limits, ProxyContext
from gateway.errors import RequestError, response_for
from gateway.forward import Body, RequestPlan, forward
from gateway.headers import SERVER, forwarded_request_headers
from gateway.inference import VARIANT_HEADER, off_loop, serve_pool
from gateway.metrics import code_class
from gateway.mirror import send_mirrors, send_shadow
from gateway.rollouts import Assignment, client_uses_https, sticky_token
from gateway.server import send_continue
from gateway.tls import handshake_of
from gateway.usage import CLIENT_GONE, StreamTap
from gateway.websocket import is_websocket_upgrade, proxy_websocket
from routing import model as m
from routing.backends import InvalidTarget, PoolTarget
from routing.errors import AdmissionRejectedError, InvalidBackendError, SluiceError
from routing.hostnames import host_of
from routing.matching import RequestFacts, is_misdirected, match_request
from routing.openai import model_of
from routing.rewrite import (
    apply_header_modifier,
    cors_preflight,
    cors_response_headers,
    redirect_location,
    rewrite_path,
)
from routing.rolloutconfig import Shadow
from routing.splits import choose_weighted
from routing.table import CompiledRule, FilterSet, RoutingTable, WeightedBackend

__all__ = ["Handler", "make_handler"]

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Record:
    """What the request ended up as, for metrics."""

    route: str = ""
    backend: str = ""
    variant: str = ""
    body_bytes: int = 0  # of its body held in memory (ProxyContext.buffered_body_bytes)


def make_handler(ctx: ProxyContext, port: int) -> Handler:
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started = loop.time()
        record = Record()
        ctx.metrics.in_flight.inc()
        status = 500
        try:
            _check_head(ctx.limits, request)
            if not request.raw_path.startswith("/") and "://" in request.raw_path:
                request = _origin_form(request)
            response = await _route(ctx, port, request, record)
            status = response.status
            if not response.prepared:  # Sluice's own answer (a proxied one is sent already)
                response.headers.setdefault("Server", SERVER)
            return response
        except SluiceError as exc:
            response = response_for(exc)
            status = response.status
            return response
        except asyncio.CancelledError:
            status = CLIENT_GONE  # the client left: not the gateway's error
            raise
        finally:
            ctx.buffered_body_bytes -= record.body_bytes
            ctx.metrics.in_flight.dec()
            ctx.metrics.requests.labels(record.route, record.backend, code_class(status)).inc()
            ctx.metrics.request_duration.labels(record.route).observe(loop.time() - started)

    return handle


def _check_head(limits: Limits, request: web.BaseRequest) -> None:
    """431 for header lines larger in all than ``max_header_bytes`` (each line within its
    own limit, but many of them): such a request is not forwarded."""
    size = sum(len(name) + len(value) + 4 for name, value in request.raw_headers)
    if size > limits.max_header_bytes:
        raise RequestError(
            431, "headers_too_large", f"the request headers exceed {limits.max_header_bytes} bytes"
        )


def _origin_form(request: web.BaseRequest) -> web.BaseRequest:
    """A request whose target is in absolute form (``GET http://host:port/path``), which a
    server must accept (RFC 9112 §3.2.2), as the same request in origin form: the target's
    path and query, and its authority as the Host (the Host header is then ignored)."""
    rest = request.raw_path.split("://", 1)[1]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, target = rest[:cut], rest[cut:]
    if not target.startswith("/"):
        target = "/" + target
    headers = CIMultiDict(request.headers)
    headers["Host"] = authority
    return request.clone(rel_url=URL(target, encoded=True), headers=headers)


def _check_server_name(table: RoutingTable, port: int, request: web.BaseRequest, host: str) -> None:
    """A request whose Host another listener serves than the one its connection's handshake
    chose (whose certificate the client checked) is misdirected: 421, and the client opens
    a connection for that host."""
    port_table = table.ports.get(port)
    transport = request.transport
    if port_table is None or transport is None:
        return
    sni, listener = handshake_of(transport.get_extra_info("ssl_object"))
    if is_misdirected(port_table, listener, host):
        named = f"for {sni}" if sni else "without a server name (SNI)"
        raise RequestError(
            421, "misdirected_request", f"this connection was made {named}; open one for {host}"
        )


def _facts(request: web.BaseRequest) -> RequestFacts:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    query: dict[str, str] = {}
    for name, value in request.query.items():
        query.setdefault(name, value)
    return RequestFacts(
        method=request.method,
        path=request.raw_path.split("?", 1)[0],
        query=query,
        headers=headers,
        host=host_of(request.headers.get("Host", "")),
    )


async def _route(
    ctx: ProxyContext, port: int, request: web.BaseRequest, record: Record
) -> web.StreamResponse:
    table = ctx.holder.table  # read once: the request finishes on this table
    facts = _facts(request)
    if request.secure:
        _check_server_name(table, port, request, facts.host)
    entry = match_request(table, port, facts)
    rule = entry.rule
    record.route = rule.route
    filters = rule.filters
    if filters.unsupported:
        raise InvalidBackendError(filters.unsupported)
    origin = request.headers.get("Origin")
    if filters.cors is not None and origin and _is_preflight(request):
        return _preflight(filters.cors, origin, request)
    prefix = entry.path if entry.path_kind is m.PathKind.PREFIX else None
    if filters.redirect is not None:
        return _redirect(filters.redirect, request, port, prefix)
    path, _, query = request.raw_path.partition("?")
    headers = forwarded_request_headers(
        request.headers, client_ip=request.remote, scheme=request.scheme
    )
    plan = _apply(
        filters, RequestPlan(method=request.method, path=path, query=query, headers=headers), prefix
    )
    assigned = _assign(ctx, table, rule, request)
    chosen: WeightedBackend | None
    if assigned is not None:
        chosen = rule.backends[rule.backend_names.index(assigned.variant)]
    else:
        chosen = choose_weighted(rule.backends, rule.cumulative, ctx.rng)
    if chosen is None:
        raise InvalidBackendError("the matched rule has no backend with a weight above 0")
    record.backend = chosen.target.name
    if assigned is not None:
        record.variant = assigned.variant
    elif sum(1 for b in rule.backends if b.weight > 0) > 1:  # a split: name its variant
        record.variant = rule.backend_names[rule.backends.index(chosen)]
    if isinstance(chosen.target, InvalidTarget):
        raise InvalidBackendError(f"backend {chosen.target.name}: {chosen.target.reason}")
    if chosen.filters.unsupported:
        raise InvalidBackendError(chosen.filters.unsupported)
    if chosen.filters.redirect is not None:
        return _redirect(chosen.filters.redirect, request, port, prefix)
    plan = _apply(chosen.filters, plan, prefix)
    if is_websocket_upgrade(request):
        return await proxy_websocket(ctx, request, plan, chosen.target.ready_endpoints)
    mirrors = filters.mirrors + chosen.filters.mirrors
    shadow = _route_shadow(assigned, rule)
    is_pool = isinstance(chosen.target, PoolTarget)
    retried = rule.retry is not None and rule.retry.attempts > 0
    # a copy needs the whole body, and a split variant's metrics its model: buffered, not
    # streamed through
    buffer = is_pool or bool(mirrors) or shadow is not None or retried or bool(record.variant)
    body = await _body(ctx, request, buffer=buffer, record=record)
    copied = body if isinstance(body, bytes) else None
    if mirrors:
        send_mirrors(ctx, mirrors, plan, copied)
    if shadow is not None:
        target = rule.backends[rule.backend_names.index(shadow.target)].target
        send_shadow(ctx, target, plan, copied, shadow)
    hook = _response_hook(
        filters, chosen.filters, origin, record.variant, assigned.set_cookie if assigned else None
    )
    if isinstance(chosen.target, PoolTarget):
        return await serve_pool(
            ctx,
            request,
            table=table,
            rule=rule,
            target=chosen.target,
            plan=plan,
            body=body if isinstance(body, bytes) else None,
            on_response=hook,
            assigned=assigned,
        )
    tap = await _variant_tap(ctx, record.variant, copied, assigned)
    try:
        response = await forward(
            ctx,
            request,
            plan=plan,
            endpoints=chosen.target.ready_endpoints,
            body=body,
            timeouts=rule.timeouts,
            retry=rule.retry,
            on_response=hook,
            route=rule.route,
            tap=tap,
        )
    except SluiceError as exc:
        if tap is not None:
            tap.finish(response_for(exc).status)
        else:
            _observe(assigned, response_for(exc).status)
        raise
    if tap is None:  # a tap reports the outcome itself when the response ends
        _observe(assigned, response.status)
    return response


async def _variant_tap(
    ctx: ProxyContext, variant: str, body: bytes | None, assigned: Assignment | None
) -> StreamTap | None:
    """For an OpenAI request (a JSON body naming a ``model``) to one variant of a split
    between Services: a tap recording the per-variant metrics, and the TTFT and TPOT that a
    Rollout's analysis compares, as for pools. Anything else: None (status only)."""
    if not variant or not body:
        return None
    model = await off_loop(len(body), model_of, body)
    if model is None:
        return None
    rollout = assigned.rollout if assigned is not None else None
    return StreamTap(ctx.metrics, model=model, target=model, variant=variant, rollout=rollout)


def _route_shadow(assigned: Assignment | None, rule: CompiledRule) -> Shadow | None:
    """The shadow copy a route's Rollout asks for, if this request gets one: only requests
    the baseline serves are copied (the candidate already serves its own). A model rewrite's
    Rollout copies inside the pool instead (``gateway.inference``)."""
    if assigned is None or assigned.spec.shadow is None:
        return None
    shadow = assigned.spec.shadow
    if shadow.target == assigned.variant or shadow.target not in rule.backend_names:
        return None
    return shadow


def _assign(
    ctx: ProxyContext, table: RoutingTable, rule: CompiledRule, request: web.BaseRequest
) -> Assignment | None:
    """A Rollout's sticky choice among the rule's backendRefs, if one drives this rule."""
    if not table.rollouts:
        return None
    variants = tuple(zip(rule.backend_names, (b.weight for b in rule.backends), strict=True))
    return ctx.rollouts.assign(
        table,
        (rule.route, rule.index),
        variants,
        request.headers,
        request.cookies,
        sticky_token(request, ctx.rng),
        secure=client_uses_https(request),
    )


def _observe(assigned: Assignment | None, status: int) -> None:
    if assigned is not None and status < 600:
        now = asyncio.get_running_loop().time()
        assigned.rollout.observe(now, assigned.variant, status < 500, None, None)


def _apply(filters: FilterSet, plan: RequestPlan, prefix: str | None) -> RequestPlan:
    headers = plan.headers
    if filters.request_headers is not None:
        headers = apply_header_modifier(headers, filters.request_headers)
    path = plan.path
    rewrite = filters.rewrite
    if rewrite is not None:
        if rewrite.path is not None:
            path = rewrite_path(rewrite.path, prefix, path)
        if rewrite.hostname is not None:
            headers = [(k, v) for k, v in headers if k.lower() != "host"]
            headers.append(("Host", rewrite.hostname))
    return RequestPlan(method=plan.method, path=path, query=plan.query, headers=headers)


def _response_hook(
    rule_filters: FilterSet,
    backend_filters: FilterSet,
    origin: str | None,
    variant: str = "",
    set_cookie: str | None = None,
) -> Callable[[web.StreamResponse], None]:
    def hook(response: web.StreamResponse) -> None:
        if variant:
            response.headers[VARIANT_HEADER] = variant
        if set_cookie is not None:  # the Rollout's sticky cookie, for a client without one
            response.headers.add("Set-Cookie", set_cookie)
        for mod in (rule_filters.response_headers, backend_filters.response_headers):
            if mod is not None:
                items = apply_header_modifier(response.headers.items(), mod)
                response.headers.clear()
                response.headers.extend(MultiDict(items))
        if rule_filters.cors is not None and origin:
            for name, value in cors_response_headers(rule_filters.cors, origin):
                response.headers[name] = value

    return hook


def _is_preflight(request: web.BaseRequest) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _preflight(policy: m.CorsPolicy, origin: str, request: web.BaseRequest) -> web.Response:
    requested = request.headers.get("Access-Control-Request-Headers", "")
    answer = cors_preflight(
        policy,
        origin,
        request.headers.get("Access-Control-Request-Method", ""),
        [h.strip() for h in requested.split(",") if h.strip()],
    )
    return web.Response(status=204, headers=MultiDict(answer))


def _redirect(
    redirect: m.RequestRedirect, request: web.BaseRequest, port: int, prefix: str | None
) -> web.Response:
    path, _, query = request.raw_path.partition("?")
    location = redirect_location(
        redirect,
        scheme=request.scheme,
        host=host_of(request.headers.get("Host", "")) or request.host,
        listener_port=port,
        path=path,
        query=query,
        matched_prefix=prefix,
    )
    return web.Response(status=redirect.status_code, headers={"Location": location})


async def _body(
    ctx: ProxyContext, request: web.BaseRequest, *, buffer: bool, record: Record
) -> Body:
    """The request body: None, all of it (when it may be sent twice or must be read), or a
    streaming reader. A body held in memory counts toward ``max_buffered_body_bytes`` until
    the request ends (``record.body_bytes``); past it, 503 with Retry-After."""
    if not request.body_exists:
        return None
    limit = ctx.limits.max_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise RequestError(413, "request_too_large", f"the body exceeds {limit} bytes")
    if buffer and declared is not None:
        _hold(ctx, record, declared)  # refused before a byte of it is read
    if request.headers.get("Expect", "").lower() == "100-continue":
        await send_continue(request)
    if not buffer:
        return lambda: _read_body(ctx, request)
    chunks = []
    async for chunk in _read_body(ctx, request):
        chunks.append(chunk)
        if declared is None:
            _hold(ctx, record, len(chunk))
    return b"".join(chunks)


def _hold(ctx: ProxyContext, record: Record, size: int) -> None:
    if ctx.buffered_body_bytes + size > ctx.limits.max_buffered_body_bytes:
        raise AdmissionRejectedError(
            "too many request bodies are held in memory; retry shortly",
            reason="bodies_in_memory_full",
            status=503,
            retry_after_s=1.0,
        )
    ctx.buffered_body_bytes += size
    record.body_bytes += size


async def _read_body(ctx: ProxyContext, request: web.BaseRequest) -> AsyncIterator[bytes]:
    limit, total = ctx.limits.max_body_bytes, 0
    loop = asyncio.get_running_loop()
    whole_by = loop.time() + ctx.limits.body_total_timeout_s
    while True:
        gap_by = loop.time() + ctx.limits.body_read_timeout_s
        try:
            async with asyncio.timeout_at(min(gap_by, whole_by)):
                chunk = await request.content.readany()
        except TimeoutError as exc:
            raise RequestError(408, "body_timeout", "the request body arrived too slowly") from exc
        except HttpProcessingError as exc:  # bad chunk framing (gateway.server fails the body)
            raise RequestError(
                400, "bad_request", f"malformed request body: {exc.message}"
            ) from exc
        if not chunk:
            return
        total += len(chunk)
        if total > limit:
            raise RequestError(413, "request_too_large", f"the body exceeds {limit} bytes")
        yield chunk
