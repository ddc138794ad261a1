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
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import ParamSpec, TypeVar

from aiohttp import web

from gateway.context import ProxyContext
from gateway.errors import RequestError, response_for
from gateway.forward import RequestPlan, ResponseHook, forward
from gateway.mirror import send_shadow
from gateway.rollouts import Assignment, client_uses_https, sticky_token
from gateway.usage import StreamTap
from routing.admission import Ticket
from routing.backends import Endpoint, PoolTarget
from routing.candidates import select_candidates
from routing.errors import ModelNotFoundError, NoEligibleEndpointError, SluiceError
from routing.model import RewriteRule
from routing.openai import BodyError, OpenAIRequest, parse_body, with_model
from routing.picking import NoEligibleEndpoint, PickRequest
from routing.pipeline import Profile, run_profile
from routing.plugins.registry import BUILTIN_PROFILES
from routing.pools import PoolSettings, choose_model
from routing.rolloutconfig import Shadow
from routing.table import CompiledRule, RoutingTable

__all__ = ["SERVED_HEADER", "pick_endpoint", "serve_pool"]

log = logging.getLogger("sluice.picker")
SERVED_HEADER = "x-gateway-destination-endpoint-served"
SELECTION_HEADER = "test-epp-endpoint-selection"
OBJECTIVE_HEADER = "x-gateway-inference-objective"
SESSION_HEADER = "x-session-id"
MODEL_REWRITE_HEADER = "x-gateway-model-name-rewrite"
VARIANT_HEADER = "x-sluice-variant"


