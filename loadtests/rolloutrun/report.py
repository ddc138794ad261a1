"""The report folder of a rollout scenario: `report.md` (set-up, outcome per run, the time to
rollback, the promotion timeline, the observed share per window, the simulated odds) and
`results.json` (every number, the scenario as given, the machine). Writes files only."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from loadtests.report import machine

from .analysis import RunResult
from .odds import Odds
from .spec import RolloutScenario


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    scenario: RolloutScenario
    raw: Mapping[str, Any]
    results: Sequence[RunResult]
    odds: Mapping[str, Odds]  # by run name; empty without --simulate
    started: datetime.datetime
    wall_s: float
    command: str
    plot: str  # the PNG's file name, or why there is none
    failures: Mapping[str, str]  # run name -> why it could not run at all
    loadavg: tuple[tuple[float, ...], tuple[float, ...]]  # os.getloadavg() at start and end


def write(out_dir: Path, rep: Report) -> None:
    doc = {
        "name": rep.scenario.name,
        "quick": rep.scenario.quick,
        "started": rep.started.isoformat(timespec="seconds"),
        "wall_s": round(rep.wall_s, 1),
        "command": rep.command,
        "machine": machine(),
        "scenario": dict(rep.raw),
        "runs": [_jsonable(dataclasses.asdict(r)) for r in rep.results],
        "odds": {k: dataclasses.asdict(v) for k, v in rep.odds.items()},
        "failures": dict(rep.failures),
        "plot": rep.plot,
        "loadavg": {"start": list(rep.loadavg[0]), "end": list(rep.loadavg[1])},
    }
    (out_dir / "results.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text("\n".join(_markdown(rep)) + "\n", encoding="utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _markdown(rep: Report) -> list[str]:
    s, mach = rep.scenario, machine()
    lines = [
        f"# Rollout scenario: {s.name}{' (--quick)' if s.quick else ''}",
        "",
        s.description,
        "",
        f"- date: {rep.started.isoformat(timespec='seconds')}; wall time {rep.wall_s:.0f} s",
        f"- machine: nproc={mach['nproc']}, CPU {mach['cpu_model']}, {mach['os']}, "
        f"Python {mach['python']}",
        f"- load average (1, 5, 15 min) at the start {_avg(rep.loadavg[0])}, at the end "
        f"{_avg(rep.loadavg[1])}: on {mach['nproc']} CPUs, anything above the scenario's own "
        "share is other work competing with the fleet, the gateway and the generator",
        f"- command: `{rep.command}`",
        *_setup(s),
        "",
        "## Outcome",
        "",
        "| run | 5xx injected (baseline / candidate) | expected | outcome | ended after "
        "(Rollout start) | requests | final observed candidate share |",
        "|---|---|---|---|---|---|---|",
        *(_outcome_row(r) for r in rep.results),
        *(f"\nRun {name} could not run: {why}" for name, why in rep.failures.items()),
    ]
    for r in rep.results:
        lines += _run_section(r, s.share_window_s)
    lines += _odds_section(rep)
    lines += ["", "## Plot", "", f"![candidate weight over time]({rep.plot})" if
              rep.plot.endswith(".png") else f"No plot: {rep.plot}"]  # fmt: skip
    return lines


def _avg(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.1f}" for v in values)


def _setup(s: RolloutScenario) -> list[str]:
    replicas = ", ".join(r.accelerator for r in s.fleet.replicas)
    rollout = yaml.safe_dump(dict(s.rollout), sort_keys=False, default_flow_style=None)
    return [
        f"- fleet per variant: {len(s.fleet.replicas)} simulated replicas ({replicas}), "
        f"time_scale {s.fleet.time_scale:g}; baseline InferencePool llama-v1, candidate "
        "llama-v2, one HTTPRoute rule",
        f"- load: open-loop Poisson, {s.load.qps:g} req/s, {s.load.users} sticky users "
        f"(`{s.load.user_header}: user-N`, drawn uniformly); workload {dict(s.workload)}",
        f"- Rollout (sticky on `{s.load.user_header}`):",
        "",
        "```yaml",
        rollout.rstrip(),
        "```",
    ]


def _outcome_row(r: RunResult) -> str:
    ended = "-" if r.finished_from_rollout_s is None else f"{r.finished_from_rollout_s:.1f} s"
    last = next((w for w in reversed(r.windows) if w.share is not None), None)
    share = "-" if last is None or last.share is None else f"{100 * last.share:.1f} %"
    verdict = "" if r.passed else " **(not as expected)**"
    return (
        f"| {r.name} | {100 * r.baseline_error_rate:g} % / {100 * r.candidate_error_rate:g} % "
        f"| {r.expect} | {r.outcome}{verdict} | {ended} | {r.sent} | {share} |"
    )


def _run_section(r: RunResult, window_s: float) -> list[str]:
    lines = ["", f"## {r.name}", "", f"Final message: {r.message}.", ""]
    if r.outcome == "RolledBack" and r.finished_from_rollout_s is not None:
        lines.append(
            f"Time from the start to rollback: **{r.finished_from_rollout_s:.1f} s** after the "
            f"Rollout started ({r.finished_from_rollout_s + r.rollout_start_s:.1f} s after the "
            f"load started; the Rollout started {-r.rollout_start_s:.2f} s before the load)."
        )
    lines += _analysis_lines(r.last_analysis)
    lines += [
        "",
        "Weight timeline (the Rollout's history):",
        "",
        "| after Rollout start | after load start | candidate weight |",
        "|---|---|---|",
    ]
    lines += [f"| {t.from_rollout_s:.1f} s | {t.at_s:.1f} s | {t.weight} % |"
              for t in r.transitions]  # fmt: skip
    lines += ["", f"Observed per {window_s:g} s window (requests by due time):", "",
              "| window | weight | candidate share | baseline n / 5xx | candidate n / 5xx |",
              "|---|---|---|---|---|"]  # fmt: skip
    for w in r.windows:
        share = "-" if w.share is None else f"{100 * w.share:.1f} %"
        lines.append(
            f"| {w.start_s:.0f}–{w.start_s + window_s:.0f} s | {w.weight} % | {share} | "
            f"{w.baseline} / {w.baseline_errors} | {w.candidate} / {w.candidate_errors} |"
        )
    kinds = ", ".join(f"{k}: {n}" for k, n in sorted(r.error_kinds.items())) or "none"
    lines += [
        "",
        f"Requests: {r.sent} sent; by variant {dict(sorted(r.answered.items()))}; failed "
        f"{dict(sorted(r.failed.items()))}; errors by kind: {kinds}.",
        f"E2E p50 {1e3 * r.e2e_s.p50:.0f} ms, p99 {1e3 * r.e2e_s.p99:.0f} ms; generator lag "
        f"p99 {r.lag_p99_ms:.1f} ms; {r.polls} polls of /rollouts; clock check "
        f"{'ok' if r.clock_ok else 'FAILED (times may be shifted)'}.",
        "CPU seconds from the load's start to the end of the run: "
        + ", ".join(f"{k} {v:.1f}" for k, v in r.cpu_s.items())
        + f" (over {r.wall_s:.0f} s of wall time for the whole run).",
    ]
    return lines


def _analysis_lines(analysis: Mapping[str, Any] | None) -> list[str]:
    if not analysis:
        return ["", "No analysis window was judged."]
    b, c = analysis["baseline"], analysis["candidate"]
    ratio, inc = analysis.get("errorRateRatio"), analysis.get("errorRateIncrease")
    return [
        "",
        f"Last analysis: {analysis['verdict']}"
        + (f" (failed: {', '.join(analysis['failed'])})" if analysis.get("failed") else "")
        + f"; baseline {b['errors']}/{b['requests']} = {100 * b['errorRate']:.1f} %"
        + (" (reference window)" if analysis.get("baselineIsReference") else "")
        + f", candidate {c['errors']}/{c['requests']} = {100 * c['errorRate']:.1f} %"
        + (f", ratio {ratio:.2f}" if ratio is not None else "")
        + (f", increase {100 * inc:+.1f} points" if inc is not None else "")
        + ".",
    ]


def _odds_section(rep: Report) -> list[str]:
    if not rep.odds:
        return []
    lines = [
        "",
        "## Simulated odds",
        "",
        "The gateway's own Rollout state machine (`routing.rollout`) on synthetic Poisson "
        "traffic with the same rate, weights and injected error rates (`--simulate`): how "
        "often each run reaches each outcome by chance.",
        "",
        "| run | trials | rolled back | promoted | median time to rollback | median time "
        "to promotion |",
        "|---|---|---|---|---|---|",
    ]
    for name, o in rep.odds.items():
        back = "-" if o.median_rollback_s is None else f"{o.median_rollback_s:.0f} s"
        done = "-" if o.median_promotion_s is None else f"{o.median_promotion_s:.0f} s"
        lines.append(
            f"| {name} | {o.trials} | {100 * o.share('RolledBack'):.1f} % | "
            f"{100 * o.share('Promoted'):.1f} % | {back} | {done} |"
        )
    return lines
