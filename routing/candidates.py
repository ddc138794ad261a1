"""Bound the picker's work in large pools: score a small candidate set, not every endpoint.

Pools up to ``limit`` endpoints are scored whole. Beyond that, the candidates are the
endpoints affinity points at (the session's endpoint, the best prefix holders, those running
the adapter; at most half the set, so load always has a say) plus a uniform random sample —
the power-of-k-choices idea (Envoy's least_request, Ray Serve) applied to weighted scoring.
"""

from __future__ import annotations

import random
from collections.abc import Container, Iterable, Sequence

__all__ = ["DEFAULT_MAX_CANDIDATES", "select_candidates"]

DEFAULT_MAX_CANDIDATES = 16


def select_candidates(
    keys: Sequence[str],
    preferred: Iterable[str],
    limit: int,
    rng: random.Random,
    allowed: Container[str] | None = None,
) -> list[str]:
    """At most ``limit`` of ``keys``: preferred ones first (up to half), then a random fill.
    ``allowed`` is ``keys`` as a set, when the caller has one (saves building it)."""
    if len(keys) <= limit:
        return list(keys)
    if allowed is None:
        allowed = set(keys)
    chosen: dict[str, None] = {}
    for key in preferred:
        if len(chosen) >= limit // 2:
            break
        if key in allowed:
            chosen[key] = None
    n = len(keys)
    while len(chosen) < limit:  # terminates: len(keys) > limit
        chosen.setdefault(keys[int(rng.random() * n)], None)
    return list(chosen)
