"""The picker pipeline: filters narrow, weighted scorers rank, one picker chooses.

Rules: a filter may only narrow its input (keeping its order); a scorer returns one value in
[0, 1] per candidate, aligned with its input; a picker returns a member of its input. The
contract suite (tests/unit/test_plugins_contract.py) holds every plugin to these rules.
Randomness comes in as ``rng``; nothing here reads a clock. An empty candidate set is a
``NoEligibleEndpoint`` value, never ``None``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter, mul
from typing import Protocol

from routing.picking import Decision, EndpointSnapshot, NoEligibleEndpoint, PickRequest, Trace

__all__ = ["Filter", "Picker", "Profile", "Scorer", "WeightedScorer", "run_profile"]

Endpoints = Sequence[EndpointSnapshot]


class Filter(Protocol):
    @property
    def name(self) -> str: ...

    def filter(self, req: PickRequest, eps: Endpoints) -> Endpoints: ...


class Scorer(Protocol):
    @property
    def name(self) -> str: ...

    def score(self, req: PickRequest, eps: Endpoints) -> Sequence[float]: ...


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
    n = len(candidates)
    scores: dict[str, Sequence[float]] = {}
    weighted: list[Iterable[float]] = []
    for ws in profile.scorers:
        raw = ws.scorer.score(req, candidates)
        if len(raw) != n:
            raise ValueError(f"scorer {ws.scorer.name} returned {len(raw)} scores for {n}")
        scores[ws.scorer.name] = raw
        weighted.append(raw if ws.weight == 1.0 else map(mul, raw, repeat(ws.weight)))
    # each candidate's Σ weight × score, summed in scorer order, in C: one pass for all
    # scorers, not one per scorer (this runs for every request)
    totals: list[float] = list(map(sum, zip(*weighted, strict=True))) if weighted else [0.0] * n
    chosen = profile.picker.pick(req, list(zip(candidates, totals, strict=True)), rng)
    keys = tuple(map(_KEY, candidates))
    return Decision(chosen, Trace(tuple(removed), keys, scores, totals))


_KEY = attrgetter("key")
