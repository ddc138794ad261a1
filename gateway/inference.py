"""The InferencePool request path: read the OpenAI body, choose the target model and
priority, pick an endpoint on live signals, forward, and say which endpoint served.

The pick and the in-flight increment happen with no ``await`` between them, so a burst that
arrives between two scrapes sees each earlier pick (the hot-spot guard).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging

from aiohttp import web

from gateway.context import ProxyContext
from gateway.errors import RequestError
from gateway.forward import RequestPlan, ResponseHook, forward
from routing.admission import Ticket
from routing.backends import Endpoint, PoolTarget
from routing.candidates import select_candidates
from routing.errors import ModelNotFoundError, NoEligibleEndpointError
from routing.openai import BodyError, OpenAIRequest, parse_body, with_model
from routing.picking import NoEligibleEndpoint, PickRequest
from routing.pipeline import Profile, run_profile
from routing.plugins.registry import BUILTIN_PROFILES
from routing.pools import PoolSettings, choose_model
from routing.prefix import block_hashes
from routing.table import CompiledRule, RoutingTable

__all__ = ["SERVED_HEADER", "pick_endpoint", "serve_pool"]

log = logging.getLogger("sluice.picker")
SERVED_HEADER = "x-gateway-destination-endpoint-served"
SELECTION_HEADER = "test-epp-endpoint-selection"
OBJECTIVE_HEADER = "x-gateway-inference-objective"
SESSION_HEADER = "x-session-id"
MODEL_REWRITE_HEADER = "x-gateway-model-name-rewrite"


async def serve_pool(
    ctx: ProxyContext,
    request: web.BaseRequest,
    *,
    table: RoutingTable,
    rule: CompiledRule,
    target: PoolTarget,
    plan: RequestPlan,
    body: bytes | None,
    on_response: ResponseHook,
) -> web.StreamResponse:
    settings = table.pools[target.name]
    if request.method == "GET" and plan.path.rstrip("/") == "/v1/models":
        return _models_response(ctx, table, rule)
    parsed = _parse(body, request)
    requested = request.headers.get(MODEL_REWRITE_HEADER) or (parsed.model if parsed else None)
    choice = (
        choose_model(settings, requested, request.headers.get(OBJECTIVE_HEADER), ctx.rng)
        if requested
        else None
    )
    if choice is not None:
        served = ctx.pools.served_models(target)
        known = choice.target in served or requested in settings.rewritten_names()
        if served and not known:
            raise ModelNotFoundError(f"The model `{requested}` does not exist.")
        if parsed is not None and choice.target != parsed.model:
            body = with_model(parsed, choice.target)
            plan.headers = [(k, v) for k, v in plan.headers if k.lower() != "content-length"]
            plan.headers.append(("Content-Length", str(len(body))))
    model = choice.target if choice else ""
    priority = choice.priority if choice else 0
    loop = asyncio.get_running_loop()
    tokens = (parsed.prompt_tokens + parsed.max_tokens) if parsed else 0
    ticket = Ticket(
        id=ctx.admission.next_id(),
        priority=priority,
        tenant=_tenant(request, settings.fairness_header),
        model=model,
        cost_tokens=max(1, tokens),
        size_bytes=len(body or b""),
        deadline=loop.time() + settings.limits_for(model).queue_ttl_s,
    )
    if await ctx.admission.admit(settings, ticket):
        # it waited: the pool may have changed meanwhile (scale from zero, a reload)
        table = ctx.holder.table
        target = ctx.pools.current(target.name) or target
        settings = table.pools.get(target.name, settings)
    try:
        return await _dispatch(
            ctx, request, rule, target, settings, plan, body, parsed, model, priority, tokens,
            on_response,
        )  # fmt: skip
    finally:
        ctx.admission.release(settings, ticket)


async def _dispatch(
    ctx: ProxyContext,
    request: web.BaseRequest,
    rule: CompiledRule,
    target: PoolTarget,
    settings: PoolSettings,
    plan: RequestPlan,
    body: bytes | None,
    parsed: OpenAIRequest | None,
    model: str,
    priority: int,
    tokens: int,
    on_response: ResponseHook,
) -> web.StreamResponse:
    if (
        parsed is not None
        and settings.embeddings.enabled
        and plan.path.rstrip("/").endswith("/v1/embeddings")
    ):
        return await _embeddings(ctx, target, settings, plan, parsed, model, priority, on_response)
    endpoint = pick_endpoint(
        ctx,
        target,
        settings,
        parsed=parsed,
        model=model,
        priority=priority,
        session=request.headers.get(SESSION_HEADER),
        selection=request.headers.get(SELECTION_HEADER),
    )
    tokens = (parsed.prompt_tokens + parsed.max_tokens) if parsed else 0
    ctx.pools.in_flight_tokens[endpoint.key] = (
        ctx.pools.in_flight_tokens.get(endpoint.key, 0) + tokens
    )

    def hook(response: web.StreamResponse) -> None:
        response.headers[SERVED_HEADER] = endpoint.key
        on_response(response)

    try:
        return await forward(
            ctx,
            request,
            plan=plan,
            endpoints=(endpoint,),
            body=body,
            timeouts=rule.timeouts,
            retry=rule.retry,
            on_response=hook,
            route=rule.route,
        )
    finally:
        ctx.pools.in_flight_tokens[endpoint.key] -= tokens


async def _embeddings(
    ctx: ProxyContext,
    target: PoolTarget,
    settings: PoolSettings,
    plan: RequestPlan,
    parsed: OpenAIRequest,
    model: str,
    priority: int,
    on_response: ResponseHook,
) -> web.StreamResponse:
    """Coalesce with other embedding requests for the same model (gateway/embeddings.py);
    the batch's endpoint is picked when the batch is sent, and counted in flight."""

    def pick() -> Endpoint:
        endpoint = pick_endpoint(ctx, target, settings, parsed=parsed, model=model,
                                 priority=priority, session=None, selection=None)  # fmt: skip
        ctx.in_flight[endpoint.key] = ctx.in_flight.get(endpoint.key, 0) + 1
        return endpoint

    def release(endpoint: Endpoint) -> None:
        ctx.in_flight[endpoint.key] -= 1

    document = {**parsed.document, "model": model} if model else dict(parsed.document)
    status, payload = await ctx.embeddings.embed(
        key=(target.name, model),
        settings=settings.embeddings,
        document=document,
        headers=plan.headers,
        path=plan.path,
        pick=pick,
        release=release,
    )
    response = web.Response(
        status=status, body=json.dumps(payload).encode(), content_type="application/json"
    )
    on_response(response)
    return response


