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
import asyncio
import contextlib
import datetime
import logging
import shlex
import sys
import time
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

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


def load_scenario(path: Path, *, quick: bool) -> tuple[Scenario, dict[str, Any]]:
    """Read and parse a scenario file; ScenarioError lists every issue."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError([f"{path}: {exc}"]) from exc
    scenario = parse_scenario(raw, quick=quick)
    return scenario, raw


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = _parser().parse_args(argv)
    args.command = shlex.join(["sluice", "loadtest", *argv])
    try:
        scenario, raw = load_scenario(args.scenario, quick=args.quick)
        scenario = _only(scenario, args.policy)
    except ScenarioError as exc:
        for issue in exc.issues:
            print(f"{args.scenario}: {issue}", file=sys.stderr)
        return 2
    started = datetime.datetime.now().astimezone()
    out = args.out or DEFAULT_REPORTS / f"{scenario.name}-{started:%Y%m%d-%H%M%S}"
    for sub in ("logs", "raw"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    progress = Progress(
        sys.stderr, trials=len(scenario.policies) * len(scenario.points),
        trial_s=scenario.warmup_s + scenario.duration_s,
    )  # fmt: skip
    progress.finish(_plan_line(scenario, progress))
    t_start = time.monotonic()
    try:
        with _logging_to(out / "logs" / "harness.log"):
            results = _run(_run_all(scenario, out, progress))
    except KeyboardInterrupt:
        print("\ninterrupted: every process started for the run has been stopped", file=sys.stderr)
        return 130
    info = _finish(scenario, raw, args, out, results, started, time.monotonic() - t_start)
    progress.finish(f"done in {info.wall_s:.0f} s; report: {out / 'report.md'}")
    return 1 if any(r.failure for r in results) else 0


@contextlib.contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """Log records of this process (the fleet's aiohttp servers, e.g. a client that went away
    mid-stream when a trial ends) go to a file in the report, not over the progress line."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


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


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    raise SystemExit(main())
