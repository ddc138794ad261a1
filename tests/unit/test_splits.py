"""Weighted choice of a backendRef and the power-of-two-choices endpoint pick (splits.py).

HTTPBackendRef.weight: "proportion of requests forwarded to the referenced backend ... computed
as weight/(sum of all weights in this BackendRefs list) ... Weight 0 ... no traffic".
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from routing.backends import Endpoint
from routing.splits import choose_endpoint, choose_weighted


def _cumulative(weights: list[int]) -> list[int]:
    out, total = [], 0
    for w in weights:
        total += w
        out.append(total)
    return out


@pytest.mark.parametrize(
    "weights",
    [[], [0], [0, 0, 0]],
    ids=["no-backends", "one-weight-zero", "all-weights-zero"],
)
def test_nothing_to_choose(weights: list[int]) -> None:
    items = [f"b{i}" for i in range(len(weights))]
    assert choose_weighted(items, _cumulative(weights), random.Random(0)) is None


@pytest.mark.parametrize(
    ("weights", "only"),
    [([1], 0), ([0, 1], 1), ([1, 0], 0), ([0, 5, 0], 1), ([0, 0, 1_000_000], 2)],
    ids=["single", "zero-first", "zero-last", "zeros-around", "max-weight"],
)
def test_weight_zero_is_never_chosen(weights: list[int], only: int) -> None:
    rng = random.Random(7)
    items = list(range(len(weights)))
    picks = {choose_weighted(items, _cumulative(weights), rng) for _ in range(500)}
    assert picks == {only}


DRAWS = 10_000


@pytest.mark.parametrize(
    ("weights", "seed"),
    [([1, 1], 1), ([80, 20], 2), ([1, 2, 3, 4], 3), ([70, 0, 30], 4), ([1, 999], 5)],
    ids=["even", "80-20", "1-2-3-4", "with-zero", "skewed"],
)
def test_shares_converge_to_weight_over_total(weights: list[int], seed: int) -> None:
    rng = random.Random(seed)
    items = list(range(len(weights)))
    counts = Counter(choose_weighted(items, _cumulative(weights), rng) for _ in range(DRAWS))
    total = sum(weights)
    for i, w in enumerate(weights):
        p = w / total
        sigma = math.sqrt(DRAWS * p * (1 - p))
        assert abs(counts[i] - DRAWS * p) <= 3 * sigma, (i, counts[i], DRAWS * p)


def test_a_seeded_rng_repeats_its_choices() -> None:
    cumulative = _cumulative([1, 2, 3])
    first = [choose_weighted("abc", cumulative, random.Random(42)) for _ in range(20)]
    again = [choose_weighted("abc", cumulative, random.Random(42)) for _ in range(20)]
    assert first == again


def _endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(address=f"10.0.0.{i}", port=8000) for i in range(n)]


def test_no_endpoint_to_choose() -> None:
    assert choose_endpoint([], {}, random.Random(0)) is None


def test_a_single_endpoint_is_chosen_whatever_its_load() -> None:
    (only,) = _endpoints(1)
    assert choose_endpoint([only], {only.key: 99}, random.Random(0)) is only


def test_of_two_the_less_busy_wins() -> None:
    a, b = _endpoints(2)
    for seed in range(20):
        assert choose_endpoint([a, b], {a.key: 3, b.key: 1}, random.Random(seed)) is b
        assert choose_endpoint([a, b], {b.key: 1}, random.Random(seed)) is a  # absent: 0


def test_ties_go_to_the_first_drawn() -> None:
    eps = _endpoints(5)
    for seed in range(20):
        first, _ = random.Random(seed).sample(range(5), 2)
        assert choose_endpoint(eps, {}, random.Random(seed)) is eps[first]


def test_the_busiest_endpoint_is_never_chosen_and_load_spreads() -> None:
    eps = _endpoints(4)
    load = {eps[0].key: 10, eps[1].key: 0, eps[2].key: 0, eps[3].key: 0}
    rng = random.Random(11)
    picks: Counter[str] = Counter()
    for _ in range(2000):
        pick = choose_endpoint(eps, load, rng)
        assert pick is not None
        picks[pick.key] += 1
    assert eps[0].key not in picks
    assert set(picks) == {e.key for e in eps[1:]}