@dataclass(slots=True, kw_only=True)
class PoolRequest:
    """One request on its way through a pool: what was asked, what it became."""

    request: web.BaseRequest
    rule: CompiledRule
    target: PoolTarget
    settings: PoolSettings
    plan: RequestPlan
    body: bytes | None
    parsed: OpenAIRequest | None
    requested: str  # the model the client named ("" if none)
    model: str  # the target model after rewrites
    priority: int
    tokens: int
    variant: str  # which A/B variant serves it ("" when there is no split)
    on_response: ResponseHook
    assigned: Assignment | None = None  # the Rollout that chose the variant, if any
    set_cookie: str | None = None  # a model-rewrite Rollout's new sticky cookie, if any
    observed: bool = False  # the outcome reached the Rollout (via the stream tap)
    ticket: Ticket | None = None  # its admission ticket (prefill pacing hears the first token)
    # a non-streamed request's estimated prefill time, when it is paced by that estimate
    prefill_estimate_s: float | None = None
    arrived_at: float = 0.0  # when admission first saw it (loop time), for its TTFT


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
    assigned: Assignment | None = None,
) -> web.StreamResponse:
    settings = table.pools[target.name]
    if request.method == "GET" and plan.path.rstrip("/") == "/v1/models":
        return _models_response(ctx, table, rule)
    parsed = await _parse(body, request)
    requested = request.headers.get(MODEL_REWRITE_HEADER) or (parsed.model if parsed else None)
    rewrite_assignment: list[Assignment] = []

    def sticky_target(rule: RewriteRule) -> str | None:
        # a Rollout on this InferenceModelRewrite rule assigns the target by sticky key
        got = ctx.rollouts.assign(
            table, rule.source, rule.targets, request.headers, request.cookies,
            sticky_token(request, ctx.rng), secure=client_uses_https(request),
        )  # fmt: skip
        if got is None:
            return None
        rewrite_assignment.append(got)
        return got.variant

    objective = request.headers.get(OBJECTIVE_HEADER)
    chooser = sticky_target if table.rollouts else None
    route_cookie = assigned.set_cookie if assigned is not None else None
    choice = choose_model(settings, requested, objective, ctx.rng, chooser) if requested else None
    if rewrite_assignment:
        assigned = rewrite_assignment[0]
    if choice is not None:
        served = ctx.pools.served_models(target)
        known = choice.target in served or requested in settings.rewritten_names()
        if served and not known:
            raise ModelNotFoundError(f"The model `{requested}` does not exist.")
        if parsed is not None and choice.target != parsed.model:
            body = await off_loop(len(body or b""), with_model, parsed, choice.target)
            plan.headers = [(k, v) for k, v in plan.headers if k.lower() != "content-length"]
            plan.headers.append(("Content-Length", str(len(body))))
    model = choice.target if choice else ""
    split = sum(1 for b in rule.backends if b.weight > 0) > 1
    pr = PoolRequest(
        request=request,
        rule=rule,
        target=target,
        settings=settings,
        plan=plan,
        body=body,
        parsed=parsed,
        requested=requested or "",
        model=model,
        priority=choice.priority if choice else 0,
        tokens=(parsed.prompt_tokens + parsed.max_tokens) if parsed else 0,
        variant=assigned.variant
        if assigned is not None
        else (model if choice and choice.rewritten else (target.name if split else "")),
        on_response=on_response,
        assigned=assigned,
        # the model rewrite's new sticky cookie, unless the route's hook already sends it
        set_cookie=next(
            (a.set_cookie for a in rewrite_assignment if a.set_cookie != route_cookie), None
        ),
    )
    model_rollout = rewrite_assignment[0] if rewrite_assignment else None
    if model_rollout is not None and parsed is not None:
        shadow = model_rollout.spec.shadow  # a route's Rollout copies in gateway.proxy
        if shadow is not None and shadow.target != model_rollout.variant:
            await _shadow(ctx, pr, shadow)
    limits = settings.limits_for(model)
    streamed = parsed is not None and parsed.stream
    if parsed is not None and not streamed and limits.max_prefill_per_endpoint is not None:
        # its first token is invisible: paced for its estimated prefill time, once the pool
        # has seen enough streamed first tokens to estimate it
        pr.prefill_estimate_s = ctx.pools.prefill_for(target.name).estimate(parsed.prompt_tokens)
    ticket = Ticket(
        id=ctx.admission.next_id(),
        priority=pr.priority,
        tenant=_tenant(request, settings.fairness_header),
        model=model,
        cost_tokens=max(1, pr.tokens),
        size_bytes=len(body or b""),
        deadline=asyncio.get_running_loop().time() + limits.queue_ttl_s,
        paced=streamed or pr.prefill_estimate_s is not None,
    )
    pr.ticket = ticket
    pr.arrived_at = asyncio.get_running_loop().time()
    try:
        if await ctx.admission.admit(settings, ticket):
            # it waited: the pool may have changed meanwhile (scale from zero, a reload)
            pr.target = ctx.pools.current(target.name) or target
            pr.settings = ctx.holder.table.pools.get(target.name, settings)
    except SluiceError as exc:
        _observe_failure(pr, response_for(exc).status)
        raise
    try:
        return await _dispatch(ctx, pr)
    except SluiceError as exc:
        _observe_failure(pr, response_for(exc).status)
        raise
    finally:
        ctx.admission.release(pr.settings, ticket)


def _observe_failure(pr: PoolRequest, status: int) -> None:
    """A request the gateway answered itself (no endpoint, queue TTL...) still counts against
    the variant a Rollout assigned it to: a candidate pool that is down must roll back."""
    if pr.assigned is not None and not pr.observed:
        pr.observed = True
        now = asyncio.get_running_loop().time()
        pr.assigned.rollout.observe(now, pr.assigned.variant, status < 500, None, None)


