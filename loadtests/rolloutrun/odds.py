"""How likely is each run's expected outcome, given the scenario's traffic? A Monte Carlo of
the gateway's own Rollout state machine (`routing.rollout.Rollout`) on synthetic requests.

Pure: no I/O, no clock (a simulated one, ticked every `TICK_S` as `gateway/rollouts.py` does),
a seeded RNG. Requests arrive as a Poisson stream at the scenario's rate, go to the candidate
with the current weight's probability (sticky assignment over thousands of users splits the
same way on average) and fail with their variant's injected rate. Latency checks are not
simulated (no TTFT/TPOT is observed), only error rates.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
from collections.abc import Mapping
from typing import Any

from routing.durations import parse_duration
from routing.rollout import Phase, Rollout, RolloutPlan, Step, Thresholds

from .spec import RolloutScenario, RunSpec

TICK_S = 1.0  # gateway/rollouts.py TICK_S
_THRESHOLDS = {
    "maxErrorRateRatio": "max_error_rate_ratio",
    "maxErrorRateIncrease": "max_error_rate_increase",
}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Odds:
    """Outcomes of `trials` simulated runs of one RunSpec."""

    trials: int
    rolled_back: int
    promoted: int
    median_rollback_s: float | None  # after the Rollout's start
    median_promotion_s: float | None

    def share(self, phase: str) -> float:
        n = self.rolled_back if phase == "RolledBack" else self.promoted
        return n / self.trials if self.trials else 0.0


def plan_of(scenario: RolloutScenario) -> RolloutPlan:
    """The Rollout plan the gateway builds from the scenario (error-rate checks only)."""
    analysis: Mapping[str, Any] = scenario.rollout.get("analysis") or {}
    thresholds = Thresholds(
        interval_s=parse_duration(str(analysis.get("interval", "1m"))),
        min_samples=int(analysis.get("minSamples", 50)),
        **{ours: float(analysis[yaml]) for yaml, ours in _THRESHOLDS.items() if yaml in analysis},
    )
    steps = tuple(Step(weight=w, duration_s=d) for w, d in scenario.steps)
    return RolloutPlan(baseline="b", candidate="c", steps=steps, analysis=thresholds)


def simulate(scenario: RolloutScenario, run: RunSpec, trials: int, seed: int = 0) -> Odds:
    plan = plan_of(scenario)
    ends = [
        _one(plan, run, scenario.load.qps, scenario.max_run_s, random.Random(f"{seed}/{i}"))
        for i in range(trials)
    ]
    back = [t for phase, t in ends if phase is Phase.ROLLED_BACK]
    done = [t for phase, t in ends if phase is Phase.PROMOTED]
    return Odds(
        trials=trials,
        rolled_back=len(back),
        promoted=len(done),
        median_rollback_s=statistics.median(back) if back else None,
        median_promotion_s=statistics.median(done) if done else None,
    )


def _one(
    plan: RolloutPlan, run: RunSpec, qps: float, horizon_s: float, rng: random.Random
) -> tuple[Phase, float]:
    rollout = Rollout.start(plan, 0.0)
    t, next_tick = 0.0, TICK_S
    while t < horizon_s:
        t += rng.expovariate(qps)
        while next_tick <= t:
            if rollout.tick(next_tick).phase.is_terminal:
                return rollout.status.phase, next_tick
            next_tick += TICK_S
        is_candidate = rng.random() * 100 < rollout.weight
        rate = run.candidate_error_rate if is_candidate else run.baseline_error_rate
        rollout.observe(t, "c" if is_candidate else "b", rng.random() >= rate, None, None)
    return rollout.status.phase, horizon_s
