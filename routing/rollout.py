"""Progressive rollout: the candidate's traffic share moves through steps while an analysis
compares it with the baseline, and falls to 0 % as soon as the comparison fails.

An h11-style state machine. Events go in (``observe`` for each finished request, ``tick`` on a
timer, ``pause``/``resume``/``promote``/``abort`` from an operator); a ``RolloutStatus`` comes
out, and ``gateway/`` applies ``Rollout.weight`` to the split (``split_weights``). This module
never reads a clock (every event carries ``now`` from one monotonic clock) and does no I/O.

Analysis window. The analysis interval ``I`` is cut into ``ANALYSIS_SLICES`` slices on a grid
that starts with the rollout. At each slice boundary the last ``I`` seconds (the previous
``ANALYSIS_SLICES`` slices) are judged, so a lasting failure is caught by the first window that
shows it: at most ``I + I/ANALYSIS_SLICES`` after it starts, typically about ``I/2`` for a
clear regression (Flagger's bound is ``interval × threshold``). Memory is bounded: per slice
and variant, two counters and two sparse log-bucket histograms of at most ``_BUCKETS`` entries.
p95s are read from the histograms: buckets are 9 % wide, so a p95 is within ±4.5 %.

Verdicts. A window is Inconclusive unless both variants have ``min_samples`` requests in it.
A window that fails counts as a failure when it does not overlap the last one counted (its own
stretch of traffic: overlapping windows share their requests, so they are not separate
evidence); after ``failure_threshold`` counted failures (default 1: the first) the rollout rolls
back at once, even on a window shorter than ``I`` at the start: failing early is the safe
direction. A threshold above 1 guards against rolling back on noise, which repeated testing at
low error rates makes likely, at the price of detection time (about ``failure_threshold × I``).
Passing windows in between do not forgive a failure (a regression that flaps still rolls back).
Without ``failure_window_s`` a counted failure is never forgiven, so the odds of a chance
rollback grow with the rollout's length; with it, only failures judged within the last
``failure_window_s`` count, so a long rollout of a healthy candidate does not collect chance
failures minutes apart, while a lasting regression (failing every window) still rolls back
after ``failure_threshold`` windows. A failing window always takes back a step's pass, so a
step advances only after a passing window that came later.

A step advances once its duration has passed *and* a full-length window lying wholly inside
the step has passed, so every weight is judged at that weight (a step of duration 0 advances at
once). After the last step the candidate gets 100 %. While the candidate has 100 % the baseline
gets no requests, so the candidate is compared with the baseline's last window that had enough
requests (``baseline_reference``).

Error-rate checks. With both ``max_error_rate_ratio`` and ``max_error_rate_increase`` set, the
candidate fails only when it exceeds both: the absolute bound is a noise floor where the
baseline's rate is near 0 (1 error against 0 is an infinite ratio), and the ratio bound keeps a
high baseline rate from hiding a large regression.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import enum
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "ANALYSIS_SLICES",
    "Analysis",
    "Phase",
    "Rollout",
    "RolloutPlan",
    "RolloutStatus",
    "Step",
    "Thresholds",
    "VariantStats",
    "Verdict",
    "judge",
    "min_failure_window",
    "split_weights",
]

ANALYSIS_SLICES = 6
_LOWEST_S = 1e-4
_GROWTH = 2.0**0.125
_BUCKETS = 213  # 1e-4 s · GROWTH**213 ≈ 1e4 s
_HIGHEST_S = _LOWEST_S * _GROWTH**_BUCKETS
_QUANTILE = 0.95


class Phase(enum.StrEnum):
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"

    @property
    def is_terminal(self) -> bool:
        return self is Phase.PROMOTED or self is Phase.ROLLED_BACK


class Verdict(enum.StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    weight: int  # the candidate's share in percent, 0..100
    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    """Pass conditions of one analysis window; None disables a check."""

    interval_s: float = 60.0
    min_samples: int = 50
    failure_threshold: int = 1  # failing windows (not overlapping each other) before a rollback
    # counted failures older than this are forgiven (None: never)
    failure_window_s: float | None = None
    max_error_rate_ratio: float | None = None
    max_error_rate_increase: float | None = None
    max_ttft_p95_ratio: float | None = None
    max_tpot_p95_ratio: float | None = None


def min_failure_window(t: Thresholds) -> float:
    """The shortest ``failure_window_s`` allowed: a lasting regression fails about once per
    interval (less often when windows lack samples) and must reach the threshold before its
    first counted failure is forgiven; at exactly ``threshold × interval`` the odds tool
    measured detection slowing (median 45 → 54 s at threshold 3), at twice that not."""
    return 2 * t.failure_threshold * t.interval_s


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutPlan:
    """What a rollout does: variant names (backendRef or model-rewrite target names), steps,
    and the analysis (None: steps advance on time alone)."""

    baseline: str
    candidate: str
    steps: tuple[Step, ...]
    analysis: Thresholds | None = None

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a rollout needs at least one step")
        if self.baseline == self.candidate:
            raise ValueError("the baseline and the candidate must differ")
        if any(not 0 <= s.weight <= 100 or s.duration_s < 0 for s in self.steps):
            raise ValueError("step weights lie in [0, 100] and durations are >= 0")
        t = self.analysis
        if t is not None and (t.interval_s <= 0 or t.min_samples < 1 or t.failure_threshold < 1):
            raise ValueError(
                "the analysis interval is > 0, minSamples >= 1 and failureThreshold >= 1"
            )
        window = None if t is None else t.failure_window_s
        if t is not None and window is not None and window < min_failure_window(t):
            raise ValueError("failureWindow must be at least 2 × failureThreshold × interval")

    @property
    def revision(self) -> str:
        """Changes with the baseline, candidate or steps (a restart); thresholds may change
        without restarting."""
        steps = tuple((s.weight, s.duration_s) for s in self.steps)
        text = repr((self.baseline, self.candidate, steps))
        return blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class VariantStats:
    """One variant's numbers over one analysis window."""

    requests: int = 0
    errors: int = 0
    ttft_samples: int = 0
    ttft_p95_s: float | None = None
    tpot_samples: int = 0
    tpot_p95_s: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Analysis:
    """One judged window: the measured numbers and, on Fail, the checks that failed (named as
    in YAML). A ratio is None when it cannot be computed (no samples, a zero denominator)."""

    at: float
    window_start: float
    verdict: Verdict
    baseline: VariantStats
    candidate: VariantStats
    baseline_is_reference: bool = False
    error_rate_ratio: float | None = None
    error_rate_increase: float | None = None
    ttft_p95_ratio: float | None = None
    tpot_p95_ratio: float | None = None
    failed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutStatus:
    """Everything needed to report a rollout and to resume it after a config reload. Times are
    on the clock of the ``now`` arguments; ``history`` is every (time, candidate weight)."""

    revision: str
    phase: Phase
    step: int
    weight: int
    started_at: float
    step_started_at: float
    updated_at: float
    paused_at: float | None = None
    step_passed: bool = False
    message: str = ""
    last_analysis: Analysis | None = None
    baseline_reference: VariantStats | None = None
    history: tuple[tuple[float, int], ...] = ()
    failures: int = 0  # failing windows counted toward the failure threshold
    failure_times: tuple[float, ...] = ()  # when each of them was judged

    def to_json(self, clock_offset: float = 0.0) -> dict[str, object]:
        """A JSON-ready mapping (camelCase keys, as the admin API uses), every time moved by
        ``clock_offset`` (the admin API passes wall clock − this clock: Unix seconds)."""
        if not clock_offset:
            return _encode_fields(self)

        def moved(t: float) -> float:
            return t + clock_offset

        analysis = self.last_analysis
        shifted = dataclasses.replace(
            self,
            started_at=moved(self.started_at),
            step_started_at=moved(self.step_started_at),
            updated_at=moved(self.updated_at),
            paused_at=None if self.paused_at is None else moved(self.paused_at),
            last_analysis=None
            if analysis is None
            else dataclasses.replace(
                analysis, at=moved(analysis.at), window_start=moved(analysis.window_start)
            ),
            history=tuple((moved(t), w) for t, w in self.history),
            failure_times=tuple(map(moved, self.failure_times)),
        )
        return _encode_fields(shifted)


