"""Admission control for an InferencePool: caps, a bounded priority queue with per-tenant
fairness, time-to-live, and shedding. A state machine with no I/O and no clock: events go in
(``arrive``, ``release``, ``tick``, ``cancel``), decisions come out (``Admit``, ``Queued``,
``Reject``); ``gateway/admission.py`` performs them.

Rules:
- Strict priority between bands (higher first); inside a band, the backlogged tenant with the
  least service so far goes next (a virtual token counter, VTC: each dispatch charges its
  estimated tokens), FIFO inside a tenant. A tenant that becomes backlogged is lifted to the
  least counter among the backlogged, so idle time is not banked as credit.
- Sheddable requests (priority < 0) are refused with 429 while the pool is saturated, and
  while non-sheddable requests wait in the queue: critical work that is already waiting for
  capacity is never made to wait longer by sheddable work (already queued sheddable requests
  are refused then too, instead of waiting out their TTL).
- Sheddable limit (optional): sheddable requests are admitted only while the pool's
  requests in flight are below a fraction of its slots; the rest of the slots are kept for
  non-sheddable work, so a burst of critical requests finds room at once instead of waiting
  for sheddable ones to finish (they hold their slots for their whole decode). Beyond it,
  sheddable requests get 429.
- Prefill pacing (optional): paced requests that have not yet produced their first token
  hold a prefill slot — streamed ones until it is seen, non-streamed ones until their
  estimated prefill time has passed (``routing.prefill``). With a limit on them, the requests
  beyond it wait here, in priority order, rather than in the model server's FIFO queue, so a
  critical request's prefill is never scheduled behind sheddable ones. Time to first token is
  what priority buys.
- A full queue (requests or bytes) refuses with 503; a request past its deadline is removed
  and refused with 503. Nothing is dropped silently.
- Capacity is checked at dispatch, and the endpoint is picked after it (late binding).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from routing.model import TrafficLimits

__all__ = ["AdmissionQueue", "Admit", "Capacity", "Queued", "Reject", "Ticket"]

SATURATED_RETRY_AFTER_S = 1.0
QUEUE_FULL_RETRY_AFTER_S = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Ticket:
    id: int
    priority: int
    tenant: str
    model: str
    cost_tokens: int
    size_bytes: int
    deadline: float
    # it holds a prefill slot until its first token (seen in a stream, or estimated)
    paced: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Capacity:
    """What the gateway sees now: endpoint slots (per-endpoint cap × ready endpoints; None =
    uncapped), whether the pool is saturated (None = unknown: no fresh signals), and ready
    endpoints."""

    slots: int | None
    saturated: bool | None
    ready_endpoints: int
    # hold non-sheddable requests while saturated (a TrafficPolicy's queue); without one,
    # saturation only sheds sheddable requests and everything else passes
    hold_when_saturated: bool = True
    # paced requests awaiting their first token, pool-wide (None = no prefill pacing)
    prefill_slots: int | None = None
    # sheddable requests go only while in-flight requests are below this (None = no limit)
    sheddable_slots: int | None = None


@dataclass(frozen=True, slots=True)
class Admit:
    ticket: Ticket


@dataclass(frozen=True, slots=True)
class Queued:
    ticket: Ticket
    depth: int


@dataclass(frozen=True, slots=True)
class Reject:
    ticket: Ticket
    reason: str  # saturated | sheddable_limit | queue_full | ttl_expired
    status: int
    retry_after_s: float


@dataclass(slots=True)
class _Band:
    queues: dict[str, deque[Ticket]] = field(default_factory=dict)
    served: dict[str, float] = field(default_factory=dict)  # VTC counters per tenant

    def push(self, ticket: Ticket) -> None:
        queue = self.queues.get(ticket.tenant)
        if queue is None:
            if self.served:
                floor = min(
                    (self.served.get(t, 0.0) for t in self.queues),
                    default=min(self.served.values()),
                )
                self.served[ticket.tenant] = max(self.served.get(ticket.tenant, 0.0), floor)
            queue = self.queues[ticket.tenant] = deque()
        queue.append(ticket)

    def next(self, blocked: Callable[[Ticket], bool]) -> Ticket | None:
        """The ticket to serve next: tenants in fairness order (least served first), each
        tenant's tickets in arrival order, skipping those ``blocked`` (their model is at its
        cap), so one model's cap does not hold up the others."""
        order = sorted(self.queues, key=lambda t: (self.served.get(t, 0.0), self.queues[t][0].id))
        for tenant in order:
            for ticket in self.queues[tenant]:
                if not blocked(ticket):
                    return ticket
        return None

    def pop(self, ticket: Ticket) -> None:
        queue = self.queues[ticket.tenant]
        if queue[0] is ticket:
            queue.popleft()
        else:
            queue.remove(ticket)
        if not queue:
            del self.queues[ticket.tenant]
        self.served[ticket.tenant] = self.served.get(ticket.tenant, 0.0) + ticket.cost_tokens

    def remove(self, ticket: Ticket) -> bool:
        queue = self.queues.get(ticket.tenant)
        if queue is None or ticket not in queue:
            return False
        queue.remove(ticket)
        if not queue:
            del self.queues[ticket.tenant]
        return True

    def __iter__(self) -> Iterator[Ticket]:
        for queue in self.queues.values():
            yield from queue


