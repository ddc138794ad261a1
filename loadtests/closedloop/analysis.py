"""The numbers of one policy's closed-loop run, from request records, replica lives and scale
changes. Pure: records in, a frozen `PolicyResult` out.

- A request misses the TTFT SLO when it failed or its TTFT is over `slo.ttft_s`.
- A window (`slo.window_s`, by send time) misses the SLO when the `slo.percentile` of its
  TTFTs — failed requests counting as infinitely slow — is over `slo.ttft_s`.
- Replica-seconds count a replica from its creation to its stop (starting and draining
  included: a real pod holds its GPU all that time), clipped to the load profile's span;
  serving replica-seconds only count the time it was in the gateway's EndpointSlices.
"""

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence

from ..loadgen import Record
from ..stats import Percentiles, percentile
from .elastic import Member, ScaleChange
from .reconciler import TimelineRow
from .scenario import Slo


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WindowStat:
    start_s: float
    requests: int
    failed: int
    over_slo: int
    ttft_s: float | None  # the SLO percentile of TTFT; None when it is a failed request
    violated: bool


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PolicyResult:
    policy: str
    kind: str
    requests: int
    completed: int
    errors: int
    error_kinds: dict[str, int]
    over_slo: int  # requests over the TTFT SLO or failed
    over_slo_pct: float
    ttft_s: Percentiles  # successful requests
    e2e_s: Percentiles
    windows: tuple[WindowStat, ...]
    windows_violated: int
    replica_seconds: float
    serving_replica_seconds: float
    scale_changes: int
    scale_ups: int
    scale_downs: int
    max_replicas: int
    forced_stops: int  # replicas stopped with requests open (drain timeout)
    reloads: int
    problems: tuple[str, ...]  # reload refusals, unreadable recommendations
    timeline: tuple[TimelineRow, ...]
    changes: tuple[ScaleChange, ...]


def summarize(
    *,
    policy: str,
    kind: str,
    records: Sequence[Record],
    members: Sequence[Member],
    changes: Sequence[ScaleChange],
    timeline: Sequence[TimelineRow],
    slo: Slo,
    end_s: float,
    reloads: int,
    problems: Sequence[str],
) -> PolicyResult:
    ok = [r for r in records if r.error is None and r.ttft is not None]
    failed = [r for r in records if r.error is not None or r.ttft is None]
    over = sum(1 for r in records if _ttft(r) > slo.ttft_s)
    windows = _windows(records, slo, end_s)
    return PolicyResult(
        policy=policy,
        kind=kind,
        requests=len(records),
        completed=len(ok),
        errors=len(failed),
        error_kinds=dict(Counter(_kind(r.error or "no token") for r in failed)),
        over_slo=over,
        over_slo_pct=100.0 * over / len(records) if records else 0.0,
        ttft_s=Percentiles.of(r.ttft for r in ok if r.ttft is not None),
        e2e_s=Percentiles.of(r.e2e for r in ok if r.e2e is not None),
        windows=windows,
        windows_violated=sum(1 for w in windows if w.violated),
        replica_seconds=sum(_span(m.created_s, m.stopped_s, end_s) for m in members),
        serving_replica_seconds=sum(
            _span(m.serving_s, m.draining_s if m.draining_s is not None else m.stopped_s, end_s)
            for m in members
            if m.serving_s is not None
        ),
        scale_changes=len(changes),
        scale_ups=sum(1 for c in changes if c.after > c.before),
        scale_downs=sum(1 for c in changes if c.after < c.before),
        max_replicas=max((row.target for row in timeline), default=0),
        forced_stops=sum(1 for m in members if m.forced),
        reloads=reloads,
        problems=tuple(problems),
        timeline=tuple(timeline),
        changes=tuple(changes),
    )


def _ttft(r: Record) -> float:
    return r.ttft if r.error is None and r.ttft is not None else math.inf


def _windows(records: Sequence[Record], slo: Slo, end_s: float) -> tuple[WindowStat, ...]:
    count = math.ceil(end_s / slo.window_s - 1e-9)
    buckets: list[list[float]] = [[] for _ in range(count)]
    for r in records:
        i = int(r.t // slo.window_s)
        if 0 <= i < count:
            buckets[i].append(_ttft(r))
    out = []
    for i, values in enumerate(buckets):
        if not values:
            continue
        values.sort()
        value = percentile(values, slo.percentile)
        out.append(
            WindowStat(
                start_s=i * slo.window_s,
                requests=len(values),
                failed=sum(1 for v in values if math.isinf(v)),
                over_slo=sum(1 for v in values if v > slo.ttft_s),
                ttft_s=None if math.isinf(value) else value,
                violated=value > slo.ttft_s,
            )
        )
    return tuple(out)


def _span(start: float | None, stop: float | None, end_s: float) -> float:
    if start is None:
        return 0.0
    lo, hi = max(0.0, start), min(end_s, stop if stop is not None else end_s)
    return max(0.0, hi - lo)


def _kind(error: str) -> str:
    """Errors by their first words: 'HTTP 503', 'unfinished', 'ClientPayloadError', ..."""
    return error.split(":", 1)[0][:60] or "unknown"
