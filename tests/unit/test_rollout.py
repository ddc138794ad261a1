"""The progressive rollout state machine (routing/rollout.py), driven by deterministic traffic on
an injected clock: requests are spread evenly over each second, split by the sticky assignment
at the rollout's current weight, and fail at an exact per-variant rate.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Callable

import pytest

from routing.rollout import (
    ANALYSIS_SLICES,
    Phase,
    Rollout,
    RolloutPlan,
    Step,
    Thresholds,
    VariantStats,
    Verdict,
    judge,
    split_weights,
)
from routing.sticky import assign

INTERVAL_S = 30.0
THRESHOLDS = Thresholds(
    interval_s=INTERVAL_S,
    min_samples=50,
    max_error_rate_ratio=2.0,
    max_error_rate_increase=0.02,
    max_ttft_p95_ratio=1.5,
    max_tpot_p95_ratio=1.5,
)
STEPS = (
    Step(weight=10, duration_s=120),
    Step(weight=50, duration_s=300),
    Step(weight=100, duration_s=0),
)
PLAN = RolloutPlan(baseline="v1", candidate="v2", steps=STEPS, analysis=THRESHOLDS)
RULE = (("v1", 1), ("v2", 0))

# (error rate, TTFT seconds, TPOT seconds) of a variant at a time
Health = Callable[[float, str], tuple[float, float, float]]


def healthy(now: float, variant: str) -> tuple[float, float, float]:
    return (0.02, 0.200, 0.020)


def bad(now: float, variant: str) -> tuple[float, float, float]:
    """The candidate errs at 3x the baseline's rate."""
    return (0.06 if variant == "v2" else 0.02, 0.2, 0.02)


def blip(now: float, variant: str) -> tuple[float, float, float]:
    """The candidate errs on half its requests for 5 s, 60 s in."""
    return (0.5 if variant == "v2" and 60.0 <= now < 65.0 else 0.02, 0.2, 0.02)


def drive(rollout: Rollout, start: float, end: float, health: Health, rps: int = 40) -> float:
    """Send ``rps`` requests a second from ``start`` until ``end`` (or until the rollout ends),
    ticking once a second; returns the time of the last tick."""
    served: Counter[str] = Counter()
    n, now = 0, start
    while now < end:
        now = start + n / rps
        weights = split_weights(RULE, baseline="v1", candidate="v2", weight=rollout.weight)
        variant = assign(f"req-{start}-{n}", weights, salt="test")
        assert variant is not None
        rate, ttft, tpot = health(now, variant)
        served[variant] += 1
        # exactly `rate` errors per request, evenly spread
        ok = math.floor(served[variant] * rate) == math.floor((served[variant] - 1) * rate)
        jitter = 1 + (n % 7) / 20
        rollout.observe(now, variant, ok, ttft * jitter, tpot * jitter)
        if n % rps == 0 and rollout.tick(now).phase.is_terminal:
            return now
        n += 1
    return now


def test_a_healthy_candidate_is_promoted_step_by_step():
    rollout = Rollout.start(PLAN, 0.0)
    drive(rollout, 0.0, 600.0, healthy)
    status = rollout.status
    assert status.phase is Phase.PROMOTED
    assert status.weight == 100
    # each step lasts its duration: the first full window inside it passed well before
    assert status.history == ((0.0, 10), (120.0, 50), (420.0, 100))
    assert status.last_analysis is not None
    assert status.last_analysis.verdict is Verdict.PASS


def test_a_candidate_with_3x_the_error_rate_is_rolled_back_within_one_interval():
    rollout = Rollout.start(PLAN, 0.0)
    at = drive(rollout, 0.0, 600.0, bad)
    status = rollout.status
    assert status.phase is Phase.ROLLED_BACK
    assert at <= INTERVAL_S
    assert status.weight == 0
    assert status.history == ((0.0, 10), (at, 0))
    analysis = status.last_analysis
    assert analysis is not None
    assert analysis.verdict is Verdict.FAIL
    assert analysis.failed == ("maxErrorRateRatio", "maxErrorRateIncrease")
    assert analysis.candidate.requests >= THRESHOLDS.min_samples
    assert analysis.error_rate_ratio is not None
    assert analysis.error_rate_ratio > 2.0
    assert "maxErrorRateRatio" in status.message


