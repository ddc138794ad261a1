"""The numbers of one run, from its polls, the Rollout's final status and the request records.

Pure: a `RunRecord` in, a frozen `RunResult` out. Times are seconds after the load started
(T0) unless named `*_from_rollout_s` (after the Rollout's own start, which precedes T0 by the
gateway's readiness wait). The weight timeline is the Rollout's own `history` (exact, on the
gateway's clock); the polls only show that the admin API reported it. The observed share is
what clients saw: the `x-sluice-variant` of the requests *sent* in each window.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from loadtests.stats import Percentiles

from .config import BASELINE, CANDIDATE
from .run import RunRecord
from .traffic import Request


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ShareWindow:
    """Requests sent in [start, start + width): how many each variant answered, and failed."""

    start_s: float
    baseline: int
    candidate: int
    baseline_errors: int
    candidate_errors: int
    weight: int  # the Rollout's candidate weight at the window's middle

    @property
    def share(self) -> float | None:
        total = self.baseline + self.candidate
        return self.candidate / total if total else None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    at_s: float  # after T0
    from_rollout_s: float
    weight: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    name: str
    expect: str
    outcome: str  # the Rollout's last phase
    passed: bool
    message: str
    baseline_error_rate: float  # injected
    candidate_error_rate: float
    rollout_start_s: float  # the Rollout's start, after T0 (negative: before the load)
    finished_from_rollout_s: float | None  # when the phase became terminal
    transitions: tuple[Transition, ...]
    last_analysis: dict[str, Any] | None  # as served by GET /rollouts
    windows: tuple[ShareWindow, ...]
    sent: int
    answered: dict[str, int]  # by variant ("" = no variant header)
    failed: dict[str, int]  # by variant: 5xx, transport errors, in-stream errors
    error_kinds: dict[str, int]
    e2e_s: Percentiles
    lag_p99_ms: float
    polls: int
    clock_ok: bool
    cpu_s: dict[str, float]
    wall_s: float


def summarize(rec: RunRecord, window_s: float) -> RunResult:
    status = rec.status
    transitions = tuple(
        Transition(at_s=t - rec.t0, from_rollout_s=t - rec.t0 - rec.rollout_start_t, weight=w)
        for t, w in status.get("history", [])
    )
    outcome = str(status.get("phase", "unknown"))
    finished = None
    if outcome in ("RolledBack", "Promoted"):
        finished = float(status["updatedAt"]) - rec.t0 - rec.rollout_start_t
    sent = [r for r in rec.requests if not _dropped(r)]
    e2e = [r.e2e for r in sent if r.e2e is not None and r.error is None]
    lags = sorted(r.lag for r in sent)
    return RunResult(
        name=rec.spec.name, expect=rec.spec.expect, outcome=outcome,
        passed=outcome == rec.spec.expect, message=str(status.get("message", "")),
        baseline_error_rate=rec.spec.baseline_error_rate,
        candidate_error_rate=rec.spec.candidate_error_rate,
        rollout_start_s=rec.rollout_start_t, finished_from_rollout_s=finished,
        transitions=transitions, last_analysis=status.get("lastAnalysis"),
        windows=share_windows(sent, transitions, window_s),
        sent=len(sent),
        answered=dict(Counter(r.variant for r in sent)),
        failed=dict(Counter(r.variant for r in sent if _failed(r))),
        error_kinds=dict(Counter(_kind(r.error) for r in rec.requests if r.error)),
        e2e_s=Percentiles.of(e2e) if e2e else Percentiles(p50=math.nan, p90=math.nan,
                                                          p99=math.nan),
        lag_p99_ms=lags[min(len(lags) - 1, int(0.99 * len(lags)))] * 1e3 if lags else math.nan,
        polls=len(rec.polls), clock_ok=rec.clock_ok, cpu_s=rec.cpu_s,
        wall_s=rec.wall_s,
    )  # fmt: skip


def share_windows(
    requests: Sequence[Request], transitions: Sequence[Transition], width_s: float
) -> tuple[ShareWindow, ...]:
    """Per window of due times: the variants that answered (requests without a variant, e.g.
    transport errors, are left out) and the candidate weight in force at the window's middle."""
    if not requests:
        return ()
    count = math.ceil(max(r.t for r in requests) / width_s)
    tallies = [Counter[str]() for _ in range(count)]
    for r in requests:
        if r.variant in (BASELINE, CANDIDATE):
            index = min(count - 1, int(r.t // width_s))
            tallies[index][r.variant] += 1
            tallies[index][r.variant + "!"] += _failed(r)
    return tuple(
        ShareWindow(
            start_s=i * width_s,
            baseline=tally[BASELINE],
            candidate=tally[CANDIDATE],
            baseline_errors=tally[BASELINE + "!"],
            candidate_errors=tally[CANDIDATE + "!"],
            weight=weight_at(transitions, (i + 0.5) * width_s),
        )
        for i, tally in enumerate(tallies)
    )


def weight_at(transitions: Sequence[Transition], t: float) -> int:
    weight = transitions[0].weight if transitions else 0
    for tr in transitions:
        if tr.at_s <= t:
            weight = tr.weight
    return weight


def _dropped(r: Request) -> bool:
    return r.error is not None and r.error.startswith("dropped")


def _failed(r: Request) -> bool:
    """5xx, a transport or in-stream error; not a request cut off when the run ended."""
    if r.error is not None and r.error.startswith("unfinished"):
        return False
    return r.status >= 500 or (r.error is not None and r.status in (0, 200))


def _kind(error: str | None) -> str:
    text = error or ""
    if text.startswith("HTTP "):
        return text.split(":", 1)[0]
    return text.split(":", 1)[0][:60]
