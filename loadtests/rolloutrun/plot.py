"""The PNG of a rollout scenario: per run, the candidate's weight over time (the Rollout's own
history) with the share of requests clients saw answered by the candidate per window, and
below it the error rate clients saw per variant and window. matplotlib (the `loadtest` extra);
ImportError without it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .analysis import RunResult

PNG = "rollout_weight.png"
MIN_WINDOW_REQUESTS = 20  # an error rate over fewer requests is noise, not a point worth plotting


def draw(out_dir: Path, results: Sequence[RunResult], window_s: float, title: str) -> str:
    """Write the PNG into `out_dir`; its file name."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(
        2, n, figsize=(6.2 * n, 6.4), sharex="col", squeeze=False,
        gridspec_kw={"height_ratios": [2.2, 1]}, layout="constrained",
    )  # fmt: skip
    for col, result in enumerate(results):
        _weights(axes[0][col], result, window_s)
        _errors(axes[1][col], result, window_s)
    fig.suptitle(title)
    fig.savefig(out_dir / PNG, dpi=110)
    plt.close(fig)
    return PNG


def _end(result: RunResult, window_s: float) -> float:
    return len(result.windows) * window_s if result.windows else 1.0


def _weights(ax: Any, result: RunResult, window_s: float) -> None:
    end = _end(result, window_s)
    xs = [min(0.0, result.rollout_start_s)] + [max(0.0, tr.at_s) for tr in result.transitions]
    ys = [result.transitions[0].weight if result.transitions else 0]
    ys += [tr.weight for tr in result.transitions]
    ax.step([*xs, end], [*ys, ys[-1]], where="post", color="C0", linewidth=2,
            label="candidate weight (GET /rollouts history)")  # fmt: skip
    mids = [w.start_s + window_s / 2 for w in result.windows if w.share is not None]
    shares = [100 * w.share for w in result.windows if w.share is not None]
    label = f"observed x-sluice-variant share ({window_s:g} s windows)"
    ax.errorbar(
        mids, shares, xerr=window_s / 2, fmt="o", color="C1", markersize=4, capsize=0, label=label
    )
    if result.finished_from_rollout_s is not None:
        at = result.finished_from_rollout_s + result.rollout_start_s
        ax.axvline(at, color="C3" if result.outcome == "RolledBack" else "C2", linestyle="--")
        ax.annotate(f"{result.outcome} at {result.finished_from_rollout_s:.1f} s",
                    (at, 104), ha="right", fontsize=8, xytext=(-4, 0),
                    textcoords="offset points")  # fmt: skip
    verdict = "as expected" if result.passed else f"EXPECTED {result.expect}"
    ax.set_title(
        f"{result.name}: 5xx injected {100 * result.baseline_error_rate:g} % baseline / "
        f"{100 * result.candidate_error_rate:g} % candidate\n{result.outcome} ({verdict})",
        fontsize=10,
    )
    ax.set(ylabel="candidate (%)", ylim=(-3, 135), xlim=(min(-1.0, result.rollout_start_s), end))
    ax.set_yticks(range(0, 101, 20))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def _errors(ax: Any, result: RunResult, window_s: float) -> None:
    for label, color in (("baseline", "C0"), ("candidate", "C1")):
        xs, ys = [], []
        for w in result.windows:
            n, failed = (w.candidate, w.candidate_errors) if label == "candidate" else (
                w.baseline, w.baseline_errors)  # fmt: skip
            if n >= MIN_WINDOW_REQUESTS:
                xs.append(w.start_s + window_s / 2)
                ys.append(100 * failed / n)
        ax.plot(xs, ys, marker=".", color=color, label=f"{label} 5xx seen by clients")
    ax.set(xlabel=f"seconds after the load started (windows of {MIN_WINDOW_REQUESTS}+ requests)",
           ylabel="errors (%)")  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
