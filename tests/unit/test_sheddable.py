"""The adaptive sheddable limit (routing/sheddable.py) and its TrafficPolicy field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.sheddable import DECREASE, MIN_FRACTION, MIN_SAMPLES, STEP, SheddableLimit
from tests.unit.manifests import config_of

OBJECTIVE_S = 0.3


def _interval(limit: SheddableLimit, ttfts: list[float], refused: int) -> float:
    for ttft in ttfts:
        limit.observe(ttft)
    for _ in range(refused):
        limit.refused()
    return limit.update()


def test_critical_ttft_over_the_objective_shrinks_the_share():
    limit = SheddableLimit(0.5, OBJECTIVE_S)
    # 2 of 10 over the objective: the p90 is over it
    assert _interval(limit, [0.1] * 8 + [0.5] * 2, refused=3) == pytest.approx(0.5 * DECREASE)


def test_refusing_sheddable_work_while_critical_is_fine_grows_the_share():
    limit = SheddableLimit(0.5, OBJECTIVE_S)
    assert _interval(limit, [0.1] * 20, refused=1) == pytest.approx(0.5 + STEP)
    # one in ten over the objective is still a p90 within it
    assert _interval(limit, [0.1] * 9 + [0.9], refused=1) == pytest.approx(0.5 + 2 * STEP)
    # no critical traffic at all: nothing to protect
    assert _interval(limit, [], refused=1) == pytest.approx(0.5 + 3 * STEP)


@pytest.mark.parametrize(
    ("ttfts", "refused"),
    [
        ([0.1] * 20, 0),  # nobody is refused: no reason to open up
        ([0.1, 0.9], 5),  # a slow critical request among too few to judge: hold
    ],
)
def test_otherwise_the_share_holds(ttfts, refused):
    limit = SheddableLimit(0.5, OBJECTIVE_S)
    assert _interval(limit, ttfts, refused) == 0.5


def test_each_update_judges_only_what_came_since_the_last():
    limit = SheddableLimit(0.5, OBJECTIVE_S)
    _interval(limit, [0.9] * MIN_SAMPLES, refused=0)
    shrunk = limit.fraction
    assert _interval(limit, [], refused=0) == shrunk


def test_the_share_stays_within_its_bounds():
    limit = SheddableLimit(0.5, OBJECTIVE_S, lo=0.2, hi=0.6)
    for _ in range(20):
        _interval(limit, [0.9] * 10, refused=0)
    assert limit.fraction == 0.2
    for _ in range(20):
        _interval(limit, [0.1] * 10, refused=1)
    assert limit.fraction == 0.6
    assert SheddableLimit(5.0, OBJECTIVE_S).fraction == 1.0
    assert SheddableLimit(0.0, OBJECTIVE_S).fraction == MIN_FRACTION


@pytest.mark.parametrize(("lo", "hi", "objective"), [(0, 1, 1), (0.5, 0.4, 1), (0.1, 1, 0)])
def test_bad_bounds_are_refused(lo, hi, objective):
    with pytest.raises(ValueError, match="objective"):
        SheddableLimit(0.5, objective, lo=lo, hi=hi)


@given(
    start=st.floats(0, 2),
    intervals=st.lists(
        st.tuples(st.lists(st.floats(0, 2), max_size=30), st.integers(0, 5)), max_size=40
    ),
)
def test_the_share_is_always_a_fraction_within_bounds(start, intervals):
    limit = SheddableLimit(start, OBJECTIVE_S)
    for ttfts, refused in intervals:
        before = limit.fraction
        after = _interval(limit, ttfts, refused)
        assert MIN_FRACTION <= after <= 1.0
        over = sum(t > OBJECTIVE_S for t in ttfts)
        if after > before:  # it grows only when sheddable work was refused, critical fine
            assert refused
            assert over <= 0.1 * len(ttfts)
        if after < before:  # it shrinks only on a judged p90 over the objective
            assert len(ttfts) >= MIN_SAMPLES
            assert over > 0.1 * len(ttfts)


def test_the_traffic_policy_field():
    config = config_of(
        "apiVersion: sluice.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: t}\n"
        "spec: {targetRefs: [{kind: InferencePool, name: p}], concurrency: "
        "{maxPerEndpoint: 8, sheddableLimit: 0.25, sheddableTTFTObjective: 250ms}}"
    )
    (policy,) = config.traffic_policies
    assert policy.limits.sheddable_limit == 0.25
    assert policy.limits.sheddable_ttft_objective_s == 0.25