@pytest.mark.parametrize("failure_at", [200.0, 212.5, 237.0], ids=["on-grid", "mid", "late"])
def test_a_failure_mid_rollout_is_caught_within_one_interval(failure_at):
    def degrades(now: float, variant: str) -> tuple[float, float, float]:
        worse = variant == "v2" and now >= failure_at
        return (0.06 if worse else 0.02, 0.2, 0.02)

    rollout = Rollout.start(PLAN, 0.0)
    at = drive(rollout, 0.0, 600.0, degrades)
    assert rollout.status.phase is Phase.ROLLED_BACK
    assert failure_at < at <= failure_at + INTERVAL_S
    assert rollout.status.history == ((0.0, 10), (120.0, 50), (at, 0))


def test_a_slow_candidate_fails_the_ttft_check():
    def slow(now: float, variant: str) -> tuple[float, float, float]:
        return (0.02, 0.5 if variant == "v2" else 0.2, 0.02)

    rollout = Rollout.start(PLAN, 0.0)
    drive(rollout, 0.0, 600.0, slow)
    analysis = rollout.status.last_analysis
    assert rollout.status.phase is Phase.ROLLED_BACK
    assert analysis is not None
    assert analysis.failed == ("maxTTFTp95Ratio",)
    assert analysis.ttft_p95_ratio == pytest.approx(2.5, rel=0.1)


def test_no_verdict_without_min_samples():
    def broken(now: float, variant: str) -> tuple[float, float, float]:
        return (1.0 if variant == "v2" else 0.0, 0.2, 0.02)

    rollout = Rollout.start(PLAN, 0.0)
    # 2 requests a second: the candidate's ~6 a window never reach 50
    drive(rollout, 0.0, 300.0, broken, rps=2)
    status = rollout.status
    assert status.phase is Phase.PROGRESSING
    assert status.last_analysis is not None
    assert status.last_analysis.verdict is Verdict.INCONCLUSIVE
    # the step's 2 minutes are over, but no analysis has passed: the weight holds
    assert status.weight == 10
    assert "waiting for a passing analysis" in status.message
    # with enough traffic the verdict comes, within one interval
    at = drive(rollout, 300.0, 600.0, broken)
    assert rollout.status.phase is Phase.ROLLED_BACK
    assert at <= 300.0 + INTERVAL_S


def test_analysis_is_bounded_memory_and_ignores_other_variants():
    rollout = Rollout.start(PLAN, 0.0)
    for i in range(10_000):
        rollout.observe(i * 0.1, "v1", True, 0.1 + (i % 100) / 100, 0.01)
        rollout.observe(i * 0.1, "v3", False, None, None)
    assert len(rollout._slices) <= ANALYSIS_SLICES + 1
    assert all(len(s.baseline.ttft) <= 213 for s in rollout._slices)
    assert all(s.candidate.requests == 0 for s in rollout._slices)


def test_p95_is_read_within_the_bucket_error():
    rollout = Rollout.start(PLAN, 0.0)
    # 1..1000 ms on both sides: the exact p95 is 950 ms
    for i in range(1, 1001):
        for variant in ("v1", "v2"):
            rollout.observe(1.0, variant, True, i / 1000, i / 10_000)
    rollout.tick(INTERVAL_S)
    analysis = rollout.status.last_analysis
    assert analysis is not None
    assert analysis.candidate.ttft_p95_s == pytest.approx(0.950, rel=0.045)
    assert analysis.candidate.tpot_p95_s == pytest.approx(0.095, rel=0.045)
    assert analysis.ttft_p95_ratio == 1.0


def test_odd_or_missing_latencies_do_not_break_the_histogram():
    rollout = Rollout.start(PLAN, 0.0)
    for value in (0.0, -1.0, math.nan, math.inf, 1e-9, 1e9):
        for _ in range(10):
            rollout.observe(1.0, "v2", True, value, value)
    rollout.observe(1.0, "v2", True, None, 0.01)  # no first token measured: not streamed
    rollout.observe(1.0, "v2", True, 0.2, None)  # a single-token answer has no TPOT
    rollout.tick(INTERVAL_S)
    assert rollout.status.phase is Phase.PROGRESSING
    analysis = rollout.status.last_analysis
    assert analysis is not None
    assert (analysis.candidate.ttft_samples, analysis.candidate.tpot_samples) == (61, 61)
    assert analysis.candidate.requests == 62