async def _dispatch(ctx: ProxyContext, pr: PoolRequest) -> web.StreamResponse:
    if (
        pr.parsed is not None
        and pr.settings.embeddings.enabled
        and pr.plan.path.rstrip("/").endswith("/v1/embeddings")
    ):
        return await _embeddings(ctx, pr)
    endpoint = pick_endpoint(
        ctx,
        pr.target,
        pr.settings,
        parsed=pr.parsed,
        model=pr.model,
        priority=pr.priority,
        session=pr.request.headers.get(SESSION_HEADER),
        # as the route's filters left it: a RequestHeaderModifier can remove this test hook
        selection=next((v for k, v in pr.plan.headers if k.lower() == SELECTION_HEADER), None),
        paced=pr.ticket is not None and pr.ticket.paced,
    )
    token_counts = ctx.pools.in_flight_tokens
    token_counts[endpoint.key] = token_counts.get(endpoint.key, 0) + pr.tokens
    slot = _PrefillSlot.take(ctx, pr, endpoint.key)

    def hook(response: web.StreamResponse) -> None:
        response.headers[SERVED_HEADER] = endpoint.key
        _sluice_headers(pr, response)

    pr.observed = pr.assigned is not None  # from here on the tap reports the outcome
    tap = StreamTap(
        ctx.metrics,
        model=pr.requested or pr.model,
        target=pr.model,
        variant=pr.variant,
        rollout=pr.assigned.rollout if pr.assigned is not None else None,
        on_first_chunk=_first_chunk_hook(ctx, pr, slot),
    )
    try:
        return await forward(
            ctx,
            pr.request,
            plan=pr.plan,
            endpoints=(endpoint,),
            body=pr.body,
            timeouts=pr.rule.timeouts,
            retry=pr.rule.retry,
            on_response=hook,
            route=pr.rule.route,
            tap=tap,
        )
    except SluiceError as exc:
        tap.finish(response_for(exc).status)
        raise
    finally:
        token_counts[endpoint.key] -= pr.tokens
        if slot is not None:
            slot.release()  # no-op once the first token came


class _PrefillSlot:
    """A paced request's prefill slot at its endpoint and in admission, held until its first
    token: the first chunk of a streamed answer; for a non-streamed one its estimated prefill
    time (the endpoint's own estimate once it has one, else the pool's), or its answer if that
    comes first; at the latest the end of the request. A streamed first token also teaches
    the pool's and the endpoint's prefill estimates."""

    __slots__ = ("_ctx", "_estimators", "_key", "_prompt_tokens", "_sent_at", "_settings",
                 "_ticket", "_timer")  # fmt: skip

    def __init__(self, ctx: ProxyContext, pr: PoolRequest, ticket: Ticket, key: str) -> None:
        loop = asyncio.get_running_loop()
        self._ctx, self._settings, self._key = ctx, pr.settings, key
        self._ticket: Ticket | None = ticket
        self._sent_at = loop.time()
        self._prompt_tokens = pr.parsed.prompt_tokens if pr.parsed is not None else 0
        pools = ctx.pools
        streamed = pr.parsed is not None and pr.parsed.stream
        self._estimators = (
            (pools.prefill_for(pr.target.name), pools.endpoint_prefill_for(key)) if streamed else ()
        )
        estimate = pr.prefill_estimate_s
        if estimate is not None:  # paced by estimate: this endpoint's own, if it has one
            own = pools.endpoint_prefill.get(key)
            estimate = (own.estimate(self._prompt_tokens) if own else None) or estimate
        self._timer = loop.call_later(estimate, self.release) if estimate is not None else None
        ctx.pools.awaiting_first[key] = ctx.pools.awaiting_first.get(key, 0) + 1

    @classmethod
    def take(cls, ctx: ProxyContext, pr: PoolRequest, key: str) -> _PrefillSlot | None:
        ticket = pr.ticket
        return cls(ctx, pr, ticket, key) if ticket is not None and ticket.paced else None

    def first_chunk(self, sse: bool) -> None:
        if self._ticket is None:
            return
        if sse:  # a token, not an error body
            ttft = asyncio.get_running_loop().time() - self._sent_at
            for estimator in self._estimators:
                estimator.observe(self._prompt_tokens, ttft)
        self.release()

    def release(self) -> None:
        """Free the slot (once; later calls do nothing)."""
        ticket, self._ticket = self._ticket, None
        if ticket is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._ctx.pools.awaiting_first[self._key] -= 1
        self._ctx.admission.first_token(self._settings, ticket)


