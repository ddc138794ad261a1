"""The report folder of a closed-loop run: `report.md`, `results.json` and `timeline.png`.
Writes files only; measures nothing. Without matplotlib: no plot and a note instead."""

import dataclasses
import datetime
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..report import machine
from .analysis import PolicyResult
from .scenario import ClosedLoopScenario, Policy, RuleKind

TIMELINE_PNG = "timeline.png"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunInfo:
    started: datetime.datetime
    wall_s: float
    command: str
    scenario_path: str
    quick: bool
    plot: str | None  # the PNG's file name, or None
    plot_note: str = ""


def write_results(
    path: Path,
    scenario: ClosedLoopScenario,
    raw: Mapping[str, Any],
    info: RunInfo,
    results: Sequence[PolicyResult],
) -> None:
    doc = {
        "name": scenario.name,
        "scenario": dict(raw),
        "quick": info.quick,
        "started": info.started.isoformat(timespec="seconds"),
        "wall_s": round(info.wall_s, 1),
        "machine": machine(),
        "slo": dataclasses.asdict(scenario.slo),
        "load": [list(p) for p in scenario.load.points],
        "policies": [_jsonable(dataclasses.asdict(r)) for r in results],
    }
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def _jsonable(value: Any) -> Any:
    """NaN and infinity are not JSON: write null."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 4)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_markdown(
    path: Path,
    scenario: ClosedLoopScenario,
    info: RunInfo,
    results: Sequence[PolicyResult],
) -> None:
    s, slo = scenario, scenario.slo
    m = machine()
    lines = [f"# Closed-loop autoscaling: {s.name}", ""]
    if s.description:
        lines += [s.description.strip(), ""]
    lines += [
        f"- Date: {info.started:%Y-%m-%d %H:%M %Z}; wall time {info.wall_s:.0f} s"
        + (" (--quick)" if info.quick else ""),
        f"- Machine: nproc={m['nproc']}, {m['cpu_model']}, {m['os']}, Python {m['python']}",
        f"- Command: `{info.command}` (scenario `{info.scenario_path}`)",
        f"- Policies ran {_how(s)} on the same arrival trace ({_trace(s)}).",
        f"- Replica: {s.replica.accelerator}, max_num_seqs {s.replica.profile.max_num_seqs}, "
        f"time_scale {s.time_scale:g}"
        + (f", about {s.replica_capacity_rps:g} req/s at 100 %" if s.replica_capacity_rps else "")
        + f"; {s.scaling.min_replicas}..{s.scaling.max_replicas} replicas, start-up "
        f"{s.scaling.startup_s:g} s, drain grace {s.scaling.drain_grace_s:g} s, "
        f"reconciler tick {s.scaling.tick_s:g} s.",
        f"- SLO: TTFT <= {slo.ttft_s:g} s per request; a {slo.window_s:g} s window misses when its "
        f"TTFT p{slo.percentile:g} is over it (failed requests count as misses).",
        "",
        "## Results",
        "",
        "| policy | requests | errors | over TTFT SLO | TTFT p50 / p99 | SLO windows missed "
        "| replica-s (serving) | scale changes (up/down) | max replicas |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.policy} | {r.requests} | {r.errors} | {r.over_slo} ({r.over_slo_pct:.1f} %) "
            f"| {_ms(r.ttft_s.p50)} / {_ms(r.ttft_s.p99)} "
            f"| {r.windows_violated} / {len(r.windows)} "
            f"| {r.replica_seconds:.0f} ({r.serving_replica_seconds:.0f}) "
            f"| {r.scale_changes} ({r.scale_ups}/{r.scale_downs}) | {r.max_replicas} |"
        )
    lines += ["", *_verdict(scenario, results), ""]
    lines += ["## Policies", ""]
    for policy in s.policies:
        lines.append(f"- **{policy.name}**: {_describe(scenario, policy)}")
    lines += ["", "## SLO windows", "", *_window_table(scenario, results), ""]
    lines += ["## Scale changes", ""]
    for r in results:
        steps = ", ".join(f"{c.t_s:.0f}s {c.before}→{c.after}" for c in r.changes) or "none"
        lines.append(f"- {r.policy}: {steps}")
    lines += ["", "## Errors and problems", ""]
    for r in results:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(r.error_kinds.items())) or "none"
        lines.append(f"- {r.policy}: errors {kinds}; replicas stopped before their requests "
                     f"finished: {r.forced_stops}; gateway reloads: {r.reloads}")  # fmt: skip
        lines.extend(f"  - {p}" for p in r.problems)
    lines += ["", "## Plot", ""]
    if info.plot:
        lines += [
            f"![replicas, load and TTFT over time]({info.plot})",
            "",
            "Top: replicas serving (solid) and asked for (dashed; the gap is start-up), with the "
            "offered load (grey, right axis). Middle: TTFT p"
            f"{slo.percentile:g} per {slo.window_s:g} s window (log scale; dotted: the SLO; "
            "a cross at the top: a failed request in the window). Bottom: the demand the "
            "gateway measures (queued + in flight) for each fleet.",
        ]
    else:
        lines.append(info.plot_note or "No plot.")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _how(s: ClosedLoopScenario) -> str:
    return "side by side, from the same T0" if s.concurrent else "one after the other"


def _trace(s: ClosedLoopScenario) -> str:
    corners = ", ".join(f"{t:g}s:{r:g}" for t, r in s.load.points)
    return (
        f"{s.load.expected_requests():.0f} requests expected over {s.load.end_s:g} s, "
        f"req/s at corners {corners}; workload {dict(s.raw_workload)}"
    )


def _describe(s: ClosedLoopScenario, policy: Policy) -> str:
    if policy.kind is RuleKind.SLUICE:
        block = s.traffic_for(policy)["autoscaling"]
        when = f"every {policy.sync_s:g} s (an HPA's sync)" if policy.sync_s else "every tick"
        return (
            f"the reconciler applies the gateway's `desiredReplicas` {when}; TrafficPolicy "
            f"`autoscaling: {json.dumps(block, separators=(', ', ': '))}`"
        )
    metric = "running / max_num_seqs" if policy.metric == "busy" else "KV-cache usage"
    return (
        f"HPA algorithm on the replicas' average {metric} (averaged over "
        f"{policy.metric_window_s:g} s), target {policy.target:g}, tolerance "
        f"{policy.tolerance:g}, sync every {policy.sync_s:g} s, scale-down stabilisation "
        f"{policy.stabilization_s:g} s, scale-up at most max(+{policy.scale_up_pods} pods, "
        f"+{policy.scale_up_percent:g} %) per sync; starting pods count as idle on scale-up"
    )


def _verdict(s: ClosedLoopScenario, results: Sequence[PolicyResult]) -> list[str]:
    """Each Sluice policy against each utilisation policy, in plain words, as measured."""
    sluice = [r for r in results if r.kind == RuleKind.SLUICE]
    baseline = [r for r in results if r.kind == RuleKind.UTILISATION]
    out: list[str] = []
    for a in sluice:
        for b in baseline:
            slo_better = (a.windows_violated, a.over_slo) < (b.windows_violated, b.over_slo)
            slo_equal = (a.windows_violated, a.over_slo) == (b.windows_violated, b.over_slo)
            cheaper = a.replica_seconds <= b.replica_seconds
            calmer = a.scale_changes < b.scale_changes
            if slo_better and (cheaper or calmer):
                word = "beats"
            elif slo_equal and (cheaper or calmer):
                word = "ties on the SLO with"
            else:
                word = "does not beat"
            out.append(
                f"**{a.policy} {word} {b.policy}**: SLO windows missed {a.windows_violated} vs "
                f"{b.windows_violated}, requests over the SLO {a.over_slo} vs {b.over_slo}, "
                f"replica-seconds {a.replica_seconds:.0f} vs {b.replica_seconds:.0f} "
                f"({_pct(a.replica_seconds, b.replica_seconds)}), scale changes "
                f"{a.scale_changes} vs {b.scale_changes}, errors {a.errors} vs {b.errors}."
            )
    return out


def _window_table(s: ClosedLoopScenario, results: Sequence[PolicyResult]) -> list[str]:
    slo = s.slo
    head = "| window | offered req/s | " + " | ".join(
        f"{r.policy} p{slo.percentile:g} TTFT (serving)" for r in results
    )
    lines = [head + " |", "|---|---:|" + "---:|" * len(results)]
    starts = sorted({w.start_s for r in results for w in r.windows})
    for start in starts:
        mid = start + slo.window_s / 2
        cells = []
        for r in results:
            w = next((w for w in r.windows if w.start_s == start), None)
            serving = [row.serving for row in r.timeline if start <= row.t_s < start + slo.window_s]
            replicas = f" ({min(serving)}–{max(serving)})" if serving else ""
            if w is None:
                cells.append("-")
                continue
            value = "failed" if w.ttft_s is None else _ms(w.ttft_s)
            cells.append(f"{'**' if w.violated else ''}{value}{'**' if w.violated else ''}"
                         + replicas)  # fmt: skip
        lines.append(f"| {start:g}–{start + slo.window_s:g} s | {s.load.rate(mid):.1f} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return lines


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms"


def _pct(a: float, b: float) -> str:
    return f"{(a / b - 1) * 100:+.0f} %" if b > 0 else "n/a"


def draw_timeline(
    path: Path, scenario: ClosedLoopScenario, results: Sequence[PolicyResult]
) -> None:
    """Replicas and offered load; TTFT per window; demand. ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    s, slo = scenario, scenario.slo
    fig, (ax_rep, ax_ttft, ax_dem) = plt.subplots(
        3, 1, figsize=(11, 9), sharex=True, layout="constrained",
        gridspec_kw={"height_ratios": [3, 2, 1.5]},
    )  # fmt: skip
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    end = s.load.end_s
    failed: list[tuple[float, str]] = []  # windows with a failed request, marked on top
    ax_load = ax_rep.twinx()
    ts = [end * i / 400 for i in range(401)]
    ax_load.fill_between(ts, [s.load.rate(t) for t in ts], color="grey", alpha=0.18, lw=0)
    ax_load.set_ylabel("offered load (req/s)", color="grey")
    ax_load.set_ylim(bottom=0)
    for i, r in enumerate(results):
        c = colors[i % len(colors)]
        rows = [row for row in r.timeline if row.t_s <= end]
        t = [row.t_s for row in rows]
        ax_rep.step(t, [row.serving for row in rows], where="post", color=c, lw=2,
                    label=f"{r.policy} serving")  # fmt: skip
        ax_rep.step(t, [row.target for row in rows], where="post", color=c, lw=1, ls="--",
                    label=f"{r.policy} asked for")  # fmt: skip
        ax_dem.plot(t, [row.demand if row.demand is not None else math.nan for row in rows],
                    color=c, lw=1, label=r.policy)  # fmt: skip
        starts = [w.start_s for w in r.windows]
        values = [w.ttft_s if w.ttft_s is not None else math.nan for w in r.windows]
        ax_ttft.step([*starts, starts[-1] + slo.window_s] if starts else [],
                     [*values, values[-1]] if values else [], where="post", color=c,
                     label=r.policy)  # fmt: skip
        failed.extend((w.start_s + slo.window_s / 2, c) for w in r.windows if w.ttft_s is None)
    if s.replica_capacity_rps:
        ax_rep.plot(ts, [s.load.rate(t) / s.replica_capacity_rps for t in ts], color="black",
                    lw=0.8, ls=":", label="replicas needed at 100 %")  # fmt: skip
    ax_rep.set(ylabel="replicas", title=f"{s.name}: replicas and offered load")
    ax_rep.set_ylim(0, s.scaling.max_replicas + 0.5)
    ax_rep.legend(loc="upper left", fontsize=8, ncol=2)
    ax_ttft.axhline(slo.ttft_s, color="black", ls=":", lw=1)
    top = ax_ttft.get_ylim()[1]
    for x, c in failed:
        ax_ttft.plot([x], [top], "x", color=c, clip_on=False)
    ax_ttft.set_yscale("log")
    ax_ttft.set(ylabel=f"TTFT p{slo.percentile:g} (s)",
                title=f"TTFT p{slo.percentile:g} per {slo.window_s:g} s window")  # fmt: skip
    ax_ttft.legend(loc="upper left", fontsize=8)
    ax_dem.set(xlabel="seconds", ylabel="requests", title="demand seen by the gateway")
    ax_dem.set_ylim(bottom=0)
    ax_dem.legend(loc="upper left", fontsize=8)
    for ax in (ax_rep, ax_ttft, ax_dem):
        ax.grid(True, alpha=0.3)
        ax.set_xlim(0, end)
    fig.savefig(path, dpi=110)
    plt.close(fig)
