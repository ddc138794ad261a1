"""`python -m loadtests.closedloop SCENARIO [--out DIR] [--quick]`: run a closed-loop scenario
and write its report folder (default `reports/<name>-<timestamp>/`): report.md, results.json,
timeline.png, raw/ (one JSON line per request) and logs/ (gateway and generator logs, the
generated gateway configs). Exit status: 0 when it ran, 1 when it could not, 2 for an invalid
scenario.
"""

import argparse
import datetime
import functools
import shlex
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

from ..harness import logging_to, read_scenario, report_folder, run_async
from ..targets import TargetError
from .analysis import PolicyResult
from .report import TIMELINE_PNG, RunInfo, draw_timeline, write_markdown, write_results
from .run import GeneratorError, run_scenario
from .scenario import ClosedLoopError, ClosedLoopScenario, parse_closed_loop

T = TypeVar("T")
DEFAULT_REPORTS = Path("reports")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.closedloop", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("scenario", type=Path, help="scenario YAML (closed-loop.yaml)")
    parser.add_argument("--out", type=Path, help="report folder (reports/<name>-<timestamp>/)")
    parser.add_argument("--quick", action="store_true", help="the scenario's quick: variant")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = _parser().parse_args(argv)
    try:
        parse = functools.partial(parse_closed_loop, quick=args.quick)
        scenario, raw = read_scenario(args.scenario, parse, ClosedLoopError)
    except ClosedLoopError as exc:
        for issue in exc.issues:
            print(f"{args.scenario}: {issue}", file=sys.stderr)
        return 2
    started = datetime.datetime.now().astimezone()
    out = report_folder(args.out, DEFAULT_REPORTS, scenario.name, started)
    print(_plan_line(scenario), file=sys.stderr, flush=True)
    t_start = time.monotonic()
    try:
        with logging_to(out / "logs" / "harness.log"):
            results = run_async(run_scenario(scenario, out))
    except (TargetError, GeneratorError, OSError) as exc:
        print(f"failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: every process started for the run has been stopped", file=sys.stderr)
        return 130
    wall_s = time.monotonic() - t_start
    _finish(scenario, raw, args, argv, out, results, started, wall_s)
    print(f"done in {wall_s:.0f} s; report: {out / 'report.md'}", file=sys.stderr)
    return 0


def _plan_line(s: ClosedLoopScenario) -> str:
    names = ", ".join(p.name for p in s.policies)
    how = "side by side" if s.concurrent else "one after the other"
    runs = 1 if s.concurrent else len(s.policies)
    return (
        f"closed loop {s.name}: {names} ({how}); {s.load.end_s:g} s of load "
        f"(~{s.load.expected_requests():.0f} requests, peak {s.load.peak_rps:g} req/s) "
        f"+ up to {s.drain_s:g} s drain, x{runs}"
    )


def _finish(
    scenario: ClosedLoopScenario,
    raw: dict[str, Any],
    args: argparse.Namespace,
    argv: list[str],
    out: Path,
    results: list[PolicyResult],
    started: datetime.datetime,
    wall_s: float,
) -> None:
    plot: str | None = None
    note = ""
    try:
        draw_timeline(out / TIMELINE_PNG, scenario, results)
        plot = TIMELINE_PNG
    except ImportError:
        note = "No plot: matplotlib is not installed (pip install -e '.[loadtest]')."
    info = RunInfo(
        started=started, wall_s=wall_s,
        command=shlex.join(["python", "-m", "loadtests.closedloop", *argv]),
        scenario_path=str(args.scenario), quick=args.quick, plot=plot, plot_note=note,
    )  # fmt: skip
    write_results(out / "results.json", scenario, raw, info, results)
    write_markdown(out / "report.md", scenario, info, results)