def _first_chunk_hook(
    ctx: ProxyContext, pr: PoolRequest, slot: _PrefillSlot | None
) -> Callable[[bool], None] | None:
    """What the first chunk of the answer triggers: the prefill slot's release and, for a
    non-sheddable streamed request in a pool whose sheddable limit adapts, its time to first
    token (from its arrival, queueing included: what the client waited)."""
    release = slot.first_chunk if slot is not None else None
    if pr.priority < 0 or pr.settings.traffic.sheddable_ttft_objective_s is None:
        return release
    settings, arrived_at = pr.settings, pr.arrived_at

    def first_chunk(sse: bool) -> None:
        if sse:  # a token, not an error body
            ttft = asyncio.get_running_loop().time() - arrived_at
            ctx.admission.observe_ttft(settings, ttft)
        if release is not None:
            release(sse)

    return first_chunk


async def _embeddings(ctx: ProxyContext, pr: PoolRequest) -> web.StreamResponse:
    """Coalesce with other embedding requests for the same model (gateway/embeddings.py);
    the batch's endpoint is picked when the batch is sent, and counted in flight."""
    parsed = pr.parsed
    assert parsed is not None

    def pick() -> Endpoint:
        endpoint = pick_endpoint(ctx, pr.target, pr.settings, parsed=parsed, model=pr.model,
                                 priority=pr.priority, session=None, selection=None)  # fmt: skip
        ctx.in_flight[endpoint.key] = ctx.in_flight.get(endpoint.key, 0) + 1
        return endpoint

    def release(endpoint: Endpoint) -> None:
        ctx.in_flight[endpoint.key] -= 1

    document = {**parsed.document, "model": pr.model} if pr.model else dict(parsed.document)
    status, payload, served = await ctx.embeddings.embed(
        key=(pr.target.name, pr.model),
        settings=pr.settings.embeddings,
        document=document,
        headers=pr.plan.headers,
        path=pr.plan.path,
        pick=pick,
        release=release,
    )
    response = web.Response(
        status=status, body=json.dumps(payload).encode(), content_type="application/json"
    )
    if served:  # the endpoint that answered the batch (the Inference Extension's contract)
        response.headers[SERVED_HEADER] = served
    _sluice_headers(pr, response)
    return response


def _sluice_headers(pr: PoolRequest, response: web.StreamResponse) -> None:
    """The variant and a Rollout's new sticky cookie, then the route's own response hook."""
    if pr.variant:
        response.headers[VARIANT_HEADER] = pr.variant
    if pr.set_cookie is not None:
        response.headers.add("Set-Cookie", pr.set_cookie)
    pr.on_response(response)


async def _shadow(ctx: ProxyContext, pr: PoolRequest, shadow: Shadow) -> None:
    """A Rollout's shadow copy in a pool: the same request with the model set to the shadow
    target (a model rewrite target), to any ready endpoint of the pool; never waited for."""
    parsed = pr.parsed
    assert parsed is not None
    body = await off_loop(len(pr.body or b""), with_model, parsed, shadow.target)
    headers = [(k, v) for k, v in pr.plan.headers if k.lower() != "content-length"]
    headers.append(("Content-Length", str(len(body))))
    plan = RequestPlan(method=pr.plan.method, path=pr.plan.path, query=pr.plan.query,
                       headers=headers)  # fmt: skip
    send_shadow(ctx, pr.target, plan, body, shadow)


