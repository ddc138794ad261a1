"""The session ring: stable owners, minimal movement, and a bounded memo that never changes
an answer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routing import hashring
from routing.hashring import HashRing

KEYS = [f"10.0.0.{i}:8000" for i in range(12)]
sessions = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=60)


@given(sessions)
def test_remembered_answers_equal_computed_ones(names):
    ring = HashRing(KEYS)
    for name in names + names:  # the second pass answers from the memo
        assert ring.lookup(name) == HashRing(KEYS).lookup(name)


@given(sessions)
def test_removing_an_endpoint_moves_only_its_sessions(names):
    full, less = HashRing(KEYS), HashRing(KEYS[1:])
    for name in names:
        owner = full.lookup(name)
        if owner != KEYS[0]:
            assert less.lookup(name) == owner


def test_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(hashring, "MEMO_SESSIONS", 50)
    ring = HashRing(KEYS)
    for i in range(500):
        assert ring.lookup(f"user-{i}") in KEYS
        assert len(ring._memo) <= 50


def test_long_session_ids_are_not_remembered():
    ring = HashRing(KEYS)
    long_id = "x" * (hashring.MEMO_MAX_CHARS + 1)
    assert ring.lookup(long_id) == HashRing(KEYS).lookup(long_id)
    assert long_id not in ring._memo


def test_empty_ring_has_no_owner():
    assert HashRing([]).lookup("anyone") is None


@given(st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1))
def test_session_ids_that_are_not_valid_text_still_have_an_owner(session):
    # undecodable header bytes reach us as lone surrogates (aiohttp's surrogateescape)
    ring = HashRing(["a:1", "b:1"])
    assert ring.lookup(session) in {"a:1", "b:1"}
    assert hashring.stable_hash(session) == hashring.stable_hash(session)