def judge(
    t: Thresholds,
    baseline: VariantStats,
    candidate: VariantStats,
    reference: VariantStats | None = None,
    *,
    at: float,
    window_start: float,
) -> Analysis:
    """The verdict on one window. Inconclusive without ``min_samples`` requests on both sides
    (the baseline side may be ``reference`` when the window's own baseline has too few); a
    latency check without ``min_samples`` latency samples on both sides is skipped."""
    base, from_reference = baseline, False
    if base.requests < t.min_samples and reference is not None:
        base, from_reference = reference, True
    n = t.min_samples
    enough = base.requests >= n and candidate.requests >= n
    rate_b, rate_c = base.error_rate, candidate.error_rate
    ttft = _ratio(
        base.ttft_p95_s, candidate.ttft_p95_s, min(base.ttft_samples, candidate.ttft_samples) >= n
    )
    tpot = _ratio(
        base.tpot_p95_s, candidate.tpot_p95_s, min(base.tpot_samples, candidate.tpot_samples) >= n
    )
    failed, checked = _checks(t, rate_b, rate_c, ttft, tpot) if enough else ((), False)
    return Analysis(
        at=at,
        window_start=window_start,
        verdict=Verdict.FAIL if failed else Verdict.PASS if checked else Verdict.INCONCLUSIVE,
        baseline=base,
        candidate=candidate,
        baseline_is_reference=from_reference,
        error_rate_ratio=_ratio(rate_b, rate_c, base.requests > 0 and candidate.requests > 0),
        error_rate_increase=rate_c - rate_b if base.requests and candidate.requests else None,
        ttft_p95_ratio=ttft,
        tpot_p95_ratio=tpot,
        failed=failed,
    )


