"""`sluice loadtest SCENARIO.yaml [--out DIR] [--quick] [--policy NAME ...]`: run a scenario and
write its report folder.

For each policy, for each load point: a fresh simulated fleet, a fresh target (a `sluice serve`
on a generated config, an external command, or an external URL), open-loop Poisson load from
separate generator processes, then the numbers. Progress is shown live on stderr; the report
folder (default `reports/<scenario>-<timestamp>/`) gets report.md, results.json, PNG plots,
raw/ (one JSON line per request) and logs/ (target and generator logs, generated configs).
Exit status: 0 when every trial ran, 1 when one could not, 2 for an invalid scenario.
"""

import argparse
import datetime
import functools
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from .harness import logging_to, read_scenario, report_folder, run_async
from .progress import DEFAULT_OVERHEAD_S, Progress
from .report import RunInfo, write_markdown, write_results
from .scenario import Scenario, ScenarioError, parse_scenario
from .stats import TrialResult
from .trial import TrialPlan, run_trial

T = TypeVar("T")
DEFAULT_REPORTS = Path("reports")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice loadtest", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("scenario", type=Path, help="scenario YAML (see loadtests/scenarios/)")
    parser.add_argument("--out", type=Path, help="report folder (reports/<name>-<timestamp>/)")
    parser.add_argument("--quick", action="store_true", help="short warm-up/duration: a smoke run")
    parser.add_argument(
        "--policy", action="append", default=None, help="run only this policy (repeatable)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = _parser().parse_args(argv)
    args.command = shlex.join(["sluice", "loadtest", *argv])
    try:
        scenario, raw = read_scenario(
            args.scenario, functools.partial(parse_scenario, quick=args.quick), ScenarioError
        )
        scenario = _only(scenario, args.policy)
    except ScenarioError as exc:
        for issue in exc.issues:
            print(f"{args.scenario}: {issue}", file=sys.stderr)
        return 2
    started = datetime.datetime.now().astimezone()
    out = report_folder(args.out, DEFAULT_REPORTS, scenario.name, started)
    progress = Progress(
        sys.stderr, trials=len(scenario.policies) * len(scenario.points),
        trial_s=scenario.warmup_s + scenario.duration_s,
    )  # fmt: skip
    progress.finish(_plan_line(scenario, progress))
    t_start = time.monotonic()
    try:
        with logging_to(out / "logs" / "harness.log"):
            results = run_async(_run_all(scenario, out, progress))
    except KeyboardInterrupt:
        print("\ninterrupted: every process started for the run has been stopped", file=sys.stderr)
        return 130
    info = _finish(scenario, raw, args, out, results, started, time.monotonic() - t_start)
    progress.finish(f"done in {info.wall_s:.0f} s; report: {out / 'report.md'}")
    return 1 if any(r.failure for r in results) else 0


def _only(scenario: Scenario, names: Sequence[str] | None) -> Scenario:
    if not names:
        return scenario
    unknown = set(names) - {p.name for p in scenario.policies}
    if unknown:
        raise ScenarioError([f"--policy: unknown {sorted(unknown)}"])
    kept = tuple(p for p in scenario.policies if p.name in names)
    return Scenario(**{**_fields(scenario), "policies": kept})


def _fields(scenario: Scenario) -> dict[str, Any]:
    return {name: getattr(scenario, name) for name in Scenario.__dataclass_fields__}


def _plan_line(s: Scenario, progress: Progress) -> str:
    trials = len(s.policies) * len(s.points)
    loads = ", ".join(f"{p.label}={p.qps:.1f}" for p in s.points)
    return (
        f"sluice loadtest {s.name}: {len(s.policies)} policies x {len(s.points)} load points "
        f"({loads} req/s) = {trials} trials of {s.warmup_s:g}+{s.duration_s:g} s "
        f"(+ drain up to {s.drain_s:g} s); about "
        f"{_minutes(progress.trials * (progress.trial_s + DEFAULT_OVERHEAD_S))}"
    )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


async def _run_all(scenario: Scenario, out: Path, progress: Progress) -> list[TrialResult]:
    results: list[TrialResult] = []
    index = 0
    for policy in scenario.policies:
        for point in scenario.points:
            plan = TrialPlan(scenario=scenario, policy=policy, point=point, index=index,
                             out_dir=out)  # fmt: skip
            result, _ = await run_trial(plan, progress)
            results.append(result)
            index += 1
    return results


def _finish(
    scenario: Scenario,
    raw: dict[str, Any],
    args: argparse.Namespace,
    out: Path,
    results: list[TrialResult],
    started: datetime.datetime,
    wall_s: float,
) -> RunInfo:
    plots: list[str] = []
    note = ""
    try:
        from .plots import draw_plots

        plots = draw_plots(out, scenario, results)
    except ImportError:
        note = "No plots: matplotlib is not installed (pip install -e '.[loadtest]')."
    info = RunInfo(
        started=started, wall_s=wall_s, command=args.command, scenario_path=str(args.scenario),
        quick=args.quick, plots=tuple(plots), plot_note=note,
    )  # fmt: skip
    write_results(out / "results.json", scenario, raw, info, results)
    write_markdown(out / "report.md", scenario, info, results)
    return info


if __name__ == "__main__":
    raise SystemExit(main())