class AdmissionQueue:
    """One pool's admission state. ``model_caps`` bounds in-flight requests per model."""

    def __init__(self, limits: TrafficLimits, model_caps: dict[str, int] | None = None) -> None:
        self.limits = limits
        self.model_caps = dict(model_caps or {})
        self._bands: dict[int, _Band] = {}
        self._in_flight: dict[str, int] = {}  # per model, admitted and not yet released
        self._prefilling: set[int] = set()  # paced tickets admitted, no first token yet
        self.queued = 0
        self.queued_bytes = 0

    @property
    def in_flight(self) -> int:
        return sum(self._in_flight.values())

    @property
    def prefilling(self) -> int:
        return len(self._prefilling)

    def arrive(self, ticket: Ticket, capacity: Capacity) -> Admit | Queued | Reject:
        if ticket.priority < 0:
            if capacity.saturated or self._critical_waiting():
                return Reject(ticket, "saturated", 429, SATURATED_RETRY_AFTER_S)
            if self._over_sheddable_limit(capacity, self.in_flight):
                return Reject(ticket, "sheddable_limit", 429, SATURATED_RETRY_AFTER_S)
        if not self._waiting_ahead(ticket.priority) and self._can_dispatch(
            ticket, capacity, self.in_flight
        ):
            self._start(ticket)
            return Admit(ticket)
        if (
            self.queued >= self.limits.queue_max_requests
            or self.queued_bytes + ticket.size_bytes > self.limits.queue_max_bytes
        ):
            return Reject(ticket, "queue_full", 503, QUEUE_FULL_RETRY_AFTER_S)
        self._bands.setdefault(ticket.priority, _Band()).push(ticket)
        self.queued += 1
        self.queued_bytes += ticket.size_bytes
        return Queued(ticket, self.queued)

    def first_token(self, ticket: Ticket) -> bool:
        """A dispatched paced request produced its first token (or its estimated prefill time
        passed): its prefill slot is free. True if it held one."""
        if ticket.id in self._prefilling:
            self._prefilling.discard(ticket.id)
            return True
        return False

    def release(self, ticket: Ticket) -> None:
        """A dispatched request finished (or failed)."""
        self._prefilling.discard(ticket.id)
        left = self._in_flight.get(ticket.model, 0) - 1
        if left > 0:
            self._in_flight[ticket.model] = left
        else:
            self._in_flight.pop(ticket.model, None)

    def cancel(self, ticket: Ticket) -> bool:
        """Remove a queued ticket (its client went away). False if it was not queued."""
        band = self._bands.get(ticket.priority)
        if band is None or not band.remove(ticket):
            return False
        self._forget(ticket)
        return True

    def tick(self, now: float, capacity: Capacity) -> list[Admit | Reject]:
        """Expire tickets past their deadline, then dispatch what capacity allows, highest
        band first. A ticket whose model is at its cap waits without holding up tickets of
        other models, in its band or below."""
        out: list[Admit | Reject] = [
            Reject(t, "ttl_expired", 503, QUEUE_FULL_RETRY_AFTER_S) for t in self._expire(now)
        ]
        if capacity.saturated:
            # sheddable requests already queued are shed too, with the same answer as at
            # arrival (429), instead of waiting out their TTL for a 503
            out += self._shed_sheddable()
        in_flight = self.in_flight
        for priority in sorted(self._bands, reverse=True):
            band = self._bands[priority]
            while (head := band.next(self._model_capped)) is not None:
                if not self._can_dispatch(head, capacity, in_flight):
                    break
                band.pop(head)
                self._forget(head)
                self._start(head)
                in_flight += 1
                out.append(Admit(head))
        self._bands = {p: b for p, b in self._bands.items() if b.queues}
        if self._critical_waiting():
            out += self._shed_sheddable()
        elif self._over_sheddable_limit(capacity, in_flight):
            out += self._shed_sheddable("sheddable_limit")
        return out

    def tickets(self) -> Iterator[Ticket]:
        for band in self._bands.values():
            yield from band

    def _can_dispatch(self, ticket: Ticket, capacity: Capacity, in_flight: int) -> bool:
        if capacity.ready_endpoints == 0:
            return False
        if capacity.saturated and capacity.hold_when_saturated:
            return False
        if capacity.slots is not None and in_flight >= capacity.slots:
            return False
        if ticket.priority < 0 and self._over_sheddable_limit(capacity, in_flight):
            return False
        if (
            ticket.paced
            and capacity.prefill_slots is not None
            and len(self._prefilling) >= capacity.prefill_slots
        ):
            return False
        return not self._model_capped(ticket)

    def _model_capped(self, ticket: Ticket) -> bool:
        cap = self.model_caps.get(ticket.model, self.limits.max_per_model)
        return cap is not None and self._in_flight.get(ticket.model, 0) >= cap

    def _waiting_ahead(self, priority: int) -> bool:
        """A queued ticket of this priority or higher that only waits for capacity (not for
        its model's cap): an arrival must not overtake it."""
        return any(
            p >= priority and band.next(self._model_capped) is not None
            for p, band in self._bands.items()
        )

    def _start(self, ticket: Ticket) -> None:
        self._in_flight[ticket.model] = self._in_flight.get(ticket.model, 0) + 1
        if ticket.paced:
            self._prefilling.add(ticket.id)

    def _critical_waiting(self) -> bool:
        return any(p >= 0 and band.queues for p, band in self._bands.items())

    @staticmethod
    def _over_sheddable_limit(capacity: Capacity, in_flight: int) -> bool:
        return capacity.sheddable_slots is not None and in_flight >= capacity.sheddable_slots

    def _shed_sheddable(self, reason: str = "saturated") -> list[Reject]:
        out = []
        for priority in [p for p in self._bands if p < 0]:
            for ticket in list(self._bands[priority]):
                self._bands[priority].remove(ticket)
                self._forget(ticket)
                out.append(Reject(ticket, reason, 429, SATURATED_RETRY_AFTER_S))
            del self._bands[priority]
        return out

    def _forget(self, ticket: Ticket) -> None:
        self.queued -= 1
        self.queued_bytes -= ticket.size_bytes

    def _expire(self, now: float) -> list[Ticket]:
        expired = [t for t in self.tickets() if t.deadline <= now]
        for ticket in expired:
            self._bands[ticket.priority].remove(ticket)
            self._forget(ticket)
        return expired
