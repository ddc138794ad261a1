"""Run the rollout scenario: a Rollout under steady sticky load must roll a failing candidate
back by itself and promote a healthy one step by step.

    .venv/bin/python -m loadtests.rollout_scenario loadtests/scenarios/rollout.yaml \\
        [--out DIR] [--quick] [--simulate N]

Each run of the scenario (`runs:`) gets fresh simulated fleets for the baseline and the
candidate InferencePool (5xx injected at the run's rates), a fresh `sluice serve` and a fresh
load generator process; the Rollout's status is polled from `GET /rollouts` until it finishes
(plus `tail_s`). The report folder (default `/tmp/sluice-reports/<name>-<stamp>/`) holds
`report.md`, `results.json`, `rollout_weight.png`, `raw/` (one JSON line per request, the
generator specs) and `logs/` (each gateway's config and log). `--simulate N` adds the odds of
each outcome from N simulated runs of the gateway's own Rollout state machine.

Exit status: 0 when every run reached its expected phase, 1 when one did not (or could not
run), 2 for an invalid scenario. Only 127.0.0.1 is contacted; every run is bounded by
`max_run_s`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import os
import shlex
import sys
import time
from pathlib import Path

from loadtests.harness import read_scenario, report_folder
from loadtests.rolloutrun import odds as odds_mod
from loadtests.rolloutrun.analysis import RunResult, summarize
from loadtests.rolloutrun.config import ConfigCheckError
from loadtests.rolloutrun.plot import draw
from loadtests.rolloutrun.report import Report, write
from loadtests.rolloutrun.run import RunError, run_once
from loadtests.rolloutrun.spec import RolloutScenario, RolloutScenarioError, parse_rollout_scenario

REPORTS = Path("/tmp/sluice-reports")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.rollout_scenario", description=__doc__.splitlines()[0]
    )
    p.add_argument("scenario", type=Path, help="scenario YAML (loadtests/scenarios/rollout.yaml)")
    p.add_argument("--out", type=Path, help="report folder (default /tmp/sluice-reports/...)")
    p.add_argument("--quick", action="store_true", help="the scenario's quick: settings")
    p.add_argument(
        "--simulate", type=int, default=0, metavar="N",
        help="also simulate N runs of each to estimate the odds of each outcome",
    )  # fmt: skip
    return p


async def _run_all(scenario: RolloutScenario, out: Path) -> tuple[list[RunResult], dict[str, str]]:
    results: list[RunResult] = []
    failures: dict[str, str] = {}
    for run in scenario.runs:
        rates = f"{100 * run.baseline_error_rate:g} % / {100 * run.candidate_error_rate:g} %"
        print(f"run {run.name}: 5xx {rates} (baseline / candidate); expect {run.expect}")
        try:
            record = await run_once(scenario, run, out)
        except (RunError, ConfigCheckError, OSError) as exc:
            failures[run.name] = f"{type(exc).__name__}: {exc}"
            print(f"  {run.name}: could not run: {exc}", flush=True)
            continue
        results.append(summarize(record, scenario.share_window_s))
    return results, failures


def _plot(out: Path, scenario: RolloutScenario, results: list[RunResult]) -> str:
    if not results:
        return "no run finished"
    try:
        return draw(out, results, scenario.share_window_s, f"Sluice Rollout: {scenario.name}")
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[loadtest]')"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        parse = functools.partial(parse_rollout_scenario, quick=args.quick)
        scenario, raw = read_scenario(args.scenario, parse, RolloutScenarioError)
    except RolloutScenarioError as exc:
        print("invalid scenario:\n  " + "\n  ".join(exc.issues), file=sys.stderr)
        return 2
    started, t, load0 = datetime.datetime.now().astimezone(), time.monotonic(), os.getloadavg()
    out = report_folder(args.out, REPORTS, scenario.name, started)
    results, failures = asyncio.run(_run_all(scenario, out))
    odds = {r.name: odds_mod.simulate(scenario, r, args.simulate) for r in scenario.runs
            if args.simulate > 0}  # fmt: skip
    plot = _plot(out, scenario, results)
    command = shlex.join(["python", "-m", "loadtests.rollout_scenario", *sys.argv[1:]]
                         if argv is None else ["main", *argv])  # fmt: skip
    write(out, Report(scenario=scenario, raw=raw, results=results, odds=odds, started=started,
                      wall_s=time.monotonic() - t, command=command, plot=plot,
                      failures=failures, loadavg=(load0, os.getloadavg())))  # fmt: skip
    for r in results:
        ended = "-" if r.finished_from_rollout_s is None else f"{r.finished_from_rollout_s:.1f} s"
        print(f"{r.name}: {r.outcome} after {ended} (expected {r.expect}: "
              f"{'ok' if r.passed else 'NOT MET'})")  # fmt: skip
    print(f"report: {out / 'report.md'}")
    return 0 if results and all(r.passed for r in results) and not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
