"""Performs ``routing.admission`` decisions: waits queued requests on futures, ticks the
queue while it is not empty, and refreshes the pool's capacity from live state.

Rules: a queued request whose client disconnects is removed at once (its task is cancelled,
and ``cancel`` takes it out of the queue) and never reaches a model server. Every rejection
raises ``AdmissionRejectedError`` with its status and Retry-After, and is counted by reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.metrics import Metrics
from routing.admission import AdmissionQueue, Admit, Capacity, Queued, Reject, Ticket
from routing.errors import AdmissionRejectedError
from routing.pools import PoolSettings
from routing.saturation import saturation
from routing.sheddable import SheddableLimit

__all__ = ["Admissions", "PoolAdmission"]

TICK_S = 0.01  # how often a non-empty queue re-checks capacity (signals change between events)
CAPACITY_CACHE_S = 0.005
SHEDDABLE_UPDATE_S = 1.0  # how often an adaptive sheddable limit moves (routing.sheddable)

CapacityFn = Callable[[PoolSettings], tuple[int, list[tuple[float | None, float | None]]]]


@dataclass(slots=True)
class PoolAdmission:
    name: str
    queue: AdmissionQueue
    settings: PoolSettings
    waiters: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    enqueued_at: dict[int, float] = field(default_factory=dict)
    ticker: asyncio.Task[None] | None = None
    capacity: Capacity | None = None
    capacity_at: float = float("-inf")
    active: bool = False  # the scale-from-zero activation signal
    # the adaptive sheddable limit (sheddableTTFTObjective), its (start, objective), last move
    shed: SheddableLimit | None = None
    shed_config: tuple[float, float] | None = None
    shed_at: float = float("-inf")


class Admissions:
    """One ``PoolAdmission`` per InferencePool, kept across reloads."""

    def __init__(self, metrics: Metrics, capacity_of: CapacityFn) -> None:
        self._metrics = metrics
        self._capacity_of = capacity_of
        self._pools: dict[str, PoolAdmission] = {}
        self._ids = itertools.count(1)
        self.activation_listeners: list[Callable[[str, bool], None]] = []

    def next_id(self) -> int:
        return next(self._ids)

    def pool(self, settings: PoolSettings) -> PoolAdmission:
        state = self._pools.get(settings.key)
        if state is None:
            state = self._pools[settings.key] = PoolAdmission(
                name=settings.key, queue=AdmissionQueue(settings.traffic), settings=settings
            )
            self._adapt_shedding(state)
        elif state.settings is not settings:  # a reload: same queue, new limits
            state.settings = settings
            state.queue.limits = settings.traffic
            self._adapt_shedding(state)
        state.queue.model_caps = {
            model: lim.max_per_model
            for model, lim in settings.model_traffic.items()
            if lim.max_per_model is not None
        }
        return state

    async def admit(self, settings: PoolSettings, ticket: Ticket) -> bool:
        """Return when ``ticket`` may go (True if it waited in the queue); raise
        ``AdmissionRejectedError`` when it may not."""
        state = self.pool(settings)
        decision = state.queue.arrive(ticket, self._capacity(state))
        if isinstance(decision, Admit):
            return False
        if isinstance(decision, Reject):
            self._reject(state, decision)
        assert isinstance(decision, Queued)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        state.waiters[ticket.id] = future
        state.enqueued_at[ticket.id] = loop.time()
        self._gauges(state)
        self._ensure_ticker(state)
        try:
            await future
        except asyncio.CancelledError:
            if state.queue.cancel(ticket):  # still queued: the client left before dispatch
                self._metrics.rejected_requests.labels(state.name, "client_cancelled").inc()
            else:  # dispatched in the same instant: give its slot back
                state.queue.release(ticket)
                self._dispatch(state)
            raise
        finally:
            state.waiters.pop(ticket.id, None)
            started = state.enqueued_at.pop(ticket.id, None)
            if started is not None:
                self._metrics.queue_wait.labels(state.name).observe(loop.time() - started)
            self._gauges(state)
        return True

    def first_token(self, settings: PoolSettings, ticket: Ticket) -> None:
        """A paced request's first token arrived (or its estimated prefill time passed): its
        prefill slot may go to the next."""
        state = self._pools.get(settings.key)  # admitted, so it exists; no limits to refresh
        if state is not None and state.queue.first_token(ticket) and state.queue.queued:
            self._dispatch(state)

    def observe_ttft(self, settings: PoolSettings, ttft_s: float) -> None:
        """A non-sheddable request's time to first token, from its arrival here: it steers
        the pool's adaptive sheddable limit, if it has one."""
        state = self._pools.get(settings.key)
        if state is not None and state.shed is not None:
            state.shed.observe(ttft_s)

    def release(self, settings: PoolSettings, ticket: Ticket) -> None:
        state = self.pool(settings)
        state.queue.release(ticket)
        if state.queue.queued:
            self._dispatch(state)

    def wake_all(self) -> None:
        """Capacity may have changed everywhere (a reload added endpoints)."""
        for state in self._pools.values():
            state.capacity_at = float("-inf")
            if state.queue.queued:
                self._dispatch(state)

    async def close(self) -> None:
        for state in self._pools.values():
            if state.ticker is not None:
                state.ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await state.ticker

    def _adapt_shedding(self, state: PoolAdmission) -> None:
        """Start, keep or drop the adaptive sheddable limit for the pool's limits (a reload
        that leaves its start and objective alone keeps where it has got to)."""
        limits = state.settings.traffic
        objective = limits.sheddable_ttft_objective_s
        start = limits.sheddable_limit if limits.sheddable_limit is not None else 0.5
        config = None if objective is None else (start, objective)
        if config != state.shed_config:
            state.shed_config = config
            state.shed = None if objective is None else SheddableLimit(start, objective)
            state.shed_at = state.capacity_at = float("-inf")  # a fresh first interval
        share = state.shed.fraction if state.shed is not None else limits.sheddable_limit
        self._metrics.sheddable_limit.labels(state.name).set(share if share is not None else 1)

    def _capacity(self, state: PoolAdmission) -> Capacity:
        now = asyncio.get_running_loop().time()
        shed = state.shed
        if shed is not None and now - state.shed_at >= SHEDDABLE_UPDATE_S:
            if state.shed_at > float("-inf"):  # the first call only starts the interval
                before = shed.fraction
                if shed.update() != before:
                    self._metrics.sheddable_limit.labels(state.name).set(shed.fraction)
                    state.capacity_at = float("-inf")
            state.shed_at = now
        if state.capacity is None or now - state.capacity_at > CAPACITY_CACHE_S:
            limits = state.settings.traffic
            share = shed.fraction if shed is not None else limits.sheddable_limit
            ready, signals = self._capacity_of(state.settings)
            level = saturation(signals, limits)
            self._metrics.saturation.labels(state.name).set(level if level is not None else 0)
            state.capacity = Capacity(
                slots=limits.max_per_endpoint * ready if limits.max_per_endpoint else None,
                saturated=None if level is None else level >= 1.0,
                ready_endpoints=ready,
                hold_when_saturated=state.settings.has_traffic_policy,
                prefill_slots=limits.max_prefill_per_endpoint * ready
                if limits.max_prefill_per_endpoint
                else None,
                sheddable_slots=int(share * limits.max_per_endpoint * ready)
                if share and limits.max_per_endpoint
                else None,
            )
            state.capacity_at = now
        return state.capacity

    def _dispatch(self, state: PoolAdmission) -> None:
        now = asyncio.get_running_loop().time()
        for decision in state.queue.tick(now, self._capacity(state)):
            future = state.waiters.get(decision.ticket.id)
            if isinstance(decision, Reject):
                self._count(state, decision)
                if future is not None and not future.done():
                    future.set_exception(_error(decision))
            elif future is not None and not future.done():
                future.set_result(None)
            else:  # its waiter is gone: do not leak the slot
                state.queue.release(decision.ticket)
        self._gauges(state)

    def _ensure_ticker(self, state: PoolAdmission) -> None:
        if state.ticker is None or state.ticker.done():
            state.ticker = asyncio.create_task(self._tick_loop(state))

    async def _tick_loop(self, state: PoolAdmission) -> None:
        while state.queue.queued:
            await asyncio.sleep(TICK_S)
            self._dispatch(state)

    def _gauges(self, state: PoolAdmission) -> None:
        self._metrics.queue_length.labels(state.name).set(state.queue.queued)
        capacity = state.capacity
        active = bool(state.queue.queued) and capacity is not None and capacity.ready_endpoints == 0
        if state.active != active:
            state.active = active
            self._metrics.activation.labels(state.name).set(1 if active else 0)
            for listener in self.activation_listeners:
                listener(state.name, active)

    def _count(self, state: PoolAdmission, decision: Reject) -> None:
        self._metrics.rejected_requests.labels(state.name, decision.reason).inc()
        if decision.reason == "sheddable_limit" and state.shed is not None:
            state.shed.refused()

    def _reject(self, state: PoolAdmission, decision: Reject) -> None:
        self._count(state, decision)
        raise _error(decision)


_MESSAGES = {
    "saturated": "the pool is saturated and this request is sheddable; retry later",
    "sheddable_limit": "the pool's remaining capacity is kept for non-sheddable requests; "
    "retry later",
    "queue_full": "the gateway's queue for this pool is full; retry later",
    "ttl_expired": "the request waited longer than the queue's time-to-live",
}


def _error(decision: Reject) -> AdmissionRejectedError:
    return AdmissionRejectedError(
        _MESSAGES.get(decision.reason, decision.reason),
        reason=decision.reason,
        status=decision.status,
        retry_after_s=decision.retry_after_s,
    )
