"""Saturation detection for a pool, from its endpoints' fresh signals.

An endpoint has headroom while its queue is below ``queue_depth_threshold`` and its KV use
below ``kv_cache_threshold``, each stretched by ``headroom`` (the explicit safety margin:
0.1 allows 10% above the thresholds). The pool is saturated when no endpoint with fresh
signals has headroom. Endpoints without fresh signals are unknown, never idle; when every
endpoint is unknown the answer is unknown (None), and the caller falls back on its caps.
"""

from __future__ import annotations

from collections.abc import Iterable

from routing.model import TrafficLimits

__all__ = ["has_headroom", "saturation"]


def has_headroom(waiting: float | None, kv: float | None, limits: TrafficLimits) -> bool | None:
    if waiting is None and kv is None:
        return None
    stretch = 1.0 + limits.headroom
    if waiting is not None and waiting >= limits.queue_depth_threshold * stretch:
        return False
    return kv is None or kv < min(1.0, limits.kv_cache_threshold * stretch)


def saturation(
    signals: Iterable[tuple[float | None, float | None]], limits: TrafficLimits
) -> float | None:
    """Fraction of endpoints with fresh signals that have no headroom (1.0 = saturated);
    None when no endpoint has fresh signals."""
    known = full = 0
    for waiting, kv in signals:
        room = has_headroom(waiting, kv, limits)
        if room is None:
            continue
        known += 1
        full += not room
    return full / known if known else None
