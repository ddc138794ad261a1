"""Sticky assignment against its contract (routing/sticky.py), with the spec texts as oracle.

HTTPBackendRef.weight: a variant's share is weight/sum(weights) and weight 0 gets no traffic.
Sluice's GOAL (reference §C.8): 100 % stable per key; monotone reweighting: raising the
candidate from w1 to w2 moves about (w2 - w1) of the keys, all to the candidate, none back.

The monotonicity and drain properties are exact (they hold key by key), so hypothesis may search
freely. Shares are statistical: with a fixed salt a check is deterministic and uses the
binomial 3 sigma band; with generated salts it uses 4.5 sigma and derandomized examples, as
test_split_properties.py does, so a run's ~100 checks do not trip by luck.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from routing.rollout import split_weights
from routing.sticky import StickySpec, assign, issue_cookie, key_from

KEYS = 10_000
ALL_KEYS = [f"key-{i}" for i in range(KEYS)]
SALT = "default/llama-v2"

names = st.text(min_size=1, max_size=12)
salts = st.text(max_size=20)
weights = st.integers(0, 1000)


def _shares_within(variants: list[tuple[str, int]], salt: str, z: float) -> None:
    total = sum(w for _, w in variants)
    counts = Counter(assign(k, variants, salt=salt) for k in ALL_KEYS)
    for name, w in variants:
        p = w / total
        sigma = math.sqrt(KEYS * p * (1 - p))
        assert abs(counts[name] - KEYS * p) <= z * sigma, (variants, name, counts[name])


@pytest.mark.parametrize(
    "weights",
    [(50, 50), (90, 10), (70, 30), (99, 1), (1, 2, 3), (10, 0, 30, 60), (1, 1, 1, 1, 1)],
    ids=lambda w: "-".join(map(str, w)),
)
def test_shares_lie_in_the_3_sigma_band(weights):
    _shares_within([(f"v{i}", w) for i, w in enumerate(weights)], SALT, 3.0)


@settings(max_examples=10, derandomize=True)
@given(salt=salts, ws=st.lists(st.integers(1, 100), min_size=2, max_size=4))
def test_shares_converge_for_any_salt(salt, ws):
    _shares_within([(f"v{i}", w) for i, w in enumerate(ws)], salt, 4.5)


@given(
    key=st.text(max_size=40),
    salt=salts,
    ws=st.lists(weights, min_size=1, max_size=6),
    override=st.none() | st.sampled_from(["v0", "v1", "nope"]),
)
def test_weight_zero_is_never_chosen_and_picks_are_members(key, salt, ws, override):
    variants = [(f"v{i}", w) for i, w in enumerate(ws)]
    pick = assign(key, variants, salt=salt)
    if sum(ws) == 0:
        assert pick is None
    else:
        assert pick in dict(variants)
        assert dict(variants)[pick] > 0
    # an override may pick weight 0, but only a listed variant
    forced = assign(key, variants, salt=salt, override=override)
    assert forced is None or forced in dict(variants)


@given(key=st.text(max_size=40), salt=salts, ws=st.lists(weights, min_size=1, max_size=5))
def test_the_same_key_always_gets_the_same_answer(key, salt, ws):
    variants = [(f"v{i}", w) for i, w in enumerate(ws)]
    assert len({assign(key, variants, salt=salt) for _ in range(5)}) == 1


@given(
    salt=salts,
    others=st.lists(weights, min_size=1, max_size=4),
    w1=weights,
    w2=weights,
    keys=st.lists(st.text(max_size=16), min_size=1, max_size=50),
)
@example(salt="", others=[90], w1=10, w2=20, keys=["a", "b", "c"])
def test_raising_the_candidate_never_moves_a_key_away_from_it(salt, others, w1, w2, keys):
    lo, hi = sorted((w1, w2))
    rest = [(f"other-{i}", w) for i, w in enumerate(others)]
    before_variants, after_variants = [*rest, ("cand", lo)], [*rest, ("cand", hi)]
    for key in keys:
        before = assign(key, before_variants, salt=salt)
        after = assign(key, after_variants, salt=salt)
        if before == "cand":
            assert after == "cand"
        if after != before:
            assert after == "cand"


@given(salt=salts, names_=st.lists(names, min_size=2, max_size=5, unique=True), data=st.data())
def test_draining_moves_only_the_drained_variants_keys(salt, names_, data):
    variants = [(n, data.draw(st.integers(1, 100))) for n in names_]
    drained = data.draw(st.sampled_from(names_))
    for key in (f"k{i}" for i in range(200)):
        before = assign(key, variants, salt=salt)
        during = assign(key, variants, salt=salt, drained={drained})
        assert during != drained
        if before != drained:
            assert during == before


@settings(max_examples=20, derandomize=True)
@given(salt=salts)
@example(salt=SALT)
def test_a_rollout_step_from_10_to_20_percent_moves_10_percent_forward_only(salt):
    rule = [("baseline", 1), ("candidate", 0)]
    at10 = split_weights(rule, baseline="baseline", candidate="candidate", weight=10)
    at20 = split_weights(rule, baseline="baseline", candidate="candidate", weight=20)
    moved = back = 0
    for key in ALL_KEYS:
        before, after = assign(key, at10, salt=salt), assign(key, at20, salt=salt)
        moved += before != after
        back += before == "candidate" and after != "candidate"
    assert back == 0
    assert 0.09 * KEYS <= moved <= 0.11 * KEYS


@given(st.text(alphabet="0123456789abcdef", min_size=1, max_size=32))
def test_an_issued_cookie_yields_the_key_the_first_request_was_assigned_by(token):
    spec = StickySpec(header="x-user-id", cookie="ab", api_key=True)
    issued = issue_cookie(spec, token)
    assert issued is not None
    key, set_cookie = issued
    assert set_cookie.startswith(f"ab={token}; ")
    assert key_from({}, {"ab": token}, spec) == key
    assert issue_cookie(StickySpec(header="x-user-id"), token) is None
    secure = issue_cookie(spec, token, secure=True)
    assert secure == (key, set_cookie + "; Secure")