def _ratio(base: float | None, candidate: float | None, enough: bool) -> float | None:
    if not enough or base is None or candidate is None or base <= 0:
        return None
    return candidate / base


def _checks(
    t: Thresholds, rate_b: float, rate_c: float, ttft: float | None, tpot: float | None
) -> tuple[tuple[str, ...], bool]:
    """The failed checks (YAML names) and whether any check could be evaluated."""
    errors: list[tuple[str, bool]] = []
    if t.max_error_rate_ratio is not None:
        errors.append(("maxErrorRateRatio", rate_c > t.max_error_rate_ratio * rate_b))
    if t.max_error_rate_increase is not None:
        errors.append(("maxErrorRateIncrease", rate_c - rate_b > t.max_error_rate_increase))
    failed = [name for name, _ in errors] if errors and all(o for _, o in errors) else []
    checked = bool(errors)
    for name, limit, ratio in (
        ("maxTTFTp95Ratio", t.max_ttft_p95_ratio, ttft),
        ("maxTPOTp95Ratio", t.max_tpot_p95_ratio, tpot),
    ):
        if limit is not None and ratio is not None:
            checked = True
            if ratio > limit:
                failed.append(name)
    return tuple(failed), checked


def split_weights(
    variants: Sequence[tuple[str, int]], *, baseline: str, candidate: str, weight: int
) -> tuple[tuple[str, int], ...]:
    """A rule's ``(name, weight)`` list with a rollout at ``weight`` % applied: the baseline
    and candidate share their combined configured weight (at least 1) as ``100 - weight`` to
    ``weight``; any other variant keeps its share (every weight is scaled by 100 to stay an
    integer, which changes no share and no sticky assignment). Unchanged when either name is
    missing."""
    names = {name for name, _ in variants}
    if baseline not in names or candidate not in names:
        return tuple(variants)
    pair = sum(w for name, w in variants if name in (baseline, candidate)) or 1
    out = []
    for name, w in variants:
        if name == baseline:
            out.append((name, pair * (100 - weight)))
        elif name == candidate:
            out.append((name, pair * weight))
        else:
            out.append((name, w * 100))
    return tuple(out)


