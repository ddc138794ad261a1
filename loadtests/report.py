"""The report folder of a run: `report.md` (tables per load point, generator lag, errors, plots),
`results.json` (every number), plus what `plots` draws. Writes files only; measures nothing."""

import dataclasses
import datetime
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .benchsupport import cpu_model
from .scenario import Scenario, Weighted
from .stats import TrialResult

# Generator lag above this (p99) means the generator, not the server, may shape the numbers.
LAG_WARN_MS = 50.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunInfo:
    started: datetime.datetime
    wall_s: float
    command: str
    scenario_path: str
    quick: bool
    plots: tuple[str, ...]  # file names written by `plots`, or why none were
    plot_note: str = ""


def machine() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def write_results(
    path: Path,
    scenario: Scenario,
    raw: Mapping[str, Any],
    info: RunInfo,
    results: Sequence[TrialResult],
) -> None:
    doc = {
        "scenario": dict(raw),
        "name": scenario.name,
        "quick": info.quick,
        "started": info.started.isoformat(timespec="seconds"),
        "wall_s": round(info.wall_s, 1),
        "machine": machine(),
        "durations": {"warmup_s": scenario.warmup_s, "duration_s": scenario.duration_s,
                      "drain_s": scenario.drain_s},
        "trials": [_jsonable(dataclasses.asdict(r)) for r in results],
    }  # fmt: skip
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def _jsonable(value: Any) -> Any:
    """NaN is not JSON: write null."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_markdown(
    path: Path, scenario: Scenario, info: RunInfo, results: Sequence[TrialResult]
) -> None:
    lines = [f"# Load test: {scenario.name}", ""]
    if scenario.description:
        lines += [scenario.description.strip(), ""]
    lines += _setup(scenario, info)
    for point in scenario.points:
        rows = [r for r in results if r.load == point.label]
        lines += [f"## Load {point.label} ({point.qps:.1f} req/s offered)", "", *_table(rows), ""]
        lines += _objective_table(rows)
    lines += _lag_section(results)
    lines += _status_section(results)
    lines += _error_section(results)
    lines += ["## Plots", ""]
    lines += [f"![{name}]({name})" for name in info.plots] or [info.plot_note or "none"]
    lines += ["", *_glossary()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _setup(s: Scenario, info: RunInfo) -> list[str]:
    m = machine()
    w = s.workload
    models = ", ".join(f"{r.model} ({r.accelerator})" for r in s.fleet.replicas[:1])
    shape = (
        f"{w.kind}: {w.groups} groups x {w.system_prompt_tokens}-token system prompt + "
        f"{w.question_tokens}-token question"
        if w.kind == "shared-prefix"
        else f"{w.kind}: {w.prompt_tokens}-token unique prompts"
    )
    extras = [f"models {[m.name for m in w.models]}"] if w.models else []
    extras += (
        [f"objectives {[_objective(o, w.stream) for o in w.objectives]}"] if w.objectives else []
    )
    extras += [f"{w.tenants} tenants"] if w.tenants else []
    return [
        f"- date: {info.started.isoformat(timespec='seconds')}, wall time {info.wall_s:.0f} s"
        + (" (--quick)" if info.quick else ""),
        f"- machine: nproc={m['nproc']}, CPU {m['cpu_model']}, {m['os']}, Python {m['python']}",
        f"- command: `{info.command}` ({info.scenario_path})",
        f"- fleet: {len(s.fleet.replicas)} replicas, {models}, time_scale {s.fleet.time_scale:g}",
        f"- workload: {shape}; max_tokens {w.max_tokens}, {w.api}, "
        f"{'streaming' if w.stream else 'not streaming'}" + "".join(f"; {e}" for e in extras),
        f"- load: open-loop Poisson, {s.generator_processes} generator process(es); "
        f"capacity_rps {s.capacity_rps if s.capacity_rps is not None else 'n/a'}",
        f"- per trial: warm-up {s.warmup_s:g} s, measured {s.duration_s:g} s, drain up to "
        f"{s.drain_s:g} s; a fresh fleet and target per trial",
        f"- policies: {', '.join(p.name for p in s.policies)}",
        "",
    ]


def _objective(o: Weighted, stream: bool) -> str:
    if o.stream is None or o.stream == stream:
        return o.name
    return f"{o.name} ({'streamed' if o.stream else 'not streamed'})"


_HEAD = (
    "| policy | offered / achieved req/s | TTFT p50 / p90 / p99 (ms) | E2E p50 / p90 / p99 (s) "
    "| TPOT p50 (ms) | output tok/s | errors | prefix-cache hit | balance max/mean "
    "| requests per replica | load max/mean | mean load per replica |"
)


def _table(rows: Sequence[TrialResult]) -> list[str]:
    out = [_HEAD, "|---" * (_HEAD.count("|") - 1) + "|"]
    for r in rows:
        if r.failure is not None:
            out.append(f"| {r.policy} | failed: {r.failure.splitlines()[0]} |" + " |" * 10)
            continue
        ttft = " / ".join(_ms(v) for v in (r.ttft_s.p50, r.ttft_s.p90, r.ttft_s.p99))
        e2e = " / ".join(_s(v) for v in (r.e2e_s.p50, r.e2e_s.p90, r.e2e_s.p99))
        out.append(
            f"| {r.policy} | {r.offered_rps:.1f} / {r.achieved_rps:.1f} | {ttft} | {e2e} "
            f"| {_ms(r.tpot_s.p50, 1)} | {r.output_tokens_per_s:.0f} | {r.errors} "
            f"| {_pct(r.prefix_hit_rate)} | {_num(r.balance)} "
            f"| {' '.join(map(str, r.replica_requests)) or 'n/a'} "
            f"| {_num(r.load_balance)} | {' '.join(f'{x:.1f}' for x in r.replica_load) or 'n/a'} |"
        )
    return out


def _objective_table(rows: Sequence[TrialResult]) -> list[str]:
    """Per x-gateway-inference-objective value, when the workload sends one."""
    rows = [r for r in rows if r.failure is None and r.by_objective]
    if not rows:
        return []
    out = [
        "Per objective (requests sent in the window; latencies of the successful ones):",
        "",
        "| policy | objective | sent | succeeded | TTFT p50 / p90 / p99 (ms) "
        "| E2E p50 / p90 / p99 (s) | answers by status | non-200 with Retry-After |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for name, o in r.by_objective.items():
            ttft = " / ".join(_ms(v) for v in (o.ttft_s.p50, o.ttft_s.p90, o.ttft_s.p99))
            e2e = " / ".join(_s(v) for v in (o.e2e_s.p50, o.e2e_s.p90, o.e2e_s.p99))
            non_ok = o.sent - o.statuses.get("200", 0)
            out.append(
                f"| {r.policy} | {name} | {o.sent} | {o.completed} | {ttft} | {e2e} "
                f"| {_statuses(o.statuses)} | {o.retry_after} of {non_ok} |"
            )
    return [*out, ""]


def _status_section(results: Sequence[TrialResult]) -> list[str]:
    out = [
        "## Answers by status",
        "",
        'Requests sent in the measured window, by HTTP status; "no answer" is a connection '
        "error, a timeout, a request still open at the drain's end or dropped by the generator.",
        "",
        "| policy | load | sent | answers |",
        "|---|---|---|---|",
    ]
    out += [
        f"| {r.policy} | {r.load} | {r.sent} | {_statuses(r.statuses)} |"
        for r in results
        if r.failure is None
    ]
    return [*out, ""]


def _statuses(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k}: {n}" for k, n in counts.items()) or "none"


def _lag_section(results: Sequence[TrialResult]) -> list[str]:
    out = [
        "## Load generator and CPU",
        "",
        "Lag is how late each request left the generator against its Poisson schedule. CPU is "
        "CPU seconds per wall second (1.0 = one core) of the generator processes, the target "
        f"(the gateway) and the harness process that runs the simulated fleet; this machine has "
        f"{machine()['nproc']} cores.",
        "",
        "| policy | load | sent (measured) | lag p50 / p99 / max (ms) | generator CPU "
        "| target CPU | fleet CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    worst = 0.0
    for r in results:
        if r.failure is None:
            worst = max(worst, r.lag_ms.p99)
            out.append(
                f"| {r.policy} | {r.load} | {r.sent} | {_num(r.lag_ms.p50, 1)} / "
                f"{_num(r.lag_ms.p99, 1)} / {r.lag_max_ms:.1f} | {r.generator_cores:.2f} "
                f"| {_num(r.target_cores)} | {_num(r.harness_cores)} |"
            )
    verdict = (
        f"Generator lag p99 stayed under {LAG_WARN_MS:g} ms: the generator kept up."
        if worst < LAG_WARN_MS
        else f"WARNING: generator lag p99 reached {worst:.0f} ms: the generator fell behind "
        "(raise generator_processes or lower the load); treat latencies with care."
    )
    return [*out, "", verdict, ""]


def _error_section(results: Sequence[TrialResult]) -> list[str]:
    failed = [r for r in results if r.errors or r.failure]
    if not failed:
        return ["## Errors", "", "None.", ""]
    out = ["## Errors", ""]
    for r in failed:
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(r.error_kinds.items()))
        out.append(f"- {r.policy} @ {r.load}: {r.failure or kinds}")
    return [*out, ""]


def _glossary() -> list[str]:
    return [
        "## How to read this",
        "",
        "- offered req/s: requests sent inside the measured window, per second (Poisson: close "
        "to the target, not equal); achieved req/s and output tok/s: successful requests "
        "finishing inside the window, per second; latencies and errors: requests sent inside it.",
        "- TTFT: send to the first token; E2E: send to the last byte; TPOT: (E2E - TTFT) / "
        "(output tokens - 1).",
        "- prefix-cache hit: hits / queries of `vllm:prefix_cache_{hits,queries}_total` (tokens) "
        "summed over the replicas' `/metrics`, as deltas over the window.",
        "- balance: requests received per replica over the window (the fleet's own counts), "
        "max / mean; 1.00 is perfectly even.",
        "- load: each replica's mean number of requests held (running or waiting), averaged "
        "over the window (the simulated engine's own accounting), and its max / mean: how "
        "evenly the work was spread. Requests differ in cost (a prefix-cache hit skips most "
        "of its prefill), so even request counts are not even load, and the other way round.",
    ]


def _ms(seconds: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.{digits}f}"


def _s(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds:.2f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"
