"""The numbers of one trial (one policy at one load point), from request records and fleet counters.

Pure: records and snapshots in, a frozen `TrialResult` out. Which requests count:
- latencies, errors and the TTFT CDF: requests *sent* in the measured window (phase `measure`);
- achieved req/s and output tokens/s: successful requests that *finished* inside the window;
- prefix-cache hit rate and per-replica requests: fleet counter deltas across the window.
"""

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from .loadgen import Record


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Percentiles:
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values: Iterable[float]) -> "Percentiles":
        ordered = sorted(values)
        return cls(
            p50=percentile(ordered, 50), p90=percentile(ordered, 90), p99=percentile(ordered, 99)
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """Counters read at one instant: prefix-cache tokens from `/metrics` (None if the engine
    exports no such counters), inference requests received per replica, and CPU seconds used
    so far by this process (the fleet runs in it) and by the target process (None if none)."""

    at: float  # time.monotonic()
    prefix_queries: float | None
    prefix_hits: float | None
    received: tuple[int, ...]
    held_request_s: tuple[float, ...]  # per replica: requests held x seconds, so far
    harness_cpu_s: float
    target_cpu_s: float | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    start_s: float  # offsets from T0
    end_s: float

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ObjectiveResult:
    """The measured requests of one x-gateway-inference-objective value ("-" for none)."""

    sent: int
    completed: int
    ttft_s: Percentiles  # successful requests only
    e2e_s: Percentiles
    statuses: dict[str, int]  # see `status_counts`
    retry_after: int  # non-200 answers that carried a Retry-After header


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TrialResult:
    policy: str
    load: str
    target_qps: float
    duration_s: float
    sent: int  # measured requests
    offered_rps: float
    achieved_rps: float
    completed: int
    errors: int  # measured requests that failed, were dropped or did not finish
    unfinished: int
    error_kinds: dict[str, int]
    ttft_s: Percentiles
    tpot_s: Percentiles
    e2e_s: Percentiles
    output_tokens_per_s: float
    prefix_hit_rate: float | None
    replica_requests: tuple[int, ...]
    balance: float | None  # max / mean of requests per replica
    # max / mean of each replica's mean load (requests held, running or waiting, averaged
    # over the window): how evenly the work was spread, as the replicas felt it
    load_balance: float | None = None
    replica_load: tuple[float, ...] = ()
    lag_ms: Percentiles  # how late the generator sent (all phases)
    lag_max_ms: float
    generator_cpu_s: float
    generator_cores: float  # generator CPU seconds per wall second
    harness_cores: float | None  # the fleet's process, over the window
    target_cores: float | None  # the gateway's (or command's) process, over the window
    ttft_samples_s: tuple[float, ...]  # sorted, for the CDF
    failure: str | None = None  # the trial could not run (the target did not start, ...)
    # measured requests by answer: "200", "429", "503", ... or "no answer: <kind>" (a
    # connection error, a timeout, unfinished at the drain's end, dropped by the generator)
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)
    by_objective: dict[str, ObjectiveResult] = dataclasses.field(default_factory=dict)


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of sorted values; NaN when there are none."""
    if not ordered:
        return math.nan
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def summarize(
    *,
    policy: str,
    load: str,
    target_qps: float,
    records: Sequence[Record],
    window: Window,
    before: Snapshot | None,
    after: Snapshot | None,
    generator_cpu_s: float,
    wall_s: float,
) -> TrialResult:
    measured = [r for r in records if r.phase == "measure"]
    ok = [r for r in measured if r.error is None and r.ttft is not None and r.e2e is not None]
    failed = [r for r in measured if r.error is not None]
    finished_in_window = [
        r
        for r in records
        if r.error is None and r.done_t is not None and window.start_s <= r.done_t < window.end_s
    ]
    tpots = [t for t in map(_tpot, ok) if t is not None]
    replicas, balance = _balance(before, after)
    length = window.length_s
    return TrialResult(
        policy=policy,
        load=load,
        target_qps=target_qps,
        duration_s=length,
        sent=len(measured),
        offered_rps=len(measured) / length,
        achieved_rps=len(finished_in_window) / length,
        completed=len(ok),
        errors=len(failed),
        unfinished=sum(1 for r in failed if (r.error or "").startswith("unfinished")),
        error_kinds=dict(Counter(_kind(r.error or "") for r in failed)),
        ttft_s=Percentiles.of(r.ttft for r in ok if r.ttft is not None),
        tpot_s=Percentiles.of(tpots),
        e2e_s=Percentiles.of(r.e2e for r in ok if r.e2e is not None),
        output_tokens_per_s=sum(r.tokens for r in finished_in_window) / length,
        prefix_hit_rate=_hit_rate(before, after),
        replica_requests=replicas,
        balance=balance,
        **_load_balance(before, after),
        ttft_samples_s=tuple(sorted(r.ttft for r in ok if r.ttft is not None)),
        statuses=status_counts(measured),
        by_objective=_by_objective(measured),
        **_load_fields(records, before, after, generator_cpu_s, wall_s),
    )


def status_counts(records: Iterable[Record]) -> dict[str, int]:
    """Requests by answer: the HTTP status ("200", "429", ...; a 200 whose stream failed
    counts as "200 + error"), or "no answer: <kind>" when none came back."""
    counts: Counter[str] = Counter()
    for r in records:
        if r.status:
            counts[f"{r.status}" + (" + error" if r.status == 200 and r.error else "")] += 1
        else:
            counts[f"no answer: {_kind(r.error or 'unknown')}"] += 1
    return dict(sorted(counts.items()))


def _by_objective(measured: Sequence[Record]) -> dict[str, ObjectiveResult]:
    """Per objective header value; empty when no request named one."""
    if not any(r.objective for r in measured):
        return {}
    groups: dict[str, list[Record]] = {}
    for r in measured:
        groups.setdefault(r.objective or "-", []).append(r)
    out: dict[str, ObjectiveResult] = {}
    for name, rows in sorted(groups.items()):
        ok = [r for r in rows if r.error is None and r.ttft is not None and r.e2e is not None]
        out[name] = ObjectiveResult(
            sent=len(rows),
            completed=len(ok),
            ttft_s=Percentiles.of(r.ttft for r in ok if r.ttft is not None),
            e2e_s=Percentiles.of(r.e2e for r in ok if r.e2e is not None),
            statuses=status_counts(rows),
            retry_after=sum(1 for r in rows if r.status not in (0, 200) and r.retry_after),
        )
    return out


def _load_fields(
    records: Sequence[Record],
    before: Snapshot | None,
    after: Snapshot | None,
    generator_cpu_s: float,
    wall_s: float,
) -> dict[str, Any]:
    """How the load generator kept up, and what each process cost."""
    return {
        "lag_ms": Percentiles.of(r.lag * 1000 for r in records if _was_sent(r)),
        "lag_max_ms": max((r.lag * 1000 for r in records), default=0.0),
        "generator_cpu_s": generator_cpu_s,
        "generator_cores": generator_cpu_s / wall_s if wall_s > 0 else 0.0,
        "harness_cores": _cores(before, after, "harness_cpu_s"),
        "target_cores": _cores(before, after, "target_cpu_s"),
    }


def failed_trial(policy: str, load: str, target_qps: float, reason: str) -> TrialResult:
    nan = Percentiles(p50=math.nan, p90=math.nan, p99=math.nan)
    return TrialResult(
        policy=policy, load=load, target_qps=target_qps, duration_s=0.0, sent=0,
        offered_rps=0.0, achieved_rps=0.0, completed=0, errors=0, unfinished=0, error_kinds={},
        ttft_s=nan, tpot_s=nan, e2e_s=nan, output_tokens_per_s=0.0, prefix_hit_rate=None,
        replica_requests=(), balance=None, lag_ms=nan, lag_max_ms=0.0, generator_cpu_s=0.0,
        generator_cores=0.0, harness_cores=None, target_cores=None, ttft_samples_s=(),
        failure=reason,
    )  # fmt: skip


def _tpot(r: Record) -> float | None:
    """Time per output token after the first (vLLM's TPOT / inter-token latency)."""
    if r.ttft is None or r.e2e is None or r.tokens < 2:
        return None
    return (r.e2e - r.ttft) / (r.tokens - 1)


def _was_sent(r: Record) -> bool:
    return not (r.error or "").startswith("dropped")


def _kind(error: str) -> str:
    """Group errors by their first words: 'HTTP 503', 'dropped', 'ClientPayloadError', ..."""
    head = error.split(":", 1)[0]
    return head[:60] or "unknown"


def _cores(before: Snapshot | None, after: Snapshot | None, field: str) -> float | None:
    if before is None or after is None or after.at <= before.at:
        return None
    start, end = getattr(before, field), getattr(after, field)
    return None if start is None or end is None else (end - start) / (after.at - before.at)


def _hit_rate(before: Snapshot | None, after: Snapshot | None) -> float | None:
    if before is None or after is None:
        return None
    if None in (before.prefix_queries, before.prefix_hits, after.prefix_queries, after.prefix_hits):
        return None
    queries = (after.prefix_queries or 0.0) - (before.prefix_queries or 0.0)
    hits = (after.prefix_hits or 0.0) - (before.prefix_hits or 0.0)
    return hits / queries if queries > 0 else None


def _balance(
    before: Snapshot | None, after: Snapshot | None
) -> tuple[tuple[int, ...], float | None]:
    if before is None or after is None:
        return (), None
    counts = tuple(b - a for a, b in zip(before.received, after.received, strict=True))
    mean = sum(counts) / len(counts) if counts else 0.0
    return counts, (max(counts) / mean if mean > 0 else None)


def _load_balance(before: Snapshot | None, after: Snapshot | None) -> dict[str, Any]:
    span = after.at - before.at if before is not None and after is not None else 0.0
    if before is None or after is None or not after.held_request_s or span <= 0:
        return {}
    loads = tuple(
        (b - a) / span for a, b in zip(before.held_request_s, after.held_request_s, strict=True)
    )
    mean = sum(loads) / len(loads)
    return {"replica_load": loads, "load_balance": max(loads) / mean if mean > 0 else None}