def _tenant(request: web.BaseRequest, header: str) -> str:
    """The fairness key: the fairness header, else a digest of the API key, else one
    shared tenant."""
    value = request.headers.get(header)
    if value:
        return value
    auth = request.headers.get("Authorization", "")
    if auth:
        return "key:" + hashlib.blake2b(auth.encode(), digest_size=8).hexdigest()
    return "default"


def _parse(body: bytes | None, request: web.BaseRequest) -> OpenAIRequest | None:
    if not body or request.method != "POST":
        return None
    try:
        return parse_body(body)
    except BodyError as exc:
        raise RequestError(400, "invalid_request_body", str(exc)) from exc


def pick_endpoint(
    ctx: ProxyContext,
    target: PoolTarget,
    settings: PoolSettings,
    *,
    parsed: OpenAIRequest | None,
    model: str,
    priority: int,
    session: str | None,
    selection: str | None,
) -> Endpoint:
    """Choose the endpoint for one request (synchronous: nothing else runs in between)."""
    pools = ctx.pools
    hashes: tuple[int, ...] = ()
    if parsed is not None and parsed.prompt:
        hashes = block_hashes(
            model,
            parsed.prompt,
            block_chars=settings.prefix_block_chars,
            max_blocks=settings.prefix_max_blocks,
        )
    index = pools.index_for(settings)
    prefix_match = index.match(hashes, limit=4 * settings.max_candidates)
    view = pools.view(target)
    session_endpoint = view.ring.lookup(session) if session else None
    adapter = model if model and pools.is_adapter(model) else None
    subset = frozenset(s.strip() for s in selection.split(",")) if selection else None
    preferred = [
        *([session_endpoint] if session_endpoint else []),
        *prefix_match,  # deepest matches first
        *(pools.scraper.adapter_index.get(adapter, ()) if adapter else ()),
    ]
    keys = view.keys if subset is None else tuple(k for k in view.keys if k in subset)
    cap = settings.limits_for(model).max_per_endpoint
    if cap is not None:
        room = tuple(k for k in keys if ctx.in_flight.get(k, 0) < cap)
        keys = room or keys  # admission keeps the total under the caps; skew is tolerated
    candidates = select_candidates(keys, preferred, settings.max_candidates, ctx.rng)
    snapshots = pools.snapshots(target, settings, candidates, ctx.in_flight, prefix_match)
    pick_req = PickRequest(
        model=model,
        adapter=adapter,
        prompt_blocks=len(hashes),
        prompt_tokens=parsed.prompt_tokens if parsed else 0,
        session_id=session,
        session_endpoint=session_endpoint,
        priority=priority,
        subset=subset,
        sequence=pools.next_sequence(settings.key),
    )
    decision = run_profile(_profile(ctx, target, settings), pick_req, snapshots, ctx.rng)
    if isinstance(decision, NoEligibleEndpoint):
        ctx.metrics.picks.labels(target.name, "none").inc()
        raise NoEligibleEndpointError(f"InferencePool {target.name}: {decision.reason}")
    ctx.metrics.picks.labels(target.name, "ok").inc()
    if log.isEnabledFor(logging.DEBUG):
        log.debug("pick %s -> %s trace=%s", target.name, decision.endpoint.key, decision.trace)
    index.record(decision.endpoint.key, hashes)
    return view.by_key[decision.endpoint.key]


def _profile(ctx: ProxyContext, target: PoolTarget, settings: PoolSettings) -> Profile:
    """The pool's profile; without fresh signals, FailOpen balances on the gateway's own
    in-flight counts and FailClose refuses (503)."""
    profile = settings.profile
    if not profile.scorers or ctx.pools.has_fresh_signals(target, settings):
        return profile
    if settings.failure_mode == "FailClose" and ctx.pools.scraper.states:
        raise NoEligibleEndpointError(f"no fresh metrics for InferencePool {target.name}")
    return BUILTIN_PROFILES["least-request"]


def _models_response(ctx: ProxyContext, table: RoutingTable, rule: CompiledRule) -> web.Response:
    names: dict[str, None] = {}
    for backend in rule.backends:
        if isinstance(backend.target, PoolTarget) and backend.weight > 0:
            names.update(dict.fromkeys(sorted(ctx.pools.served_models(backend.target))))
            settings = table.pools.get(backend.target.name)
            if settings is not None:
                names.update(dict.fromkeys(settings.rewritten_names()))
    data = [{"id": n, "object": "model", "owned_by": "sluice"} for n in names]
    return web.Response(
        body=json.dumps({"object": "list", "data": data}).encode(), content_type="application/json"
    )
