"""One contract suite over every registered filter, scorer and picker (STYLE §C):
filters only narrow, scores lie in [0, 1] for every candidate (the pipeline does not clamp),
picks are members."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.picking import Decision, EndpointSnapshot, NoEligibleEndpoint, PickRequest
from routing.pipeline import Profile, WeightedScorer, run_profile
from routing.plugins.registry import BUILTIN_PROFILES, FILTERS, PICKERS, SCORERS

maybe_float = st.one_of(st.none(), st.floats(min_value=0, max_value=500, allow_nan=False))
adapters = st.frozensets(st.sampled_from(["a", "b", "c"]), max_size=3)


@st.composite
def endpoints(draw, min_size: int = 1) -> tuple[EndpointSnapshot, ...]:
    n = draw(st.integers(min_value=min_size, max_value=12))
    out = []
    for i in range(n):
        out.append(
            EndpointSnapshot(
                key=f"10.0.0.{i}:8000",
                healthy=draw(st.booleans()),
                waiting=draw(maybe_float),
                running=draw(maybe_float),
                kv_usage=draw(st.one_of(st.none(), st.floats(min_value=0, max_value=1))),
                lora_running=draw(adapters),
                lora_waiting=draw(adapters),
                max_lora=draw(st.one_of(st.none(), st.integers(min_value=1, max_value=4))),
                in_flight=draw(st.integers(min_value=0, max_value=200)),
                in_flight_tokens=draw(st.integers(min_value=0, max_value=500_000)),
                prefix_blocks=draw(st.integers(min_value=0, max_value=64)),
                group=draw(st.sampled_from([None, "g/0", "g/1"])),
                is_leader=draw(st.booleans()),
                group_healthy=draw(st.booleans()),
                models=draw(st.frozensets(st.sampled_from(["m", "a", "x"]), max_size=3)),
                held_average=draw(maybe_float),
            )
        )
    return tuple(out)


requests = st.builds(
    PickRequest,
    model=st.sampled_from(["m", "a", "nope"]),
    adapter=st.sampled_from([None, "a", "b"]),
    prompt_blocks=st.integers(min_value=0, max_value=64),
    session_endpoint=st.sampled_from([None, "10.0.0.1:8000"]),
    subset=st.sampled_from([None, frozenset({"10.0.0.0:8000", "10.0.0.2:8000"})]),
    sequence=st.integers(min_value=0, max_value=1000),
)


FILTER_CASES = [(name, {}) for name in sorted(FILTERS)] + [("hot-spot", {"meanSlack": 2})]


@pytest.mark.parametrize(("name", "params"), FILTER_CASES)
@settings(max_examples=25, deadline=None)
@given(req=requests, eps=endpoints())
def test_filters_only_narrow(name, params, req, eps):
    kept = FILTERS[name](params).filter(req, eps)
    assert set(kept) <= set(eps)
    assert list(kept) == [e for e in eps if e in kept]  # order preserved


@pytest.mark.parametrize("name", sorted(SCORERS))
@settings(max_examples=25, deadline=None)
@given(req=requests, eps=endpoints())
def test_scores_lie_in_unit_interval_for_every_candidate(name, req, eps):
    scores = SCORERS[name]({}).score(req, eps)
    assert len(scores) == len(eps)  # one per candidate, aligned with the input
    assert all(0.0 <= v <= 1.0 for v in scores)


@pytest.mark.parametrize("name", sorted(PICKERS))
@settings(max_examples=25, deadline=None)
@given(
    req=requests,
    eps=endpoints(),
    weights=st.lists(st.floats(min_value=0, max_value=10), min_size=12, max_size=12),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_picks_are_members_of_their_input(name, req, eps, weights, seed):
    scored = list(zip(eps, weights, strict=False))
    chosen = PICKERS[name]({}).pick(req, scored, random.Random(seed))
    assert chosen in eps


@pytest.mark.parametrize("name", sorted(BUILTIN_PROFILES))
@settings(max_examples=25, deadline=None)
@given(req=requests, eps=endpoints(), seed=st.integers(min_value=0, max_value=2**32))
def test_profiles_decide_within_the_filtered_set(name, req, eps, seed):
    decision = run_profile(BUILTIN_PROFILES[name], req, eps, random.Random(seed))
    if isinstance(decision, NoEligibleEndpoint):
        assert decision.trace.removed
        return
    assert isinstance(decision, Decision)
    assert decision.endpoint in eps
    removed = {key for _, keys in decision.trace.removed for key in keys}
    assert decision.endpoint.key not in removed


@settings(max_examples=50, deadline=None)
@given(
    req=requests,
    eps=endpoints(),
    weights=st.lists(
        st.one_of(st.just(1.0), st.floats(min_value=0, max_value=10)),
        min_size=len(SCORERS),
        max_size=len(SCORERS),
    ),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_totals_are_the_weighted_sums_and_max_score_picks_the_highest(req, eps, weights, seed):
    scorers = tuple(
        WeightedScorer(scorer=make({}), weight=w)
        for (_, make), w in zip(sorted(SCORERS.items()), weights, strict=True)
    )
    profile = Profile(name="all", filters=(), scorers=scorers, picker=PICKERS["max-score"]({}))
    decision = run_profile(profile, req, eps, random.Random(seed))
    assert isinstance(decision, Decision)
    trace = decision.trace
    assert trace.keys == tuple(e.key for e in eps)
    for i, total in enumerate(trace.totals):
        expected = sum(ws.weight * trace.scores[ws.scorer.name][i] for ws in scorers)
        assert total == pytest.approx(expected, abs=1e-9)
    assert trace.totals[trace.keys.index(decision.endpoint.key)] >= max(trace.totals) - 1e-9


def test_a_profile_without_scorers_totals_zero():
    profile = Profile(name="none", filters=(), scorers=(), picker=PICKERS["max-score"]({}))
    eps = (_ep("10.0.0.1:8000"), _ep("10.0.0.2:8000"))
    decision = run_profile(profile, PickRequest(model="m"), eps, random.Random(1))
    assert isinstance(decision, Decision)
    assert list(decision.trace.totals) == [0.0, 0.0]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("hot-spot", {"ratio": 0.5}),
        ("hot-spot", {"bogus": 1}),
        ("hot-spot", {"meanSlack": -1}),
        ("packing", {"batchTarget": 0}),
    ],
)
def test_bad_plugin_parameters_are_refused(name, params):
    with pytest.raises(ValueError):  # noqa: PT011 - the message names the parameter
        FILTERS[name](params)


@pytest.mark.parametrize(
    ("name", "params"),
    [("long-run-load", {"tolerance": 0}), ("long-run-load", {"bogus": 1}),
     ("long-run-load", {"slack": -1}), ("token-load", {"thresholdTokens": 0})],
)  # fmt: skip
def test_bad_scorer_parameters_are_refused(name, params):
    with pytest.raises(ValueError):  # noqa: PT011 - the message names the parameter
        SCORERS[name](params)


@given(
    req=requests,
    eps=endpoints(),
    tolerance=st.floats(min_value=0.01, max_value=2),
    slack=st.floats(min_value=0, max_value=4),
)
def test_long_run_load_favours_what_stays_below_the_mean(req, eps, tolerance, slack):
    scores = SCORERS["long-run-load"]({"tolerance": tolerance, "slack": slack}).score(req, eps)
    known = [(e.held_average, s) for e, s in zip(eps, scores, strict=True)
             if e.held_average is not None]  # fmt: skip
    assert all(s == 0.0 for e, s in zip(eps, scores, strict=True) if e.held_average is None)
    if not known:
        return
    mean = sum(v for v, _ in known) / len(known)
    for v, s in known:
        if v <= mean:
            assert s == 1.0
        elif v - mean >= max(tolerance * max(mean, 1.0), slack):
            assert s == 0.0
        else:  # inside the band: a partial score
            assert 0.0 <= s <= 1.0
    # never favours a busier endpoint over a less busy one
    ordered = sorted(known)
    assert all(a[1] >= b[1] for a, b in itertools.pairwise(ordered))


def test_long_run_load_slack_keeps_the_band_from_shrinking_at_low_load():
    # mean 0.5 requests: the band is 0.1 of a request without slack, one request with it
    eps = [_ep("a", held_average=0.2), _ep("b", held_average=0.8)]
    req = PickRequest(model="m")
    assert SCORERS["long-run-load"]({}).score(req, eps) == [1.0, 0.0]
    assert SCORERS["long-run-load"]({"slack": 1}).score(req, eps) == pytest.approx([1.0, 0.7])


def test_plugins_without_parameters_refuse_them():
    with pytest.raises(ValueError, match="takes no parameters"):
        SCORERS["queue"]({"x": 1})


def _ep(key: str, **kw) -> EndpointSnapshot:
    return EndpointSnapshot(key=key, **kw)


@pytest.mark.parametrize(
    ("eps", "req", "expected"),
    [
        (
            (_ep("a", waiting=0.0, kv_usage=0.1), _ep("b", waiting=9.0, kv_usage=0.9)),
            PickRequest(model="m"),
            "a",
        ),
        (
            (_ep("a", waiting=0.0, prefix_blocks=0), _ep("b", waiting=1.0, prefix_blocks=10)),
            PickRequest(model="m", prompt_blocks=10),
            "b",
        ),
        (
            (
                _ep("a", waiting=0.0, lora_running=frozenset({"x"}), max_lora=1),
                _ep("b", waiting=0.0, lora_running=frozenset({"y"}), max_lora=1),
            ),
            PickRequest(model="x", adapter="x"),
            "a",
        ),
        (
            (_ep("a", waiting=0.0, in_flight=20), _ep("b", waiting=0.0, prefix_blocks=10)),
            PickRequest(model="m", prompt_blocks=10),
            "b",
        ),
        (
            # the hot-spot guard: the prefix holder is far busier than the other endpoint
            (_ep("a", waiting=0.0, in_flight=30, prefix_blocks=10), _ep("b", waiting=0.0)),
            PickRequest(model="m", prompt_blocks=10),
            "b",
        ),
    ],
    ids=["queue-and-kv", "prefix", "lora-affinity", "prefix-over-idle", "hot-spot-guard"],
)
def test_default_profile_prefers_what_the_signals_say(eps, req, expected):
    decision = run_profile(BUILTIN_PROFILES["default"], req, eps, random.Random(0))
    assert isinstance(decision, Decision)
    assert decision.endpoint.key == expected


@settings(max_examples=50, deadline=None)
@given(req=requests, eps=endpoints(min_size=2), slack=st.floats(min_value=0, max_value=8))
def test_the_bounded_load_guard_keeps_the_least_loaded_and_caps_the_rest(req, eps, slack):
    kept = FILTERS["hot-spot"]({"meanSlack": slack}).filter(req, eps)
    loads = {e.key: e.load for e in eps}
    mean = sum(loads.values()) / len(loads)
    least = min(loads.values())
    assert any(loads[e.key] == least for e in kept)
    cap = max(mean * 1.25, mean + slack) + 1e-9
    assert all(loads[e.key] <= cap for e in kept)


def test_the_even_profile_leaves_a_prefix_holder_one_request_busier_where_balanced_keeps_it():
    # four endpoints holding 4, 4, 4 and 5 requests: the prefix holder is 0.75 above the mean
    eps = (
        _ep("a", waiting=0.0, running=5.0, in_flight=5, prefix_blocks=10),
        _ep("b", waiting=0.0, running=4.0, in_flight=4),
        _ep("c", waiting=0.0, running=4.0, in_flight=4),
        _ep("d", waiting=0.0, running=4.0, in_flight=4),
    )
    req = PickRequest(model="m", prompt_blocks=10)
    picks = {}
    for name in ("balanced", "even"):
        decision = run_profile(BUILTIN_PROFILES[name], req, eps, random.Random(0))
        assert isinstance(decision, Decision)
        picks[name] = decision.endpoint.key
    assert picks["balanced"] == "a"
    assert picks["even"] != "a"
