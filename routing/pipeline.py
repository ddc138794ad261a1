"""The picker pipeline: filters narrow, weighted scorers rank, one picker chooses.

Rules: a filter may only narrow its input; a scorer returns values in [0, 1] (the engine
clamps); a picker returns a member of its input. Randomness comes in as ``rng``; nothing here
reads a clock. An empty candidate set is a ``NoEligibleEndpoint`` value, never ``None``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from routing.picking import Decision, EndpointSnapshot, NoEligibleEndpoint, PickRequest, Trace

__all__ = ["Filter", "Picker", "Profile", "Scorer", "WeightedScorer", "run_profile"]

Endpoints = tuple[EndpointSnapshot, ...]


class Filter(Protocol):
    @property
    def name(self) -> str: ...

    def filter(self, req: PickRequest, eps: Endpoints) -> Endpoints: ...


class Scorer(Protocol):
    @property
    def name(self) -> str: ...

    def score(self, req: PickRequest, eps: Endpoints) -> Mapping[str, float]: ...


class Picker(Protocol):
    @property
    def name(self) -> str: ...

    def pick(
        self, req: PickRequest, totals: Sequence[tuple[EndpointSnapshot, float]], rng: random.Random
    ) -> EndpointSnapshot: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedScorer:
    scorer: Scorer
    weight: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    name: str
    filters: tuple[Filter, ...]
    scorers: tuple[WeightedScorer, ...]
    picker: Picker


def run_profile(
    profile: Profile, req: PickRequest, eps: Endpoints, rng: random.Random
) -> Decision | NoEligibleEndpoint:
    removed: list[tuple[str, tuple[str, ...]]] = []
    candidates = eps
    for f in profile.filters:
        kept = f.filter(req, candidates)
        if len(kept) != len(candidates):
            kept_keys = {e.key for e in kept}
            removed.append((f.name, tuple(e.key for e in candidates if e.key not in kept_keys)))
        candidates = kept
        if not candidates:
            return NoEligibleEndpoint(
                reason=f"filter {f.name} removed every endpoint",
                trace=Trace(removed=tuple(removed)),
            )
    scores: dict[str, Mapping[str, float]] = {}
    totals = dict.fromkeys((e.key for e in candidates), 0.0)
    for ws in profile.scorers:
        raw = ws.scorer.score(req, candidates)
        scores[ws.scorer.name] = raw
        weight = ws.weight
        for key, value in raw.items():
            if key in totals:
                totals[key] += weight * (value if 0.0 <= value <= 1.0 else float(value > 1.0))
    chosen = profile.picker.pick(req, [(e, totals[e.key]) for e in candidates], rng)
    return Decision(
        endpoint=chosen, trace=Trace(removed=tuple(removed), scores=scores, totals=totals)
    )
