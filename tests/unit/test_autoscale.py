"""The replica recommendation, on an injected clock."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.autoscale import AutoscaleSpec, Recommender

SPEC = AutoscaleSpec(target_per_replica=10, headroom=0.2, max_replicas=50)


def _run(
    rec: Recommender, start: float, seconds: int, demand: float, current: int, follow=False
) -> list:
    """One decision a second; with ``follow`` the replicas become what was recommended."""
    out = []
    for i in range(seconds):
        now = start + i
        rec.observe(now, demand)
        out.append(rec.recommend(now, current))
        if follow:
            current = out[-1].desired
    return out


def test_steady_load_gives_a_steady_recommendation_with_the_headroom():
    rec = Recommender(SPEC)
    results = _run(rec, 0, 300, demand=45, current=6)
    # 45 requests + 20 % headroom = 54 → 6 replicas of 10, every single decision
    assert {r.desired for r in results[60:]} == {6}
    assert not any(r.panic for r in results)


def test_headroom_is_respected_exactly():
    for headroom, expected in [(0.0, 5), (0.2, 6), (1.0, 9)]:
        rec = Recommender(AutoscaleSpec(target_per_replica=10, headroom=headroom))
        final = _run(rec, 0, 120, demand=45, current=expected)[-1]
        assert final.desired == expected == math.ceil(45 * (1 + headroom) / 10)


def test_a_spike_enters_panic_and_scales_up_within_seconds():
    rec = Recommender(SPEC)
    _run(rec, 0, 120, demand=20, current=3)
    spike = _run(rec, 120, 10, demand=200, current=3)
    first_panic = next(i for i, r in enumerate(spike) if r.panic)
    assert first_panic <= 3
    assert spike[-1].desired >= math.ceil(200 * 1.2 / 10) - 1


def test_panic_never_scales_down_until_the_stable_window_passes():
    rec = Recommender(SPEC)
    _run(rec, 0, 60, demand=20, current=3)
    peak = _run(rec, 60, 8, demand=200, current=3)[-1].desired
    after = _run(rec, 68, 30, demand=10, current=peak)
    assert all(r.desired >= peak for r in after)
    assert all(r.panic for r in after)


def test_scale_down_is_delayed_then_rate_limited_no_flapping():
    rec = Recommender(SPEC)
    _run(rec, 0, 120, demand=100, current=12)
    down = _run(rec, 120, 200, demand=10, current=12, follow=True)
    desired = [r.desired for r in down]
    assert desired[:20] == [12] * 20  # the scale-down delay holds the old value
    # it steps down as the stable window forgets the old load, and never back up: no flapping
    assert all(b <= a for a, b in itertools.pairwise(desired))
    assert desired[-1] == math.ceil(10 * 1.2 / 10)


def test_demand_at_zero_replicas_activates_one():
    rec = Recommender(AutoscaleSpec(target_per_replica=10, min_replicas=0))
    rec.observe(0.0, 0)
    assert rec.recommend(0.0, 0).desired == 0
    rec.observe(1.0, 1)
    result = rec.recommend(1.0, 0)
    assert result.active
    assert result.desired >= 1


def test_min_and_max_clamp():
    rec = Recommender(AutoscaleSpec(target_per_replica=1, min_replicas=2, max_replicas=4))
    assert _run(rec, 0, 5, demand=0, current=2)[-1].desired == 2
    assert _run(rec, 5, 70, demand=100, current=4)[-1].desired == 4


@pytest.mark.parametrize(
    "bad",
    [
        {"target_per_replica": 0},
        {"headroom": -0.1},
        {"min_replicas": 5, "max_replicas": 2},
        {"panic_window_s": 90},
    ],
)
def test_invalid_specs_are_refused(bad):
    with pytest.raises(ValueError):  # noqa: PT011 - the message names the field
        AutoscaleSpec(**bad)


@given(st.lists(st.floats(min_value=0, max_value=1000), min_size=1, max_size=200))
def test_recommendation_stays_within_bounds(demands):
    spec = AutoscaleSpec(target_per_replica=8, min_replicas=1, max_replicas=20)
    rec = Recommender(spec)
    current = 1
    for i, demand in enumerate(demands):
        rec.observe(float(i), demand)
        result = rec.recommend(float(i), current)
        assert spec.min_replicas <= result.desired <= spec.max_replicas
        current = result.desired
