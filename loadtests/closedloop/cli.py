"""`python -m loadtests.closedloop SCENARIO [--out DIR] [--quick]`: run a closed-loop scenario
and write its report folder (default `reports/<name>-<timestamp>/`): report.md, results.json,
timeline.png, raw/ (one JSON line per request) and logs/ (gateway and generator logs, the
generated gateway configs). Exit status: 0 when it ran, 1 when it could not, 2 for an invalid
scenario.
"""

import argparse
import asyncio
import contextlib
import datetime
import logging
import shlex
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

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


def load_scenario(path: Path, *, quick: bool) -> tuple[ClosedLoopScenario, dict[str, Any]]:
    """Read and parse a scenario file; ClosedLoopError lists every issue."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ClosedLoopError([f"{path}: {exc}"]) from exc
    return parse_closed_loop(raw, quick=quick), raw


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = _parser().parse_args(argv)
    try:
        scenario, raw = load_scenario(args.scenario, quick=args.quick)
    except ClosedLoopError as exc:
        for issue in exc.issues:
            print(f"{args.scenario}: {issue}", file=sys.stderr)
        return 2
    started = datetime.datetime.now().astimezone()
    out: Path = args.out or DEFAULT_REPORTS / f"{scenario.name}-{started:%Y%m%d-%H%M%S}"
    for sub in ("logs", "raw"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    print(_plan_line(scenario), file=sys.stderr, flush=True)
    t_start = time.monotonic()
    try:
        with _logging_to(out / "logs" / "harness.log"):
            results = _run(run_scenario(scenario, out))
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


@contextlib.contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """Log records of this process (the fleet's aiohttp servers) go to a file in the report."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
