"""The admission state machine: caps, priority, tenant fairness, TTL, shedding."""

from __future__ import annotations

import itertools

from routing.admission import AdmissionQueue, Admit, Capacity, Queued, Reject, Ticket
from routing.model import TrafficLimits
from routing.saturation import has_headroom, saturation

_ids = itertools.count(1)
ROOM = Capacity(slots=1, saturated=False, ready_endpoints=1)


def _t(priority=0, tenant="a", model="m", cost=10, size=100, deadline=100.0, paced=False):
    return Ticket(id=next(_ids), priority=priority, tenant=tenant, model=model,
                  cost_tokens=cost, size_bytes=size, deadline=deadline,
                  paced=paced)  # fmt: skip


def test_admits_while_there_is_room_then_queues():
    q = AdmissionQueue(TrafficLimits())
    assert isinstance(q.arrive(_t(), ROOM), Admit)
    assert isinstance(q.arrive(_t(), ROOM), Queued)


def test_higher_priority_goes_first():
    q = AdmissionQueue(TrafficLimits())
    first = _t()
    q.arrive(first, ROOM)
    low, high = _t(priority=0), _t(priority=10)
    q.arrive(low, ROOM)
    q.arrive(high, ROOM)
    q.release(first)
    assert [d.ticket for d in q.tick(0.0, ROOM)] == [high]


def test_tenants_alternate_by_tokens_served_not_by_arrival():
    q = AdmissionQueue(TrafficLimits())
    running = _t(tenant="heavy")
    q.arrive(running, ROOM)
    heavy = [_t(tenant="heavy") for _ in range(10)]
    light = [_t(tenant="light") for _ in range(3)]
    for ticket in heavy + light:
        q.arrive(ticket, ROOM)
    order = []
    current = running
    for _ in range(8):
        q.release(current)
        (admit,) = q.tick(0.0, ROOM)
        current = admit.ticket
        order.append(current.tenant)
    assert order[:6].count("light") == 3  # the light tenant is not stuck behind 10 heavy ones


def test_full_queue_and_expired_tickets_get_503_with_retry_after():
    q = AdmissionQueue(TrafficLimits(queue_max_requests=1))
    q.arrive(_t(), ROOM)
    waiting = _t(deadline=5.0)
    assert isinstance(q.arrive(waiting, ROOM), Queued)
    full = q.arrive(_t(), ROOM)
    assert isinstance(full, Reject)
    assert (full.status, full.reason) == (503, "queue_full")
    expired = q.tick(6.0, Capacity(slots=1, saturated=False, ready_endpoints=1))
    assert [(r.ticket, r.status, r.reason) for r in expired if isinstance(r, Reject)] == [
        (waiting, 503, "ttl_expired")
    ]


def test_sheddable_requests_get_429_while_saturated_also_when_already_queued():
    q = AdmissionQueue(TrafficLimits())
    saturated = Capacity(slots=None, saturated=True, ready_endpoints=1)
    refused = q.arrive(_t(priority=-1), saturated)
    assert isinstance(refused, Reject)
    assert (refused.status, refused.reason) == (429, "saturated")
    q.arrive(_t(), ROOM)  # takes the only slot
    queued = _t(priority=-1)
    assert isinstance(q.arrive(queued, ROOM), Queued)
    shed = q.tick(0.0, Capacity(slots=1, saturated=True, ready_endpoints=1))
    assert [(r.ticket, r.status) for r in shed if isinstance(r, Reject)] == [(queued, 429)]


def test_sheddable_requests_never_wait_behind_critical_work():
    q = AdmissionQueue(TrafficLimits())
    q.arrive(_t(), ROOM)  # takes the only slot
    queued_sheddable = _t(priority=-1)
    assert isinstance(q.arrive(queued_sheddable, ROOM), Queued)  # nothing critical waits yet
    critical = _t(priority=0)
    assert isinstance(q.arrive(critical, ROOM), Queued)
    refused = q.arrive(_t(priority=-1), ROOM)  # critical work is waiting: refused at once
    assert isinstance(refused, Reject)
    assert (refused.status, refused.reason) == (429, "saturated")
    shed = q.tick(0.0, ROOM)  # no slot freed: the queued sheddable one is refused too
    assert [(r.ticket, r.status) for r in shed if isinstance(r, Reject)] == [
        (queued_sheddable, 429)
    ]
    assert q.queued == 1


def test_sheddable_requests_stop_at_their_limit_and_critical_ones_use_the_rest():
    q = AdmissionQueue(TrafficLimits())
    reserved = Capacity(slots=4, saturated=False, ready_endpoints=1, sheddable_slots=2)
    assert isinstance(q.arrive(_t(priority=-1), reserved), Admit)
    assert isinstance(q.arrive(_t(priority=-1), reserved), Admit)
    refused = q.arrive(_t(priority=-1), reserved)
    assert isinstance(refused, Reject)
    assert (refused.status, refused.reason) == (429, "sheddable_limit")
    assert isinstance(q.arrive(_t(priority=0), reserved), Admit)
    assert isinstance(q.arrive(_t(priority=0), reserved), Admit)
    assert isinstance(q.arrive(_t(priority=0), reserved), Queued)  # all 4 slots taken


