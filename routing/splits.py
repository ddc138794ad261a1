"""Weighted choices: backendRefs of a rule and endpoints of a Service.

Gateway API: a backend's share is ``weight / sum(weights)``; weight 0 is never chosen; when
every weight is 0 there is nothing to choose (the caller answers 500).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Mapping, Sequence
from typing import TypeVar

from routing.backends import Endpoint

__all__ = ["choose_endpoint", "choose_weighted"]

T = TypeVar("T")


def choose_weighted(items: Sequence[T], cumulative: Sequence[int], rng: random.Random) -> T | None:
    """One of ``items`` with probability proportional to its weight; ``cumulative`` is the
    running sum of weights (``cumulative[-1]`` is the total). None when the total is 0."""
    if not cumulative or cumulative[-1] <= 0:
        return None
    point = rng.randrange(cumulative[-1])
    return items[bisect.bisect_right(cumulative, point)]


def choose_endpoint(
    endpoints: Sequence[Endpoint], in_flight: Mapping[str, int], rng: random.Random
) -> Endpoint | None:
    """Power of two choices on the gateway's own in-flight count: two distinct random
    endpoints, the less busy wins (ties: the first drawn). Spreads load like least-request
    without herding every request onto one endpoint between updates."""
    if not endpoints:
        return None
    if len(endpoints) == 1:
        return endpoints[0]
    a, b = rng.sample(range(len(endpoints)), 2)
    first, second = endpoints[a], endpoints[b]
    return second if in_flight.get(second.key, 0) < in_flight.get(first.key, 0) else first
