"""Embeddings micro-batching, the I/O half: hold the waiting callers, arm one timer per open
batch, send each batch upstream and hand every caller its own share of the answer.

What to batch and when is decided by ``routing/batching.py``; this module only performs the
planner's actions. Rules:

* ``pick()`` is called once per upstream batch, when it is sent, and ``release()`` once per
  pick, in a ``finally``. The batch is sent with the first caller's headers and pick; callers
  share a batch only if their credential headers are equal (``routing.batching.Group``).
* A caller whose task is cancelled (its client went away) leaves its batch if the batch has
  not been sent. A batch in flight is never cancelled while one of its callers still waits.
* Every caller is answered exactly once: upstream non-200 → that status and the upstream's
  JSON error body (or an OpenAI-style one) for every caller of the batch; connection errors →
  ``gateway/errors.py``'s status table (502 connect, 503 reset, 504 timeout); the waiting
  line full or the gateway shutting down → 503.
* Memory is bounded per (pool, model, settings): ``routing.batching.PENDING_PER_BATCH_SIZE``
  x ``max_batch_size`` waiting callers. A reload that changes the settings starts a new lane;
  the old one drains on its own timers and is dropped once empty.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import assert_never

import aiohttp
from yarl import URL

from gateway.errors import STATUS_TABLE
from gateway.upstream import map_exceptions
from routing.backends import Endpoint
from routing.batching import (
    Action,
    BatchPlanner,
    Discard,
    EmbeddingInputs,
    Flush,
    Item,
    MalformedEmbeddingsError,
    Reject,
    Wait,
    build_request,
    group_of,
    limits_for,
    read_inputs,
    split_response,
)
from routing.errors import SluiceError
from routing.model import EmbeddingBatching

__all__ = ["DEFAULT_BATCH_TIMEOUT_S", "EmbeddingBatcher", "EmbeddingResult"]

# status, body, and the endpoint that answered ("" when none did: refused, or no endpoint)
EmbeddingResult = tuple[int, dict[str, object], str]
LaneKey = tuple[tuple[str, str], EmbeddingBatching]

# The upstream call of one batch; the route's timeouts are not known here (one batch serves
# callers of possibly different routes).
DEFAULT_BATCH_TIMEOUT_S = 60.0
# Describe the caller's original body (or its encoding), not the combined one.
_BODY_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "content-type", "content-encoding", "expect"}
)
# The session does not decompress (gateway/upstream.py), and the answer is parsed here.
_DROPPED_HEADERS = _BODY_HEADERS | {"accept-encoding"}


@dataclass(slots=True, eq=False, kw_only=True)
class _Caller:
    item: Item
    document: dict[str, object]
    inputs: EmbeddingInputs | None
    headers: list[tuple[str, str]]
    path: str
    pick: Callable[[], Endpoint]
    release: Callable[[Endpoint], None]
    future: asyncio.Future[EmbeddingResult]
    flight: _Flight | None = None  # set when its batch is sent


@dataclass(slots=True, eq=False, kw_only=True)
class _Flight:
    callers: list[_Caller]
    task: asyncio.Task[None] | None = None


@dataclass(slots=True, eq=False, kw_only=True)
class _Lane:
    key: LaneKey
    planner: BatchPlanner
    waiting: dict[int, _Caller] = field(default_factory=dict)
    timers: dict[int, asyncio.TimerHandle] = field(default_factory=dict)


class EmbeddingBatcher:
    """Per-(pool, model) waiting lines of embedding callers, and their batches in flight."""

    def __init__(
        self, session: aiohttp.ClientSession, *, timeout_s: float = DEFAULT_BATCH_TIMEOUT_S
    ) -> None:
        self._session = session
        self._timeout_s = timeout_s
        self._lanes: dict[LaneKey, _Lane] = {}
        self._flights: set[_Flight] = set()
        self._ids = itertools.count()
        self._closed = False

    @property
    def waiting(self) -> int:
        """Callers waiting for their batch to be sent (all lanes)."""
        return sum(len(lane.waiting) for lane in self._lanes.values())

    @property
    def in_flight(self) -> int:
        """Batches sent and not yet answered."""
        return len(self._flights)

    async def embed(
        self,
        *,
        key: tuple[str, str],
        settings: EmbeddingBatching,
        document: dict[str, object],
        headers: list[tuple[str, str]],
        path: str,
        pick: Callable[[], Endpoint],
        release: Callable[[Endpoint], None],
    ) -> EmbeddingResult:
        """Answer one caller: (status, JSON payload), from the batch it joined."""
        if self._closed:
            return _error(503, "shutting_down", "the gateway is shutting down")
        loop = asyncio.get_running_loop()
        inputs = read_inputs(document)
        item = Item(
            id=next(self._ids),
            group=group_of(document, inputs, headers) if inputs is not None else None,
            inputs=len(inputs.values) if inputs is not None else 1,
            tokens=inputs.tokens if inputs is not None else 1,
        )
        caller = _Caller(
            item=item, document=document, inputs=inputs, headers=headers, path=path,
            pick=pick, release=release, future=loop.create_future(),
        )  # fmt: skip
        lane = self._lane(key, settings)
        lane.waiting[item.id] = caller
        self._perform(lane, lane.planner.on_arrival(item, loop.time()))
        try:
            return await caller.future
        except asyncio.CancelledError:
            self._withdraw(lane, caller)
            raise

    async def close(self) -> None:
        """Answer every waiting caller and every caller of a batch in flight 503."""
        self._closed = True
        shutting_down = _error(503, "shutting_down", "the gateway is shutting down")
        for lane in self._lanes.values():
            for timer in lane.timers.values():
                timer.cancel()
            for caller in lane.waiting.values():
                _resolve(caller, shutting_down)
        self._lanes.clear()
        flights = list(self._flights)
        for flight in flights:
            for caller in flight.callers:
                _resolve(caller, shutting_down)
            if flight.task is not None:
                flight.task.cancel()
        await asyncio.gather(
            *(f.task for f in flights if f.task is not None), return_exceptions=True
        )

    def _lane(self, key: tuple[str, str], settings: EmbeddingBatching) -> _Lane:
        lane_key = (key, settings)
        lane = self._lanes.get(lane_key)
        if lane is None:
            lane = self._lanes[lane_key] = _Lane(
                key=lane_key, planner=BatchPlanner(limits_for(settings))
            )
        return lane

    def _perform(self, lane: _Lane, actions: tuple[Action, ...]) -> None:
        loop = asyncio.get_running_loop()
        for action in actions:
            match action:
                case Wait(batch_id=batch_id, until=until):
                    lane.timers[batch_id] = loop.call_at(
                        until, self._on_timer, lane, batch_id, until
                    )
                case Flush(batch=batch):
                    self._disarm(lane, batch.id)
                    self._launch([lane.waiting.pop(item.id) for item in batch.items])
                case Reject(item_id=item_id, reason=reason, retry_after_s=retry_after_s):
                    message = "too many embedding requests are waiting for a batch"
                    result = _error(503, reason, message, retry_after_s=retry_after_s)
                    _resolve(lane.waiting.pop(item_id), result)
                case Discard(batch_id=batch_id):
                    self._disarm(lane, batch_id)
                case _:
                    assert_never(action)
        if not lane.waiting and self._lanes.get(lane.key) is lane:
            del self._lanes[lane.key]

    def _disarm(self, lane: _Lane, batch_id: int) -> None:
        timer = lane.timers.pop(batch_id, None)
        if timer is not None:
            timer.cancel()

    def _on_timer(self, lane: _Lane, batch_id: int, until: float) -> None:
        lane.timers.pop(batch_id, None)
        # The loop may run a timer up to its clock resolution early; the batch is due anyway.
        now = max(asyncio.get_running_loop().time(), until)
        self._perform(lane, lane.planner.on_tick(now))

    def _withdraw(self, lane: _Lane, caller: _Caller) -> None:
        flight = caller.flight
        if flight is None:
            lane.waiting.pop(caller.item.id, None)
            self._perform(lane, lane.planner.on_cancel(caller.item.id))
        elif flight.task is not None and all(c.future.done() for c in flight.callers):
            flight.task.cancel()  # nobody is left to answer

    def _launch(self, callers: list[_Caller]) -> None:
        flight = _Flight(callers=callers)
        for caller in callers:
            caller.flight = flight
        flight.task = asyncio.get_running_loop().create_task(self._fly(flight))
        self._flights.add(flight)

    async def _fly(self, flight: _Flight) -> None:
        results: list[EmbeddingResult] | None = None
        try:
            results = await self._exchange(flight.callers)
        except SluiceError as exc:
            results = [_error_for(exc)] * len(flight.callers)
        finally:
            self._flights.discard(flight)
            # Cancelled (close(), or every caller left) or a bug: nobody may wait forever.
            fallback = _error(500, "internal_error", "internal error")
            for i, caller in enumerate(flight.callers):
                _resolve(caller, results[i] if results is not None else fallback)

    async def _exchange(self, callers: list[_Caller]) -> list[EmbeddingResult]:
        first = callers[0]
        body = build_request([c.document for c in callers], [c.inputs for c in callers])
        headers = [(k, v) for k, v in first.headers if k.lower() not in _DROPPED_HEADERS]
        headers.append(("Content-Type", "application/json"))
        endpoint = first.pick()
        try:
            status, raw = await self._post(endpoint, first.path, body, headers)
        finally:
            first.release(endpoint)
        if status != 200:
            return [(status, _upstream_error(status, raw), endpoint.key)] * len(callers)
        try:
            parts = split_response(
                json.loads(raw),
                counts=[c.item.inputs for c in callers],
                weights=[c.item.tokens for c in callers],
            )
        except (ValueError, RecursionError) as exc:  # MalformedEmbeddingsError, or not JSON
            message = f"{endpoint.key}: unusable embeddings answer: {exc}"
            code = "upstream_malformed_response"
            if not isinstance(exc, MalformedEmbeddingsError):
                message = f"{endpoint.key}: the embeddings answer is not JSON"
            return [(*_error(502, code, message)[:2], endpoint.key)] * len(callers)
        return [(200, part, endpoint.key) for part in parts]

    async def _post(
        self, endpoint: Endpoint, path: str, body: dict[str, object], headers: list[tuple[str, str]]
    ) -> tuple[int, bytes]:
        url = URL.build(
            scheme="http", host=endpoint.address, port=endpoint.port, path=path, encoded=True
        )
        with map_exceptions(endpoint.key):
            async with (
                asyncio.timeout(self._timeout_s),
                self._session.post(url, json=body, headers=headers) as response,
            ):
                return response.status, await response.read()


def _resolve(caller: _Caller, result: EmbeddingResult) -> None:
    if not caller.future.done():
        caller.future.set_result(result)


def _error(
    status: int, code: str, message: str, *, retry_after_s: float | None = None
) -> EmbeddingResult:
    """An OpenAI-style error body; with ``retry_after_s`` (whole seconds, at least 1), the
    value a ``Retry-After`` header would carry."""
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    error: dict[str, object] = {"code": code, "message": message, "type": kind}
    if retry_after_s is not None:
        error["retry_after_s"] = max(1, math.ceil(retry_after_s))
    return status, {"error": error}, ""


def _error_for(exc: SluiceError) -> EmbeddingResult:
    """The status of ``exc`` in gateway/errors.py's table, resolved over its MRO."""
    status = next((STATUS_TABLE[c][0] for c in type(exc).__mro__ if c in STATUS_TABLE), 500)
    return _error(status, exc.code, exc.message)


def _upstream_error(status: int, raw: bytes) -> dict[str, object]:
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        payload = None
    if isinstance(payload, dict):
        return payload
    text = raw[:200].decode("utf-8", "replace")
    return _error(status, "upstream_error", f"the upstream answered {status}: {text}")[1]