def test_steps_advance_on_time_alone_without_analysis():
    rollout = Rollout.start(RolloutPlan(baseline="v1", candidate="v2", steps=STEPS), 0.0)
    rollout.observe(1.0, "v2", False, None, None)  # ignored: nothing to judge
    for second in range(0, 601, 10):
        rollout.tick(float(second))
    assert rollout.status.history == ((0.0, 10), (120.0, 50), (420.0, 100))
    assert rollout.status.last_analysis is None


def test_after_the_last_step_the_candidate_gets_100_percent():
    plan = RolloutPlan(baseline="v1", candidate="v2", steps=(Step(weight=25, duration_s=10),))
    rollout = Rollout.start(plan, 0.0)
    assert rollout.tick(10.0).phase is Phase.PROMOTED
    assert rollout.status.history == ((0.0, 25), (10.0, 100))


def test_at_100_percent_the_candidate_is_compared_with_the_last_baseline_window():
    steps = (Step(weight=50, duration_s=60), Step(weight=100, duration_s=120))
    plan = RolloutPlan(baseline="v1", candidate="v2", steps=steps, analysis=THRESHOLDS)
    rollout = Rollout.start(plan, 0.0)
    drive(rollout, 0.0, 170.0, healthy)
    analysis = rollout.status.last_analysis
    assert analysis is not None
    assert analysis.baseline_is_reference
    assert analysis.verdict is Verdict.PASS
    assert rollout.status.baseline_reference is not None
    drive(rollout, 170.0, 400.0, healthy)
    assert rollout.status.history == ((0.0, 50), (60.0, 100))
    assert rollout.status.phase is Phase.PROMOTED


def test_pause_stops_the_step_clock_and_resume_restarts_it():
    rollout = Rollout.start(PLAN, 0.0)
    drive(rollout, 0.0, 100.0, healthy)
    assert rollout.pause(100.0).phase is Phase.PAUSED
    drive(rollout, 100.0, 300.0, healthy)
    assert rollout.status.weight == 10
    assert rollout.status.paused_at == 100.0
    assert rollout.resume(300.0).phase is Phase.PROGRESSING
    assert rollout.status.step_started_at == 200.0
    drive(rollout, 300.0, 330.0, healthy)
    assert rollout.status.history == ((0.0, 10), (320.0, 50))


def test_a_paused_rollout_still_rolls_back():
    def bad(now: float, variant: str) -> tuple[float, float, float]:
        return (0.5 if variant == "v2" else 0.0, 0.2, 0.02)

    rollout = Rollout.start(PLAN, 0.0)
    rollout.pause(0.0)
    drive(rollout, 0.0, 100.0, bad)
    assert rollout.status.phase is Phase.ROLLED_BACK
    assert rollout.status.paused_at is None


@pytest.mark.parametrize(
    ("event", "phase", "weight"),
    [("promote", Phase.PROMOTED, 100), ("abort", Phase.ROLLED_BACK, 0)],
    ids=["promote", "abort"],
)
def test_operator_decisions_are_final(event, phase, weight):
    rollout = Rollout.start(PLAN, 0.0)
    status = getattr(rollout, event)(5.0)
    assert (status.phase, status.weight) == (phase, weight)
    assert status.history == ((0.0, 10), (5.0, weight))
    # a finished rollout ignores every later event
    rollout.observe(6.0, "v2", False, None, None)
    for later in (rollout.tick, rollout.pause, rollout.resume, rollout.promote, rollout.abort):
        assert later(7.0) == status


def test_resume_and_pause_out_of_turn_change_nothing():
    rollout = Rollout.start(PLAN, 0.0)
    assert rollout.resume(1.0).phase is Phase.PROGRESSING
    rollout.pause(2.0)
    assert rollout.pause(3.0).paused_at == 2.0


def test_restore_round_trip_continues_where_it_left_off():
    original = Rollout.start(PLAN, 0.0)
    drive(original, 0.0, 200.0, healthy)
    saved = original.status
    restored = Rollout.restore(PLAN, saved, 200.0)
    assert restored.status == saved
    for rollout in (original, restored):
        drive(rollout, 200.0, 600.0, healthy)
    assert restored.status.history == original.status.history
    assert restored.status.history == ((0.0, 10), (120.0, 50), (420.0, 100))


