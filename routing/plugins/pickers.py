"""Pickers choose one endpoint from scored candidates; each returns a member of its input."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter

from routing.picking import EndpointSnapshot, PickRequest

__all__ = [
    "LeastRequestPicker",
    "MaxScorePicker",
    "PowerOfTwoPicker",
    "RandomPicker",
    "RoundRobinPicker",
    "WeightedRandomPicker",
]

Scored = Sequence[tuple[EndpointSnapshot, float]]
_SCORE = itemgetter(1)
_TIE_EPSILON = 1e-9  # totals are sums of weighted floats: equal scores may differ in the last bits


@dataclass(frozen=True, slots=True)
class MaxScorePicker:
    """The highest total score; ties broken uniformly at random."""

    name: str = "max-score"

    def pick(self, req: PickRequest, scored: Scored, rng: random.Random) -> EndpointSnapshot:
        best = max(map(_SCORE, scored)) - _TIE_EPSILON
        tied = [e for e, s in scored if s >= best]
        return tied[rng.randrange(len(tied))] if len(tied) > 1 else tied[0]


@dataclass(frozen=True, slots=True)
class WeightedRandomPicker:
    """Random, with probability proportional to score (uniform when every score is 0)."""

    name: str = "weighted-random"

    def pick(self, req: PickRequest, scored: Scored, rng: random.Random) -> EndpointSnapshot:
        total = sum(max(0.0, s) for _, s in scored)
        if total <= 0:
            return scored[rng.randrange(len(scored))][0]
        point = rng.random() * total
        for endpoint, s in scored:
            point -= max(0.0, s)
            if point < 0:
                return endpoint
        return scored[-1][0]


@dataclass(frozen=True, slots=True)
class RandomPicker:
    """Uniformly random; ignores scores."""

    name: str = "random"

    def pick(self, req: PickRequest, scored: Scored, rng: random.Random) -> EndpointSnapshot:
        return scored[rng.randrange(len(scored))][0]


@dataclass(frozen=True, slots=True)
class RoundRobinPicker:
    """The next endpoint in key order after the pool's request counter; ignores scores."""

    name: str = "round-robin"

    def pick(self, req: PickRequest, scored: Scored, rng: random.Random) -> EndpointSnapshot:
        ordered = sorted((e for e, _ in scored), key=lambda e: e.key)
        return ordered[req.sequence % len(ordered)]


@dataclass(frozen=True, slots=True)
class LeastRequestPicker:
    """Fewest requests in flight from this gateway; ties broken at random; ignores scores."""

    name: str = "least-request"

    def pick(self, req: PickRequest, scored: Scored, rng: random.Random) -> EndpointSnapshot:
        fewest = min(e.in_flight for e, _ in scored)
        tied = [e for e, _ in scored if e.in_flight == fewest]
        return tied[rng.randrange(len(tied))]


@dataclass(frozen=True, slots=True)
class PowerOfTwoPicker:
    """Two distinct endpoints at random; the one with fewer in flight (ties: the first)."""

    name: str = "power-of-two"

    def pick(self, req: PickRequest, scored: Scored, rng: random.Random) -> EndpointSnapshot:
        if len(scored) == 1:
            return scored[0][0]
        a, b = rng.sample(range(len(scored)), 2)
        first, second = scored[a][0], scored[b][0]
        return second if second.in_flight < first.in_flight else first
