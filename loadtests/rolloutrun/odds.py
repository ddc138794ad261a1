"""How likely is each run's expected outcome, given the scenario's traffic? A Monte Carlo of
the gateway's own Rollout state machine (`routing.rollout.Rollout`) on synthetic requests.

Pure: no I/O, no clock (a simulated one, ticked every `TICK_S` as `gateway/rollouts.py` does),
a seeded RNG. Requests arrive as a Poisson stream at the scenario's rate, go to the candidate
with the current weight's probability (sticky assignment over thousands of users splits the
same way on average) and fail with their variant's injected rate. Latency checks are not
simulated (no TTFT/TPOT is observed), only error rates.

    python -m loadtests.rolloutrun.odds loadtests/scenarios/rollout.yaml \
        [--trials 400] [--failure-thresholds 1 2 3] [--step-seconds 300] [--failure-window 2m]

prints, for each run of the scenario and each analysis ``failureThreshold``, how often the
rollout rolled back or was promoted and the median time it took. ``--step-seconds`` gives
every timed step that duration instead (a longer rollout: more windows judged, more chances
to fail by luck). ``--failure-window`` sets the analysis' ``failureWindow`` (counted failures
older than that are forgiven) for every threshold it allows (at least 2 × threshold × interval).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from routing.durations import parse_duration
from routing.rollout import Phase, Rollout, RolloutPlan, Step, Thresholds, min_failure_window

from .spec import RolloutScenario, RunSpec, parse_rollout_scenario

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
    bounds: dict[str, Any] = {
        ours: float(analysis[name]) for name, ours in _THRESHOLDS.items() if name in analysis
    }
    thresholds = Thresholds(
        interval_s=parse_duration(str(analysis.get("interval", "1m"))),
        min_samples=int(analysis.get("minSamples", 50)),
        failure_threshold=int(analysis.get("failureThreshold", 1)),
        failure_window_s=(
            parse_duration(str(analysis["failureWindow"])) if "failureWindow" in analysis else None
        ),
        **bounds,
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Odds of each run's outcome, by failureThreshold.")
    p.add_argument("scenario", type=Path)
    p.add_argument("--trials", type=int, default=400)
    p.add_argument("--failure-thresholds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--step-seconds", type=float, default=None)
    p.add_argument("--failure-window", default=None, help="a duration, e.g. 2m")
    args = p.parse_args(argv)
    raw = yaml.safe_load(args.scenario.read_text(encoding="utf-8"))
    if args.step_seconds is not None:
        steps = raw["rollout"]["steps"]
        for step in steps:
            if step.get("duration") not in ("0s", 0):
                step["duration"] = f"{args.step_seconds:g}s"
        raw["max_run_s"] = args.step_seconds * len(steps) + 100
    base = parse_rollout_scenario(raw)
    print("| failureThreshold | failureWindow | run | rolled back | promoted | median rollback s "
          "| median promotion s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    window = None if args.failure_window is None else parse_duration(args.failure_window)
    for threshold in args.failure_thresholds:
        analysis = {**(base.rollout.get("analysis") or {}), "failureThreshold": threshold}
        interval = parse_duration(str(analysis.get("interval", "1m")))
        least = min_failure_window(Thresholds(interval_s=interval, failure_threshold=threshold))
        if window is not None and window >= least:
            analysis["failureWindow"] = f"{window:g}s"
        scenario = dataclasses.replace(base, rollout={**base.rollout, "analysis": analysis})
        for run in scenario.runs:
            o = simulate(scenario, run, args.trials, seed=1)
            print(f"| {threshold} | {analysis.get('failureWindow', '–')} | {run.name} "
                  f"| {o.share('RolledBack'):.1%} "
                  f"| {o.share('Promoted'):.1%} | {o.median_rollback_s} "
                  f"| {o.median_promotion_s} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