def test_restore_keeps_state_when_only_thresholds_change():
    original = Rollout.start(PLAN, 0.0)
    drive(original, 0.0, 200.0, healthy)
    stricter = Thresholds(interval_s=10.0, min_samples=5, max_error_rate_increase=0.0)
    plan = RolloutPlan(baseline="v1", candidate="v2", steps=STEPS, analysis=stricter)
    restored = Rollout.restore(plan, original.status, 200.0)
    assert restored.status == original.status


@pytest.mark.parametrize(
    "changed",
    [
        RolloutPlan(baseline="v1", candidate="v3", steps=STEPS, analysis=THRESHOLDS),
        RolloutPlan(baseline="v0", candidate="v2", steps=STEPS, analysis=THRESHOLDS),
        RolloutPlan(baseline="v1", candidate="v2", steps=STEPS[1:], analysis=THRESHOLDS),
        RolloutPlan(
            baseline="v1",
            candidate="v2",
            steps=(Step(weight=10, duration_s=60), *STEPS[1:]),
            analysis=THRESHOLDS,
        ),
    ],
    ids=["candidate", "baseline", "fewer-steps", "step-duration"],
)
def test_a_changed_plan_restarts(changed):
    original = Rollout.start(PLAN, 0.0)
    drive(original, 0.0, 200.0, healthy)
    restarted = Rollout.restore(changed, original.status, 200.0)
    status = restarted.status
    assert status.revision == changed.revision != PLAN.revision
    assert (status.phase, status.step, status.started_at) == (Phase.PROGRESSING, 0, 200.0)
    assert status.history == ((200.0, changed.steps[0].weight),)


def test_a_finished_rollout_stays_finished_after_a_reload():
    rollout = Rollout.start(PLAN, 0.0)
    rollout.abort(1.0)
    restored = Rollout.restore(PLAN, rollout.status, 50.0)
    assert restored.status == rollout.status
    assert restored.weight == 0


def test_status_is_json():
    rollout = Rollout.start(PLAN, 0.0)
    drive(rollout, 0.0, 200.0, healthy)
    data = json.loads(json.dumps(rollout.status.to_json(), allow_nan=False))
    assert data["phase"] == "Progressing"
    assert data["weight"] == 50
    assert data["history"] == [[0.0, 10], [120.0, 50]]
    last = data["lastAnalysis"]
    assert last["verdict"] == "Pass"
    assert set(last["candidate"]) == {
        "requests",
        "errors",
        "errorRate",
        "ttftSamples",
        "ttftP95Seconds",
        "tpotSamples",
        "tpotP95Seconds",
    }
    assert last["failed"] == []


def _stats(requests: int, errors: int, ttft: float | None = None, n: int = 0) -> VariantStats:
    return VariantStats(requests=requests, errors=errors, ttft_samples=n, ttft_p95_s=ttft)


@pytest.mark.parametrize(
    ("thresholds", "baseline", "candidate", "verdict", "failed"),
    [
        (THRESHOLDS, _stats(1000, 20), _stats(100, 6), Verdict.FAIL, 2),
        # 2.5x, but only 1.5 points worse: under the absolute noise floor
        (THRESHOLDS, _stats(1000, 10), _stats(200, 5), Verdict.PASS, 0),
        # 1.5 points worse is a lot when both rates are high, but under 2x
        (THRESHOLDS, _stats(1000, 300), _stats(100, 45), Verdict.PASS, 0),
        (Thresholds(max_error_rate_ratio=2.0), _stats(100, 0), _stats(100, 1), Verdict.FAIL, 1),
        (Thresholds(max_error_rate_ratio=2.0), _stats(100, 0), _stats(100, 0), Verdict.PASS, 0),
        (Thresholds(max_error_rate_increase=0.0), _stats(50, 1), _stats(50, 2), Verdict.FAIL, 1),
        (THRESHOLDS, _stats(1000, 20), _stats(49, 49), Verdict.INCONCLUSIVE, 0),
        (THRESHOLDS, _stats(49, 0), _stats(100, 50), Verdict.INCONCLUSIVE, 0),
        (THRESHOLDS, _stats(50, 1, 0.2, 50), _stats(50, 1, 0.31, 50), Verdict.FAIL, 1),
        (THRESHOLDS, _stats(50, 1, 0.2, 50), _stats(50, 1, 0.29, 50), Verdict.PASS, 0),
        # too few TTFT samples: that check is skipped, the error check decides
        (THRESHOLDS, _stats(50, 1, 0.2, 49), _stats(50, 1, 9.0, 50), Verdict.PASS, 0),
        (Thresholds(max_ttft_p95_ratio=1.5), _stats(50, 1), _stats(50, 1), Verdict.INCONCLUSIVE, 0),
    ],
    ids=[
        "3x-and-4-points",
        "ratio-only-exceeded",
        "increase-only-exceeded",
        "zero-baseline-ratio",
        "zero-both",
        "increase-only-configured",
        "candidate-too-few",
        "baseline-too-few",
        "ttft-too-slow",
        "ttft-ok",
        "ttft-too-few-samples",
        "latency-only-without-samples",
    ],
)
def test_judge(thresholds, baseline, candidate, verdict, failed):
    analysis = judge(thresholds, baseline, candidate, at=30.0, window_start=0.0)
    assert analysis.verdict is verdict
    assert len(analysis.failed) == failed