class _Tally:
    """Counters and p95 histograms of one variant in one slice."""

    __slots__ = ("errors", "requests", "tpot", "ttft")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.ttft: dict[int, int] = {}
        self.tpot: dict[int, int] = {}

    def add(self, ok: bool, ttft_s: float | None, tpot_s: float | None) -> None:
        self.requests += 1
        self.errors += not ok
        if ttft_s is not None:
            bucket = _bucket(ttft_s)
            self.ttft[bucket] = self.ttft.get(bucket, 0) + 1
        if tpot_s is not None:
            bucket = _bucket(tpot_s)
            self.tpot[bucket] = self.tpot.get(bucket, 0) + 1

    def merge(self, other: _Tally) -> None:
        self.requests += other.requests
        self.errors += other.errors
        for mine, theirs in ((self.ttft, other.ttft), (self.tpot, other.tpot)):
            for bucket, count in theirs.items():
                mine[bucket] = mine.get(bucket, 0) + count

    def stats(self) -> VariantStats:
        return VariantStats(
            requests=self.requests,
            errors=self.errors,
            ttft_samples=sum(self.ttft.values()),
            ttft_p95_s=_p95(self.ttft),
            tpot_samples=sum(self.tpot.values()),
            tpot_p95_s=_p95(self.tpot),
        )


def _bucket(value_s: float) -> int:
    if not value_s > _LOWEST_S:  # also NaN
        return 0
    if value_s >= _HIGHEST_S:
        return _BUCKETS - 1
    return min(_BUCKETS - 1, int(math.log(value_s / _LOWEST_S, _GROWTH)))


def _p95(histogram: dict[int, int]) -> float | None:
    """Nearest-rank p95, as the geometric middle of its bucket."""
    total = sum(histogram.values())
    if total == 0:
        return None
    buckets = sorted(histogram)
    cumulative = list(itertools.accumulate(histogram[b] for b in buckets))
    bucket = buckets[bisect.bisect_left(cumulative, math.ceil(_QUANTILE * total))]
    return _LOWEST_S * math.pow(_GROWTH, bucket + 0.5)


@dataclass(slots=True)
class _Slice:
    index: int
    baseline: _Tally = dataclasses.field(default_factory=_Tally)
    candidate: _Tally = dataclasses.field(default_factory=_Tally)


