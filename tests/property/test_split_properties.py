"""Weighted choice and endpoint picks, with the spec text as the oracle.

HTTPBackendRef.weight: "the proportion of requests forwarded to the referenced backend. This is
computed as weight/(sum of all weights in this BackendRefs list)... Weight 0 ... no traffic".
"""

from __future__ import annotations

import math
import random
from collections import Counter

from hypothesis import example, given, settings
from hypothesis import strategies as st

from routing.backends import Endpoint
from routing.splits import choose_endpoint, choose_weighted

seeds = st.integers(0, 2**32 - 1)
weights_lists = st.lists(st.integers(0, 100), min_size=1, max_size=8)


def _cumulative(weights: list[int]) -> list[int]:
    out, total = [], 0
    for w in weights:
        total += w
        out.append(total)
    return out


@given(weights=weights_lists, seed=seeds)
def test_weight_zero_is_never_chosen_and_picks_are_members(weights: list[int], seed: int) -> None:
    rng = random.Random(seed)
    items = [f"backend-{i}" for i in range(len(weights))]
    for _ in range(200):
        pick = choose_weighted(items, _cumulative(weights), rng)
        if sum(weights) == 0:
            assert pick is None
        else:
            assert pick in items
            assert weights[items.index(pick)] > 0


DRAWS = 10_000
# Each example checks every backend; 4.5 sigma keeps the chance that any of the ~150 checks of
# a run trips by luck under 1e-3, while a real bias (a weight off by one, a neighbour's share)
# moves a share by far more. The examples are derandomized so a run is reproducible.
Z = 4.5


@settings(max_examples=30, derandomize=True)
@given(weights=st.lists(st.integers(0, 50), min_size=2, max_size=5), seed=seeds)
@example(weights=[1, 1], seed=0)
@example(weights=[80, 20], seed=1)
def test_shares_converge_to_weight_over_total(weights: list[int], seed: int) -> None:
    total = sum(weights)
    if total == 0:
        return
    rng = random.Random(seed)
    items = list(range(len(weights)))
    counts = Counter(choose_weighted(items, _cumulative(weights), rng) for _ in range(DRAWS))
    for i, w in enumerate(weights):
        p = w / total
        sigma = math.sqrt(DRAWS * p * (1 - p))
        assert abs(counts[i] - DRAWS * p) <= Z * sigma, (weights, i, counts[i])


loads = st.lists(st.integers(0, 5), min_size=1, max_size=8)


@given(load=loads, seed=seeds)
def test_endpoint_pick_is_a_member_and_never_the_single_busiest(load: list[int], seed: int) -> None:
    endpoints = [Endpoint(address=f"10.0.0.{i}", port=8000) for i in range(len(load))]
    in_flight = {e.key: n for e, n in zip(endpoints, load, strict=True)}
    pick = choose_endpoint(endpoints, in_flight, random.Random(seed))
    assert pick in endpoints
    busiest = max(load)
    if len(load) > 1 and load.count(busiest) == 1:
        # two distinct endpoints are compared and the less busy one wins
        assert in_flight[pick.key] < busiest