def test_judge_falls_back_to_the_reference_baseline():
    reference = _stats(500, 5)
    analysis = judge(THRESHOLDS, _stats(3, 0), _stats(100, 10), reference, at=1.0, window_start=0.0)
    assert analysis.baseline_is_reference
    assert analysis.baseline == reference
    assert analysis.verdict is Verdict.FAIL
    assert analysis.error_rate_ratio == pytest.approx(10.0)
    assert analysis.error_rate_increase == pytest.approx(0.09)


def test_judge_reports_no_ratio_without_a_denominator():
    analysis = judge(THRESHOLDS, _stats(0, 0), _stats(0, 0), at=1.0, window_start=0.0)
    assert analysis.error_rate_ratio is None
    assert analysis.error_rate_increase is None
    assert analysis.ttft_p95_ratio is None


@pytest.mark.parametrize(
    ("variants", "weight", "expected"),
    [
        ((("v1", 1), ("v2", 0)), 10, (("v1", 90), ("v2", 10))),
        ((("v1", 3), ("v2", 1)), 0, (("v1", 400), ("v2", 0))),
        ((("v1", 0), ("v2", 0)), 100, (("v1", 0), ("v2", 100))),
        ((("v1", 1), ("v2", 1), ("v3", 2)), 25, (("v1", 150), ("v2", 50), ("v3", 200))),
        ((("v1", 1), ("v9", 1)), 50, (("v1", 1), ("v9", 1))),
    ],
    ids=["canary", "rolled-back", "pair-weights-zero", "third-variant-keeps-share", "missing"],
)
def test_split_weights(variants, weight, expected):
    assert split_weights(variants, baseline="v1", candidate="v2", weight=weight) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": ()},
        {"candidate": "v1"},
        {"steps": (Step(weight=101, duration_s=1),)},
        {"steps": (Step(weight=-1, duration_s=1),)},
        {"steps": (Step(weight=10, duration_s=-1),)},
        {"analysis": Thresholds(interval_s=0)},
        {"analysis": Thresholds(min_samples=0)},
        {"analysis": Thresholds(failure_threshold=0)},
        {"analysis": Thresholds(failure_threshold=2, failure_window_s=239)},
    ],
    ids=[
        "no-steps",
        "same-names",
        "weight-high",
        "weight-low",
        "negative",
        "interval",
        "min",
        "failures",
        "window",
    ],
)
def test_invalid_plans_are_refused(kwargs):
    with pytest.raises(ValueError):  # noqa: PT011 - each message is checked by the parser tests
        RolloutPlan(**{"baseline": "v1", "candidate": "v2", "steps": STEPS, **kwargs})


def test_revision_follows_variants_and_steps_not_thresholds():
    same = RolloutPlan(baseline="v1", candidate="v2", steps=STEPS, analysis=Thresholds())
    assert same.revision == PLAN.revision
    assert RolloutPlan(baseline="v1", candidate="v2", steps=STEPS[:2]).revision != PLAN.revision


TOLERANT = RolloutPlan(
    baseline="v1",
    candidate="v2",
    steps=STEPS,
    analysis=Thresholds(
        interval_s=INTERVAL_S, min_samples=50, max_error_rate_ratio=2.0,
        max_error_rate_increase=0.02, failure_threshold=2,
    ),
)  # fmt: skip


