"""PNG plots of a run with matplotlib (the `loadtest` extra): latency against load per policy,
and the TTFT distribution per policy at each load point. Without matplotlib, no plots and a
note in the report instead; the numbers do not depend on it."""

import math
from collections.abc import Sequence
from pathlib import Path

from .scenario import Scenario
from .stats import TrialResult

LATENCY_PNG = "latency_vs_qps.png"
CDF_PNG = "ttft_cdf.png"


def draw_plots(out_dir: Path, scenario: Scenario, results: Sequence[TrialResult]) -> list[str]:
    """Write the PNGs into `out_dir`; their file names. ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    ok = [r for r in results if r.failure is None]
    _latency_vs_qps(out_dir / LATENCY_PNG, scenario, ok)
    _ttft_cdf(out_dir / CDF_PNG, scenario, ok)
    return [LATENCY_PNG, CDF_PNG]


def _latency_vs_qps(path: Path, scenario: Scenario, results: Sequence[TrialResult]) -> None:
    import matplotlib.pyplot as plt

    fig, (ax_ttft, ax_e2e) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for policy in scenario.policies:
        rows = sorted((r for r in results if r.policy == policy.name), key=lambda r: r.target_qps)
        qps = [r.target_qps for r in rows]
        ax_ttft.plot(qps, [r.ttft_s.p90 * 1000 for r in rows], marker="o", label=policy.name)
        ax_e2e.plot(qps, [r.e2e_s.p90 for r in rows], marker="o", label=policy.name)
    ax_ttft.set(title="TTFT p90", xlabel="offered load (req/s)", ylabel="ms")
    ax_e2e.set(title="End-to-end latency p90", xlabel="offered load (req/s)", ylabel="s")
    for ax in (ax_ttft, ax_e2e):
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        if scenario.capacity_rps:
            ax.axvline(scenario.capacity_rps, color="grey", linestyle=":", linewidth=1)
        ax.legend()
    fig.suptitle(f"{scenario.name}: latency against load (dotted: capacity_rps)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ttft_cdf(path: Path, scenario: Scenario, results: Sequence[TrialResult]) -> None:
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    n = len(scenario.points)
    fig, axes = plt.subplots(1, n, figsize=(5 * n + 1, 4.2), layout="constrained", squeeze=False)
    for ax, point in zip(axes[0], scenario.points, strict=True):
        for policy in scenario.policies:
            rows = [r for r in results if r.policy == policy.name and r.load == point.label]
            samples = rows[0].ttft_samples_s if rows else ()
            if not samples:
                continue
            ms = [v * 1000 for v in samples]
            share = [(i + 1) / len(ms) for i in range(len(ms))]
            ax.step(ms, share, where="post", label=policy.name)
        ax.set(title=f"TTFT CDF at {point.label} ({point.qps:.1f} req/s)", xlabel="TTFT (ms)")
        ax.set_ylabel("fraction of requests")
        if _positive_range(results):
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _positive_range(results: Sequence[TrialResult]) -> bool:
    samples = [v for r in results for v in r.ttft_samples_s]
    return bool(samples) and min(samples) > 0 and not math.isnan(min(samples))