def _tenant(request: web.BaseRequest, header: str) -> str:
    """The fairness key: the fairness header, else a digest of the API key, else one
    shared tenant."""
    value = request.headers.get(header)
    if value:
        return value
    auth = request.headers.get("Authorization", "")
    if auth:
        return (
            "key:"
            + hashlib.blake2b(auth.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
        )
    return "default"


async def _parse(body: bytes | None, request: web.BaseRequest) -> OpenAIRequest | None:
    if not body or request.method != "POST":
        return None
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":  # the model and prompt must be read to pick an endpoint
        raise RequestError(
            415,
            "unsupported_content_encoding",
            f"Content-Encoding {encoding} is not supported here; send the JSON body as is",
        )
    try:
        return await off_loop(len(body), parse_body, body)
    except BodyError as exc:
        raise RequestError(400, "invalid_request_body", str(exc)) from exc


OFF_LOOP_BYTES = 256 * 1024  # JSON this large is read or rewritten in a worker thread

P = ParamSpec("P")
R = TypeVar("R")


async def off_loop(size: int, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args)``, in a worker thread when ``size`` (its JSON's bytes) is large: a
    12 MB body of 480,000 tiny messages takes ~0.5 s to parse and as long to rewrite, which on
    the event loop would stall every other request for that long. The Python-level work then
    shares the interpreter with the loop; the JSON parser's own C loop still holds the GIL for
    its whole run (measured: the loop's stall went 0.7 → 0.4 s, docs/limits.md)."""
    if size > OFF_LOOP_BYTES:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


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
    paced: bool = False,
) -> Endpoint:
    """Choose the endpoint for one request (synchronous: nothing else runs in between)."""
    pools = ctx.pools
    hashes = pools.hasher_for(settings).hashes(model, parsed.prompt_parts) if parsed else ()
    index = pools.index_for(settings)
    prefix_match = index.match(hashes, limit=settings.max_candidates)
    view = pools.view(target)
    session_endpoint = view.ring.lookup(session) if session else None
    adapter = model if model and pools.is_adapter(model) else None
    subset = frozenset(s.strip() for s in selection.split(",")) if selection else None
    preferred = chain(  # lazily: an adapter may run on most of a large pool
        (session_endpoint,) if session_endpoint else (),
        prefix_match,  # deepest matches first
        pools.scraper.adapter_index.get(adapter, ()) if adapter else (),
    )
    keys = view.keys if subset is None else tuple(k for k in view.keys if k in subset)
    limits = settings.limits_for(model)
    cap = limits.max_per_endpoint
    if cap is not None:
        room = tuple(k for k in keys if ctx.in_flight.get(k, 0) < cap)
        keys = room or keys  # admission keeps the total under the caps; skew is tolerated
    prefill_cap = limits.max_prefill_per_endpoint
    if prefill_cap is not None and paced:
        # admission keeps the pool's total under the per-endpoint limit x endpoints, so
        # some endpoint has a free prefill slot (unless the endpoint set just changed)
        awaiting = pools.awaiting_first
        free = tuple(k for k in keys if awaiting.get(k, 0) < prefill_cap)
        keys = free or keys
    allowed = view.key_set if keys is view.keys else None
    candidates = select_candidates(keys, preferred, settings.max_candidates, ctx.rng, allowed)
    snapshots = pools.snapshots(target, settings, candidates, ctx.in_flight, prefix_match)
    pick_req = _new_tuple(  # PickRequest's fields in order (checked at import)
        PickRequest,
        (
            model,
            adapter,
            len(hashes),  # prompt_blocks
            parsed.prompt_tokens if parsed else 0,
            session,  # session_id
            session_endpoint,
            priority,
            subset,
            pools.next_sequence(settings.key),  # sequence
        ),
    )
    counts = pools.counts(target.name)
    try:
        profile = _profile(ctx, target, settings)
    except NoEligibleEndpointError:
        counts.none += 1  # FailClose: no fresh signals
        raise
    decision = run_profile(profile, pick_req, snapshots, ctx.rng)
    if isinstance(decision, NoEligibleEndpoint):
        counts.record(decision.trace, None, len(hashes), False)
        raise NoEligibleEndpointError(f"InferencePool {target.name}: {decision.reason}")
    counts.record(decision.trace, decision.endpoint, len(hashes), profile is not settings.profile)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("pick %s -> %s trace=%s", target.name, decision.endpoint.key, decision.trace)
    index.record(decision.endpoint.key, hashes, decision.endpoint.prefix_blocks)
    return view.by_key[decision.endpoint.key]


# tuple.__new__ skips the NamedTuple's Python __new__ (one PickRequest per request)
_new_tuple = tuple.__new__
_PICK_FIELDS = ("model", "adapter", "prompt_blocks", "prompt_tokens", "session_id",
                "session_endpoint", "priority", "subset", "sequence")  # fmt: skip
if PickRequest._fields != _PICK_FIELDS:
    raise ImportError(f"PickRequest fields changed: {PickRequest._fields}")


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