def test_with_a_failure_threshold_a_passing_blip_does_not_roll_back():
    # the candidate errs for 5 s in the first step: every window holding those seconds fails,
    # but they overlap each other, so they count once; the rollout is held, then goes on
    rollout = Rollout.start(TOLERANT, 0.0)
    drive(rollout, 0.0, 100.0, blip)
    status = rollout.status
    assert (status.phase, status.failures) == (Phase.PROGRESSING, 1)
    drive(rollout, 100.0, 800.0, blip)
    status = rollout.status
    assert status.phase is Phase.PROMOTED
    assert status.failures == 1
    # the first step waited for a passing window after the blip, then went on as planned
    assert status.history[0] == (0.0, 10)
    assert status.history[1][1] == 50
    assert status.history[1][0] >= 60.0 + INTERVAL_S


def test_a_lasting_regression_rolls_back_after_threshold_separate_windows():
    rollout = Rollout.start(TOLERANT, 0.0)
    at = drive(rollout, 0.0, 600.0, bad)
    status = rollout.status
    assert status.phase is Phase.ROLLED_BACK
    assert status.failures == 2
    # the first failing window, then one that does not overlap it: within two intervals
    assert INTERVAL_S < at <= 2 * INTERVAL_S + INTERVAL_S / ANALYSIS_SLICES
    assert status.history == ((0.0, 10), (at, 0))


def test_counted_failures_survive_a_reload():
    rollout = Rollout.start(TOLERANT, 0.0)
    drive(rollout, 0.0, 100.0, blip)
    restored = Rollout.restore(TOLERANT, rollout.status, 100.0)
    assert restored.status.failures == 1
    assert json.loads(json.dumps(restored.status.to_json()))["failures"] == 1
    assert "analysis failed" not in restored.status.message  # later windows passed
    # one more failing window after the reload is the second: back at once
    at = drive(restored, 100.0, 600.0, bad)
    assert restored.status.phase is Phase.ROLLED_BACK
    assert restored.status.failures == 2
    assert at <= 100.0 + INTERVAL_S


FORGIVING = RolloutPlan(
    baseline="v1",
    candidate="v2",
    steps=STEPS,
    analysis=dataclasses.replace(TOLERANT.analysis, failure_window_s=4 * INTERVAL_S),
)


def two_blips(now: float, variant: str) -> tuple[float, float, float]:
    """The candidate errs on half its requests for 5 s, 60 s and 360 s in."""
    bad_now = 60.0 <= now < 65.0 or 360.0 <= now < 365.0
    return (0.5 if variant == "v2" and bad_now else 0.02, 0.2, 0.02)


@pytest.mark.parametrize(
    ("plan", "health", "errors_from"),
    [(PLAN, blip, 60.0), (TOLERANT, two_blips, 360.0)],
    ids=["a-blip-at-the-default-threshold", "blips-minutes-apart-without-a-window"],
)
def test_rolls_back_within_an_interval_of_the_last_failure_it_needs(plan, health, errors_from):
    rollout = Rollout.start(plan, 0.0)
    at = drive(rollout, 0.0, 800.0, health)
    assert rollout.status.phase is Phase.ROLLED_BACK
    assert errors_from < at <= errors_from + 5.0 + INTERVAL_S


def test_a_failure_window_forgives_blips_minutes_apart():
    rollout = Rollout.start(FORGIVING, 0.0)
    drive(rollout, 0.0, 300.0, two_blips)
    status = rollout.status
    assert status.phase is Phase.PROGRESSING
    assert status.failures == 0  # the first blip's failure was judged over 120 s ago
    assert status.failure_times == ()
    drive(rollout, 300.0, 400.0, two_blips)
    status = rollout.status
    assert (status.phase, status.failures) == (Phase.PROGRESSING, 1)
    assert 360.0 < status.failure_times[0] <= 365.0 + INTERVAL_S
    drive(rollout, 400.0, 1000.0, two_blips)
    assert rollout.status.phase is Phase.PROMOTED


def test_a_failure_window_still_rolls_back_a_lasting_regression_as_fast():
    timed = []
    for plan in (TOLERANT, FORGIVING):
        rollout = Rollout.start(plan, 0.0)
        timed.append(drive(rollout, 0.0, 600.0, bad))
        assert rollout.status.phase is Phase.ROLLED_BACK
    assert timed[0] == timed[1]