def test_prefill_pacing_holds_paced_requests_until_a_first_token():
    q = AdmissionQueue(TrafficLimits())
    paced = Capacity(slots=10, saturated=False, ready_endpoints=1, prefill_slots=1)
    first = _t(paced=True)
    assert isinstance(q.arrive(first, paced), Admit)
    assert q.prefilling == 1
    low, high = _t(paced=True, priority=0), _t(paced=True, priority=5)
    q.arrive(low, paced)
    q.arrive(high, paced)
    assert [d.ticket for d in q.tick(0.0, paced)] == []  # no paced request may start yet
    assert q.first_token(first)
    assert not q.first_token(first)  # once
    started = [d.ticket for d in q.tick(0.0, paced)]
    assert started[0] is high  # the critical prefill goes first
    assert low not in started  # one prefill slot: the next waits for high's first token
    q.release(high)  # a request that ends without a token frees its slot too
    assert q.prefilling == 0
    assert low in [d.ticket for d in q.tick(0.0, paced)]


def test_requests_that_are_not_paced_do_not_take_prefill_slots():
    q = AdmissionQueue(TrafficLimits())
    paced = Capacity(slots=10, saturated=False, ready_endpoints=1, prefill_slots=1)
    assert isinstance(q.arrive(_t(paced=True), paced), Admit)
    assert isinstance(q.arrive(_t(paced=False), paced), Admit)
    assert q.prefilling == 1


def test_zero_ready_endpoints_hold_and_cancel_removes():
    q = AdmissionQueue(TrafficLimits())
    cold = Capacity(slots=None, saturated=None, ready_endpoints=0)
    ticket = _t()
    assert isinstance(q.arrive(ticket, cold), Queued)
    assert q.tick(0.0, cold) == []
    assert q.cancel(ticket)
    assert q.queued == 0
    assert not q.cancel(ticket)


def test_model_caps_do_not_block_other_models():
    q = AdmissionQueue(TrafficLimits(), model_caps={"a": 1})
    roomy = Capacity(slots=None, saturated=False, ready_endpoints=1)
    assert isinstance(q.arrive(_t(model="a"), roomy), Admit)
    blocked = _t(model="a", priority=5)
    assert isinstance(q.arrive(blocked, roomy), Queued)
    other = _t(model="b")
    assert isinstance(q.arrive(other, roomy), Admit)  # not held behind a capped model
    assert q.tick(0.0, roomy) == []


def test_a_capped_model_does_not_hold_up_other_models_in_its_band():
    # the bug found by the audit: one band, model a at its cap queued first, model b waiting
    # behind it for a slot; when a slot frees, b goes and a keeps waiting for its cap
    q = AdmissionQueue(TrafficLimits(), model_caps={"a": 1})
    two = Capacity(slots=2, saturated=False, ready_endpoints=1)
    a1, a2, b1, b2 = _t(model="a"), _t(model="a"), _t(model="b"), _t(model="b")
    assert isinstance(q.arrive(a1, two), Admit)
    assert isinstance(q.arrive(a2, two), Queued)  # a at its cap
    assert isinstance(q.arrive(b1, two), Admit)  # overtakes a2: a2 waits for its cap only
    assert isinstance(q.arrive(b2, two), Queued)  # no slot
    q.release(b1)
    assert [d.ticket for d in q.tick(0.0, two)] == [b2]
    q.release(a1)
    q.release(b2)
    assert [d.ticket for d in q.tick(0.0, two)] == [a2]


def test_an_arrival_does_not_overtake_a_ticket_waiting_only_for_a_slot():
    q = AdmissionQueue(TrafficLimits())
    one = Capacity(slots=1, saturated=False, ready_endpoints=1)
    first, waiting, late = _t(), _t(), _t()
    assert isinstance(q.arrive(first, one), Admit)
    assert isinstance(q.arrive(waiting, one), Queued)
    q.release(first)  # a slot frees; the queue is dispatched on the next tick, not by arrivals
    assert isinstance(q.arrive(late, one), Queued)
    assert [d.ticket for d in q.tick(0.0, one)] == [waiting]


def test_saturation_treats_stale_signals_as_unknown_and_honours_headroom():
    limits = TrafficLimits(queue_depth_threshold=5, kv_cache_threshold=0.8, headroom=0.2)
    assert has_headroom(None, None, limits) is None
    assert has_headroom(5.5, 0.1, limits) is True  # within the 20 % margin
    assert has_headroom(6.0, 0.1, limits) is False
    assert has_headroom(0.0, 0.97, limits) is False
    assert saturation([(None, None)], limits) is None
    assert saturation([(9.0, 0.9), (None, None)], limits) == 1.0
    assert saturation([(9.0, 0.9), (0.0, 0.1)], limits) == 0.5
