"""The approximate prefix-cache index: block hashing, depth matching, bounded memory."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from routing.prefix import PrefixIndex, PromptHasher, block_hashes

TEXT = "".join(f"block {i:03d} " + "x" * 54 for i in range(40))  # 40 blocks of 64 characters


def test_block_hashes_cover_only_whole_blocks_up_to_the_cap():
    assert len(block_hashes("m", TEXT)) == 40
    assert len(block_hashes("m", TEXT + "tail")) == 40
    assert len(block_hashes("m", TEXT, max_blocks=8)) == 8
    assert block_hashes("m", "short") == ()


def test_a_hash_names_the_whole_prefix():
    a = block_hashes("m", TEXT)
    changed_first = block_hashes("m", "Z" + TEXT[1:])
    changed_tenth = block_hashes("m", TEXT[: 9 * 64] + "Z" + TEXT[9 * 64 + 1 :])
    assert not set(a) & set(changed_first)
    assert a[:9] == changed_tenth[:9]
    assert not set(a[9:]) & set(changed_tenth[9:])


def test_the_model_seeds_the_chain():
    assert not set(block_hashes("m", TEXT)) & set(block_hashes("other", TEXT))


def test_match_counts_leading_blocks_per_endpoint_deepest_first():
    hashes = block_hashes("m", TEXT)
    index = PrefixIndex()
    index.record("a", hashes[:10])
    index.record("b", hashes[:30])
    index.record("c", hashes[:1])
    index.record("d", block_hashes("m", "Z" * 640))
    found = index.match(hashes)
    assert found == {"b": 30, "a": 10, "c": 1}
    assert list(found) == ["b", "a", "c"]


def test_match_stops_at_the_limit_keeping_the_deepest():
    hashes = block_hashes("m", TEXT)
    index = PrefixIndex()
    for depth in range(1, 41):
        index.record(f"ep{depth}", hashes[:depth])
    found = index.match(hashes, limit=3)
    assert len(found) == 3
    assert found["ep40"] == 40


def test_nothing_matches_an_unknown_prompt():
    index = PrefixIndex()
    index.record("a", block_hashes("m", TEXT))
    assert index.match(block_hashes("m", "Q" * 640)) == {}
    assert index.match(()) == {}


def test_memory_per_endpoint_is_bounded_and_the_deep_end_of_old_prompts_goes_first():
    index = PrefixIndex(capacity_blocks=50)
    first = block_hashes("m", TEXT)
    second = block_hashes("m", "Y" * 64 * 40)
    index.record("a", first)
    index.record("a", second)
    assert index.size("a") == 50
    assert index.match(second) == {"a": 40}
    # the least recent prompt lost its last 30 blocks, not its first: still a usable prefix
    assert index.match(first) == {"a": len(first) - 30}


def test_a_refresh_of_a_known_prefix_keeps_it_and_a_stale_hint_is_repaired():
    index = PrefixIndex(capacity_blocks=80)
    shared = block_hashes("m", TEXT)
    index.record("a", shared)
    index.record("a", block_hashes("m", "Z" * 64 * 30))
    index.record("a", shared, held=len(shared))  # a hit: refreshed, now the most recent
    index.record("a", block_hashes("m", "Q" * 64 * 30))  # evicts 20 blocks of the Z prompt
    assert index.match(shared) == {"a": len(shared)}  # without the refresh: 20 of it
    index.record("b", shared, held=len(shared))  # b held nothing: the hint was wrong
    assert index.match(shared) == {"a": len(shared), "b": len(shared)}


def test_forget_drops_everything_an_endpoint_held():
    hashes = block_hashes("m", TEXT)
    index = PrefixIndex()
    index.record("a", hashes)
    index.record("b", hashes[:5])
    index.forget("a")
    assert index.match(hashes) == {"b": 5}
    assert "a" not in index.endpoints()


prompts = st.lists(st.sampled_from("abc"), min_size=1, max_size=24).map(
    lambda blocks: "".join(ch * 64 for ch in blocks)
)


@settings(max_examples=200, deadline=None)
@given(
    recorded=st.lists(
        st.tuples(st.sampled_from(["e0", "e1", "e2", "e3", "e4"]), prompts), max_size=12
    ),
    query=prompts,
)
def test_match_is_the_longest_common_prefix_recorded_per_endpoint(recorded, query):
    """Without eviction, each endpoint's match is exactly the longest prefix it was sent."""
    index = PrefixIndex()
    expected: dict[str, int] = {}
    q = block_hashes("m", query)
    for endpoint, prompt in recorded:
        h = block_hashes("m", prompt)
        index.record(endpoint, h)
        common = next((i for i, (x, y) in enumerate(zip(h, q, strict=False)) if x != y),
                      min(len(h), len(q)))  # fmt: skip
        if common:
            expected[endpoint] = max(expected.get(endpoint, 0), common)
    found = index.match(q, limit=10)
    assert found == expected
    assert list(found.values()) == sorted(found.values(), reverse=True)


@settings(max_examples=100, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=40),
    recorded=st.lists(st.tuples(st.sampled_from(["e0", "e1"]), prompts), max_size=20),
)
def test_no_endpoint_ever_holds_more_than_its_capacity(capacity, recorded):
    index = PrefixIndex(capacity_blocks=capacity)
    for endpoint, prompt in recorded:
        index.record(endpoint, block_hashes("m", prompt))
        assert index.size(endpoint) <= capacity


part_texts = st.lists(st.text(alphabet="ab\n", max_size=40), max_size=6)


@given(st.lists(part_texts, min_size=1, max_size=6), st.integers(1, 8), st.integers(1, 6))
def test_the_prompt_hasher_agrees_with_hashing_the_joined_text(prompts, block, max_blocks):
    # small blocks and caps so parts straddle blocks and the cap; repeats hit the memo
    hasher = PromptHasher(block_chars=block, max_blocks=max_blocks, max_parts=4)
    for parts in prompts + prompts:
        expected = block_hashes("m", "".join(parts), block_chars=block, max_blocks=max_blocks)
        assert hasher.hashes("m", parts) == expected


def test_the_prompt_hasher_remembers_a_bounded_number_of_parts_and_characters():
    hasher = PromptHasher(max_parts=3, max_chars=10_000)
    for i in range(10):  # the question (last part) is not remembered, the long parts are
        hasher.hashes("m", (f"{i}" * 3000, "question " * 20))
    assert hasher.remembered == (3, 9000)
    hasher.hashes("m", ("x" * 6000, "y" * 6000, "question"))
    assert hasher.remembered == (1, 6000)  # the character budget evicts too
    assert hasher.hashes("x", ("s" * 300,)) != hasher.hashes("m", ("s" * 300,))  # model seeds


def test_a_shared_system_prompt_is_remembered_and_short_parts_are_not():
    hasher = PromptHasher()
    system = "You are a helpful assistant. " * 100
    first = hasher.hashes("m", (system, "hi", "question one"))
    assert hasher.remembered == (1, len(system))
    second = hasher.hashes("m", (system, "hi", "question two"))
    assert first[: len(system) // 64] == second[: len(system) // 64]
    assert hasher.remembered == (1, len(system))