def flaps(now: float, variant: str) -> tuple[float, float, float]:
    """The candidate errs on half its requests for 10 s of every 60 s."""
    return (0.5 if variant == "v2" and now % 60.0 < 10.0 else 0.02, 0.2, 0.02)


@pytest.mark.parametrize("plan", [TOLERANT, FORGIVING], ids=["never-forgiven", "window-120s"])
def test_failures_flapping_with_passes_still_roll_back(plan):
    # windows in between pass, but they do not forgive a failure; two counted failures a
    # minute apart are also within the 120 s window
    rollout = Rollout.start(plan, 0.0)
    drive(rollout, 0.0, 600.0, flaps)
    assert rollout.status.phase is Phase.ROLLED_BACK
    times = rollout.status.failure_times
    assert len(times) == 2
    assert times[1] - times[0] < 4 * INTERVAL_S


def test_failure_times_survive_a_reload_and_expire_after_it():
    rollout = Rollout.start(FORGIVING, 0.0)
    drive(rollout, 0.0, 100.0, blip)
    status = rollout.status
    assert status.failures == 1
    assert json.loads(json.dumps(status.to_json()))["failureTimes"] == list(status.failure_times)
    restored = Rollout.restore(FORGIVING, status, 100.0)
    assert restored.status.failure_times == status.failure_times
    drive(restored, 100.0, status.failure_times[0] + 4 * INTERVAL_S + 2.0, healthy)
    assert restored.status.failures == 0


def test_a_status_with_a_count_and_no_times_counts_from_its_last_update():
    rollout = Rollout.start(FORGIVING, 0.0)
    drive(rollout, 0.0, 100.0, blip)
    older = dataclasses.replace(rollout.status, failure_times=())
    restored = Rollout.restore(FORGIVING, older, 100.0)
    assert restored.status.failure_times == (older.updated_at,)


def test_the_odds_tool_prints_a_row_per_threshold_and_run(capsys):
    from pathlib import Path

    from loadtests.rolloutrun import odds

    scenario = Path(__file__).resolve().parents[2] / "loadtests/scenarios/rollout.yaml"
    assert odds.main([str(scenario), "--trials", "3", "--failure-thresholds", "1", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 4  # two thresholds x two runs


def test_the_odds_tool_sets_the_failure_window_where_the_threshold_allows_it(capsys):
    from pathlib import Path

    from loadtests.rolloutrun import odds

    scenario = Path(__file__).resolve().parents[2] / "loadtests/scenarios/rollout.yaml"
    args = [str(scenario), "--trials", "2", "--failure-thresholds", "2", "9",
            "--failure-window", "60s"]  # fmt: skip
    assert odds.main(args) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(("| 2 |", "| 9 |"))]
    # the scenario's interval is 10 s: 60 s allows threshold 2 (40 s and up), not 9
    assert {r.split("|")[2].strip() for r in rows if r.startswith("| 2 |")} == {"60s"}
    assert {r.split("|")[2].strip() for r in rows if r.startswith("| 9 |")} == {"–"}


def test_status_times_move_by_the_clock_offset_and_nothing_else_does():
    rollout = Rollout.start(FORGIVING, 0.0)
    drive(rollout, 0.0, 100.0, blip)
    rollout.pause(100.0)
    status = rollout.status
    assert status.last_analysis is not None
    assert status.paused_at is not None
    plain, moved = status.to_json(), status.to_json(1_000.0)
    assert status.to_json(0.0) == plain
    for key in ("startedAt", "stepStartedAt", "updatedAt", "pausedAt"):
        assert moved[key] == plain[key] + 1_000.0, key
    assert moved["failureTimes"] == [t + 1_000.0 for t in plain["failureTimes"]]
    assert moved["history"] == [[t + 1_000.0, w] for t, w in plain["history"]]
    for key in ("at", "windowStart"):
        assert moved["lastAnalysis"][key] == plain["lastAnalysis"][key] + 1_000.0
    timed = {"startedAt", "stepStartedAt", "updatedAt", "pausedAt", "failureTimes", "history"}
    assert {k: v for k, v in moved.items() if k not in timed | {"lastAnalysis"}} == {
        k: v for k, v in plain.items() if k not in timed | {"lastAnalysis"}
    }