class Rollout:
    """One rollout's live state. Build it with ``start`` or ``restore``; read it with
    ``weight`` (per request) and ``status``."""

    __slots__ = (
        "_counted_until",
        "_failure_times",
        "_history",
        "_judged",
        "_last",
        "_message",
        "_open_from",
        "_paused_at",
        "_phase",
        "_plan",
        "_reference",
        "_slices",
        "_started_at",
        "_step",
        "_step_passed",
        "_step_started_at",
        "_updated_at",
        "_weight",
    )

    def __init__(self, plan: RolloutPlan, status: RolloutStatus, now: float) -> None:
        self._plan = plan
        self._phase = status.phase
        self._step = status.step
        self._weight = status.weight
        self._started_at = status.started_at
        self._step_started_at = status.step_started_at
        self._updated_at = status.updated_at
        self._paused_at = status.paused_at
        self._step_passed = status.step_passed
        self._message = status.message
        self._last = status.last_analysis
        self._reference = status.baseline_reference
        self._history = list(status.history)
        # an older status may carry a count without times: they count from its last update
        self._failure_times = list(status.failure_times) or [status.updated_at] * status.failures
        self._slices: collections.deque[_Slice] = collections.deque(maxlen=ANALYSIS_SLICES + 1)
        # slices before this one were never recorded (a restore): no full window before it
        self._open_from = self._slice_index(now)
        self._judged = self._open_from
        # the slice where the last counted failing window ended: the next one must start there
        self._counted_until = self._open_from

    @classmethod
    def start(cls, plan: RolloutPlan, now: float) -> Rollout:
        weight = plan.steps[0].weight
        status = RolloutStatus(
            revision=plan.revision,
            phase=Phase.PROGRESSING,
            step=0,
            weight=weight,
            started_at=now,
            step_started_at=now,
            updated_at=now,
            message=f"step 1 of {len(plan.steps)}",
            history=((now, weight),),
        )
        return cls(plan, status, now)

    @classmethod
    def restore(cls, plan: RolloutPlan, status: RolloutStatus, now: float) -> Rollout:
        """Resume from ``status`` (taken on the same clock), or start afresh when the plan's
        baseline, candidate or steps changed. The unfinished window's samples are not in a
        status: the analysis starts a new window."""
        if status.revision != plan.revision or not 0 <= status.step < len(plan.steps):
            return cls.start(plan, now)
        return cls(plan, status, now)

    @property
    def plan(self) -> RolloutPlan:
        return self._plan

    @property
    def weight(self) -> int:
        """The candidate's share now, in percent."""
        return self._weight

    @property
    def status(self) -> RolloutStatus:
        return RolloutStatus(
            revision=self._plan.revision,
            phase=self._phase,
            step=self._step,
            weight=self._weight,
            started_at=self._started_at,
            step_started_at=self._step_started_at,
            updated_at=self._updated_at,
            paused_at=self._paused_at,
            step_passed=self._step_passed,
            message=self._message,
            last_analysis=self._last,
            baseline_reference=self._reference,
            history=tuple(self._history),
            failures=len(self._failure_times),
            failure_times=tuple(self._failure_times),
        )

    def observe(
        self, now: float, variant: str, ok: bool, ttft_s: float | None, tpot_s: float | None
    ) -> None:
        """Record one finished request of ``variant`` (other names are ignored). ``ok`` is
        False for an upstream failure (5xx, connect error, timeout, aborted stream)."""
        plan = self._plan
        if plan.analysis is None or self._phase.is_terminal:
            return
        if variant != plan.baseline and variant != plan.candidate:
            return
        index = self._slice_index(now)
        if not self._slices or index > self._slices[-1].index:
            self._slices.append(_Slice(index))
        current = self._slices[-1]
        tally = current.baseline if variant == plan.baseline else current.candidate
        tally.add(ok, ttft_s, tpot_s)

    def tick(self, now: float) -> RolloutStatus:
        """Judge the window that closed since the last tick, if any, then advance steps."""
        if not self._phase.is_terminal:
            self._updated_at = now
            self._judge(now)
            if self._phase is Phase.PROGRESSING:
                self._advance(now)
        return self.status

    def pause(self, now: float) -> RolloutStatus:
        """Hold the weight: the step clock stops; analysis, and so rollback, go on."""
        if self._phase is Phase.PROGRESSING:
            self._phase, self._paused_at, self._updated_at = Phase.PAUSED, now, now
            self._message = "paused"
        return self.status

    def resume(self, now: float) -> RolloutStatus:
        if self._phase is Phase.PAUSED:
            paused_at = now if self._paused_at is None else self._paused_at
            self._step_started_at += now - paused_at
            self._phase, self._paused_at = Phase.PROGRESSING, None
            self._message = f"step {self._step + 1} of {len(self._plan.steps)}"
        return self.tick(now)

    def promote(self, now: float) -> RolloutStatus:
        if not self._phase.is_terminal:
            self._finish(now, Phase.PROMOTED, "promoted by an operator")
        return self.status

    def abort(self, now: float) -> RolloutStatus:
        if not self._phase.is_terminal:
            self._finish(now, Phase.ROLLED_BACK, "aborted by an operator")
        return self.status

    def _slice_index(self, now: float) -> int:
        if self._plan.analysis is None:
            return 0
        width = self._plan.analysis.interval_s / ANALYSIS_SLICES
        return max(0, math.floor((now - self._started_at) / width))

    def _judge(self, now: float) -> None:
        t = self._plan.analysis
        index = self._slice_index(now)
        if t is None or index <= self._judged:
            return
        self._judged = index
        first = index - ANALYSIS_SLICES
        baseline, candidate = _Tally(), _Tally()
        for piece in self._slices:
            if first <= piece.index < index:
                baseline.merge(piece.baseline)
                candidate.merge(piece.candidate)
        width = t.interval_s / ANALYSIS_SLICES
        window_start = self._started_at + max(first, self._open_from) * width
        own = baseline.stats()
        self._last = judge(
            t, own, candidate.stats(), self._reference, at=now, window_start=window_start
        )
        if own.requests >= t.min_samples:
            self._reference = own
        if t.failure_window_s is not None:  # forgive failures judged before the window
            times = self._failure_times
            while times and times[0] <= now - t.failure_window_s:
                del times[0]
        if self._last.verdict is Verdict.FAIL:
            self._step_passed = False  # the step needs a passing window after this one
            if max(first, self._open_from) >= self._counted_until:
                self._failure_times.append(now)
                self._counted_until = index
            checks = ", ".join(self._last.failed)
            failures = len(self._failure_times)
            if failures >= t.failure_threshold:
                self._finish(now, Phase.ROLLED_BACK, f"rolled back: {checks}")
            else:
                paused = "paused; " if self._phase is Phase.PAUSED else ""
                self._message = (
                    f"{paused}step {self._step + 1}: analysis failed ({checks}), failure "
                    f"{failures} of {t.failure_threshold}"
                )
        else:
            if self._last.verdict is Verdict.PASS and "analysis failed" in self._message:
                # a later window passed: the failure stays counted, the message moves on
                self._message = (
                    "paused"
                    if self._phase is Phase.PAUSED
                    else f"step {self._step + 1} of {len(self._plan.steps)}"
                )
            if (
                self._last.verdict is Verdict.PASS
                and first >= self._open_from
                and window_start >= self._step_started_at
            ):
                self._step_passed = True

    def _advance(self, now: float) -> None:
        steps = self._plan.steps
        while True:  # zero-duration steps pass in one tick
            step = steps[self._step]
            if now - self._step_started_at < step.duration_s:
                return
            if step.duration_s > 0 and self._plan.analysis is not None and not self._step_passed:
                self._message = f"step {self._step + 1}: waiting for a passing analysis"
                return
            if self._step + 1 == len(steps):
                self._finish(now, Phase.PROMOTED, "promoted: every step passed")
                return
            self._step += 1
            self._step_started_at, self._step_passed = now, False
            self._message = f"step {self._step + 1} of {len(steps)}"
            self._set_weight(now, steps[self._step].weight)

    def _finish(self, now: float, phase: Phase, message: str) -> None:
        self._phase, self._paused_at, self._updated_at = phase, None, now
        self._message = message
        self._set_weight(now, 100 if phase is Phase.PROMOTED else 0)
        self._slices.clear()

    def _set_weight(self, now: float, weight: int) -> None:
        if weight != self._weight:
            self._weight = weight
            self._history.append((now, weight))


def _encode_fields(obj: DataclassInstance) -> dict[str, object]:
    out = {_camel(f.name): _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, VariantStats):
        out["errorRate"] = obj.error_rate
    return out


def _encode(value: object) -> object:
    """Dataclasses to camelCase JSON objects, tuples to arrays, enums to their values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode_fields(value)
    if isinstance(value, tuple):
        return [_encode(item) for item in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _camel(name: str) -> str:
    if name.endswith("_s"):
        name = name[:-2] + "_seconds"
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)
