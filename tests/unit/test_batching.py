"""Embeddings micro-batching decisions (routing/batching.py): the planner's state machine, the
combined request body and the split of the answer. Tables first, then properties."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.batching import (
    Action,
    BatchLimits,
    BatchPlanner,
    Discard,
    EmbeddingInputs,
    Flush,
    FlushReason,
    Group,
    InputKind,
    Item,
    MalformedEmbeddingsError,
    Reject,
    Wait,
    apportion,
    build_request,
    estimate_tokens,
    group_of,
    limits_for,
    read_inputs,
    split_response,
)
from routing.model import EmbeddingBatching

A = Group(fields='{"model":"m"}', kind=InputKind.TEXT)
B = Group(fields='{"dimensions":8,"model":"m"}', kind=InputKind.TEXT)
LIMITS = BatchLimits(max_batch_size=4, max_batch_tokens=100, max_queue_delay_s=0.01, max_pending=8)
hypothesis_settings = settings(database=None, deadline=None)


def _item(id: int, group: Group | None = A, inputs: int = 1, tokens: int = 10) -> Item:
    return Item(id=id, group=group, inputs=inputs, tokens=tokens)


def _show(actions: tuple[Action, ...]) -> list[str]:
    """Actions as short strings: ``wait b0@1.01``, ``flush b0 size [0, 1]``, ``reject 3``..."""
    out = []
    for a in actions:
        match a:
            case Wait():
                out.append(f"wait b{a.batch_id}@{a.until:g}")
            case Flush():
                ids = [i.id for i in a.batch.items]
                out.append(f"flush b{a.batch.id} {a.batch.reason} {ids}")
            case Reject():
                out.append(f"reject {a.item_id} {a.reason}")
            case Discard():
                out.append(f"discard b{a.batch_id}")
    return out


# ---------------------------------------------------------------------------------------------
# the planner, table-driven

EIGHT_GROUPS_WAITING = [
    ("arrive", _item(i, group=Group(fields=str(i), kind=InputKind.TEXT)), 1.0) for i in range(8)
]
# (events, expected actions of the last event); events: ("arrive", Item, now), ("tick", now),
# ("cancel", item_id)
PLANNER_CASES = [
    pytest.param([("arrive", _item(0), 1.0)], ["wait b0@1.01"], id="first-item-opens-a-batch"),
    pytest.param(
        [("arrive", _item(i), 1.0) for i in range(4)],
        ["flush b0 size [0, 1, 2, 3]"],
        id="full-by-size-is-sent-at-once",
    ),
    pytest.param(
        [("arrive", _item(0, tokens=60), 1.0), ("arrive", _item(1, tokens=40), 1.0)],
        ["flush b0 tokens [0, 1]"],
        id="full-by-tokens-is-sent-at-once",
    ),
    pytest.param(
        [("arrive", _item(0, inputs=3), 1.0), ("arrive", _item(1, inputs=2), 1.002)],
        ["flush b0 size [0]", "wait b1@1.012"],
        id="overflow-by-size-sends-the-open-batch-first",
    ),
    pytest.param(
        [("arrive", _item(0, tokens=60), 1.0), ("arrive", _item(1, tokens=41), 1.0)],
        ["flush b0 tokens [0]", "wait b1@1.01"],
        id="overflow-by-tokens-sends-the-open-batch-first",
    ),
    pytest.param(
        [("arrive", _item(0, inputs=3), 1.0), ("arrive", _item(1, inputs=2), 1.0)],
        ["flush b0 size [0]", "wait b1@1.01"],
        id="overflow-then-new-batch",
    ),
    pytest.param(
        [("arrive", _item(0), 1.0), ("arrive", _item(1, inputs=5), 1.0)],
        ["flush b1 alone [1]"],
        id="list-longer-than-max-batch-size-goes-alone",
    ),
    pytest.param(
        [("arrive", _item(0, tokens=101), 1.0)],
        ["flush b0 alone [0]"],
        id="over-the-token-limit-alone-goes-alone",
    ),
    pytest.param(
        [("arrive", _item(0, group=None), 1.0)],
        ["flush b0 alone [0]"],
        id="unreadable-input-goes-alone",
    ),
    pytest.param(
        [("arrive", _item(i, inputs=4), 1.0) for i in range(3)],
        ["flush b2 size [2]"],
        id="exactly-max-batch-size-is-a-batch-of-one",
    ),
    pytest.param(
        [("arrive", _item(0, group=A), 1.0), ("arrive", _item(1, group=B), 1.001)],
        ["wait b1@1.011"],
        id="another-group-opens-its-own-batch",
    ),
    pytest.param(
        [("arrive", _item(0), 1.0), ("arrive", _item(1), 1.005), ("tick", 1.0099)],
        [],
        id="tick-before-the-deadline-sends-nothing",
    ),
    pytest.param(
        [("arrive", _item(0), 1.0), ("arrive", _item(1), 1.005), ("tick", 1.01)],
        ["flush b0 delay [0, 1]"],
        id="tick-at-the-deadline-sends",
    ),
    pytest.param(
        [
            ("arrive", _item(0, group=A), 1.0),
            ("arrive", _item(1, group=B), 1.004),
            ("tick", 1.02),
        ],
        ["flush b0 delay [0]", "flush b1 delay [1]"],
        id="tick-sends-every-due-batch",
    ),
    pytest.param(
        [("arrive", _item(0), 1.0), ("arrive", _item(1), 1.0), ("cancel", 0)],
        [],
        id="cancel-leaves-the-others-waiting",
    ),
    pytest.param(
        [("arrive", _item(0), 1.0), ("cancel", 0)],
        ["discard b0"],
        id="cancel-of-the-last-item-discards-the-batch",
    ),
    pytest.param(
        [("arrive", _item(0), 1.0), ("cancel", 7)],
        [],
        id="cancel-of-an-unknown-item-is-ignored",
    ),
    pytest.param(
        [("arrive", _item(0), 1.0), ("cancel", 0), ("arrive", _item(1), 1.001)],
        ["wait b1@1.011"],
        id="after-a-discard-the-next-item-opens-a-new-batch",
    ),
    pytest.param(
        [
            *EIGHT_GROUPS_WAITING,
            ("arrive", _item(8), 1.0),
        ],
        ["reject 8 embedding_queue_full"],
        id="beyond-max-pending-is-rejected",
    ),
    pytest.param(
        [
            *EIGHT_GROUPS_WAITING,
            ("arrive", _item(8, inputs=9), 1.0),
        ],
        ["flush b8 alone [8]"],
        id="an-item-sent-alone-is-not-capped",
    ),
]


@pytest.mark.parametrize(("events", "expected"), PLANNER_CASES)
def test_planner(events, expected):
    planner = BatchPlanner(LIMITS)
    actions: tuple[Action, ...] = ()
    for event in events:
        match event:
            case ("arrive", item, now):
                actions = planner.on_arrival(item, now)
            case ("tick", now):
                actions = planner.on_tick(now)
            case ("cancel", item_id):
                actions = planner.on_cancel(item_id)
    assert _show(actions) == expected


def test_planner_counts_pending_and_refuses_a_duplicate_id():
    planner = BatchPlanner(LIMITS)
    planner.on_arrival(_item(0), 1.0)
    assert planner.pending == 1
    assert planner.is_pending(0)
    with pytest.raises(ValueError, match="already waiting"):
        planner.on_arrival(_item(0), 1.0)
    planner.on_tick(2.0)
    assert planner.pending == 0
    assert not planner.is_pending(0)


def test_zero_delay_still_coalesces_what_arrives_before_the_timer_runs():
    planner = BatchPlanner(BatchLimits(max_batch_size=4, max_batch_tokens=100,
                                       max_queue_delay_s=0.0, max_pending=16))  # fmt: skip
    assert _show(planner.on_arrival(_item(0), 1.0)) == ["wait b0@1"]
    assert _show(planner.on_arrival(_item(1), 1.0)) == []
    assert _show(planner.on_tick(1.0)) == ["flush b0 delay [0, 1]"]


def test_limits_come_from_the_traffic_policy_settings():
    settings_ = EmbeddingBatching(max_batch_size=32, max_batch_tokens=16384, max_queue_delay_s=0.02)
    assert limits_for(settings_) == BatchLimits(
        max_batch_size=32, max_batch_tokens=16384, max_queue_delay_s=0.02, max_pending=128
    )


def test_batch_totals():
    batch = BatchPlanner(LIMITS)
    actions = [
        *batch.on_arrival(_item(0, inputs=2, tokens=30), 1.0),
        *batch.on_arrival(_item(1, inputs=2, tokens=5), 1.0),
    ]
    flush = actions[-1]
    assert isinstance(flush, Flush)
    assert (flush.batch.inputs, flush.batch.tokens) == (4, 35)


# ---------------------------------------------------------------------------------------------
# bodies, table-driven


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("hello", EmbeddingInputs(kind=InputKind.TEXT, values=("hello",))),
        (["a", "b"], EmbeddingInputs(kind=InputKind.TEXT, values=("a", "b"))),
        ([1, 2, 3], EmbeddingInputs(kind=InputKind.TOKENS, values=((1, 2, 3),))),
        ([[1, 2], [3]], EmbeddingInputs(kind=InputKind.TOKENS, values=((1, 2), (3,)))),
        ("", EmbeddingInputs(kind=InputKind.TEXT, values=("",))),
        ([], None),
        (None, None),
        (7, None),
        ({"text": "a"}, None),
        (["a", 1], None),
        ([[1], []], None),
        ([[1], "a"], None),
        ([True, False], None),
        ([[1, True]], None),
    ],
    ids=[
        "string", "strings", "token-ids", "token-id-lists", "empty-string", "empty-list",
        "missing", "number", "object", "mixed-string-and-id", "empty-token-list",
        "mixed-list-and-string", "booleans-are-not-ids", "boolean-in-a-token-list",
    ],
)  # fmt: skip
def test_read_inputs(raw, expected):
    document = {"model": "m"} if raw is None else {"model": "m", "input": raw}
    assert read_inputs(document) == expected


@pytest.mark.parametrize(
    ("value", "tokens"),
    [("", 1), ("abcd", 1), ("abcde", 2), ("x" * 4000, 1000), ((), 1), ((5, 6, 7), 3)],
    ids=["empty", "four-chars", "five-chars", "4000-chars", "no-ids", "three-ids"],
)
def test_estimate_tokens(value, tokens):
    assert estimate_tokens(value) == tokens


def _group(document: dict[str, object], headers: Sequence[tuple[str, str]] = ()) -> Group:
    inputs = read_inputs(document)
    assert inputs is not None
    return group_of(document, inputs, headers)


BASE: dict[str, object] = {"model": "m", "input": "x"}
MINE = (("authorization", "Bearer a"), ("x-request-id", "r1"))


@pytest.mark.parametrize(
    ("other", "headers", "same"),
    [
        ({"model": "m", "input": ["y", "z"]}, MINE, True),
        ({"input": "y", "model": "m"}, MINE, True),
        ({**BASE, "encoding_format": "base64"}, MINE, False),
        ({**BASE, "dimensions": 8}, MINE, False),
        ({**BASE, "user": "u"}, MINE, False),
        ({"model": "other", "input": "x"}, MINE, False),
        ({"model": "m", "input": [1, 2]}, MINE, False),
        (BASE, (("Authorization", "Bearer b"), ("x-request-id", "r1")), False),
        (BASE, (("x-request-id", "r1"),), False),
        (BASE, (("Authorization", "Bearer a"), ("X-Request-Id", "r2")), True),
    ],
    ids=[
        "only-input-differs", "key-order", "encoding-format", "dimensions", "user", "model",
        "token-ids-vs-text", "other-credentials", "no-credentials", "other-request-id",
    ],
)  # fmt: skip
def test_groups(other, headers, same):
    assert (_group(BASE, MINE) == _group(other, headers)) is same


def test_credential_header_names_are_case_insensitive():
    assert _group(BASE, (("Authorization", "k"),)) == _group(BASE, (("authorization", "k"),))


def test_a_single_caller_is_sent_unchanged():
    document = {"model": "m", "input": "just me", "dimensions": 4}
    assert build_request([document], [read_inputs(document)]) == document


def test_callers_inputs_are_concatenated_in_order():
    docs: list[dict[str, object]] = [
        {"model": "m", "input": "a"},
        {"model": "m", "input": ["b", "c"]},
    ]
    body = build_request(docs, [read_inputs(d) for d in docs])
    assert body == {"model": "m", "input": ["a", "b", "c"]}
    tokens: list[dict[str, object]] = [
        {"model": "m", "input": [1, 2]},
        {"model": "m", "input": [[3], [4, 5]]},
    ]
    body = build_request(tokens, [read_inputs(d) for d in tokens])
    assert json.loads(json.dumps(body)) == {"model": "m", "input": [[1, 2], [3], [4, 5]]}


def test_an_unreadable_input_is_never_combined():
    with pytest.raises(ValueError, match="alone"):
        build_request([{"input": []}, {"input": "a"}], [None, read_inputs({"input": "a"})])


def _answer(total: int, usage: object = None, order: list[int] | None = None) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": [float(i)]} for i in range(total)]
    if order is not None:
        data = [data[i] for i in order]
    out: dict[str, Any] = {"object": "list", "model": "m", "data": data}
    if usage is not None:
        out["usage"] = usage
    return out


def _split(payload: object, counts: list[int], weights: list[int]) -> list[dict[str, Any]]:
    return [dict[str, Any](p) for p in split_response(payload, counts, weights)]


def test_split_gives_each_caller_its_own_slice_reindexed():
    usage = {"prompt_tokens": 10, "total_tokens": 10}
    parts = _split(_answer(3, usage, order=[2, 0, 1]), counts=[1, 2], weights=[1, 3])
    assert [[d["embedding"] for d in p["data"]] for p in parts] == [[[0.0]], [[1.0], [2.0]]]
    assert [[d["index"] for d in p["data"]] for p in parts] == [[0], [0, 1]]
    assert [p["usage"] for p in parts] == [
        {"prompt_tokens": 3, "total_tokens": 3},
        {"prompt_tokens": 7, "total_tokens": 7},
    ]
    assert all(p["model"] == "m" and p["object"] == "list" for p in parts)


def test_split_drops_usage_fields_that_describe_the_whole_batch():
    usage = {"prompt_tokens": 4, "prompt_tokens_details": {"cached_tokens": 2}, "flag": True}
    parts = _split(_answer(2, usage), counts=[1, 1], weights=[1, 1])
    assert [p["usage"] for p in parts] == [{"prompt_tokens": 2}, {"prompt_tokens": 2}]


def test_split_without_usage_gives_none():
    parts = _split(_answer(2), counts=[1, 1], weights=[1, 1])
    assert all("usage" not in p for p in parts)


def test_split_for_a_single_caller_is_the_answer_unchanged():
    answer = {"data": "whatever the upstream said", "usage": {"prompt_tokens": 3}}
    assert split_response(answer, counts=[2], weights=[1]) == (answer,)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "not a JSON object"),
        ({"object": "list"}, "expected 2"),
        (_answer(3), "expected 2"),
        ({"data": [{"index": 0}, {"index": 0}]}, "repeat"),
        ({"data": [{"index": 0}, {"index": 2}]}, "valid index"),
        ({"data": [{"index": 0}, {"index": True}]}, "valid index"),
        ({"data": [{"index": 0}, {"index": -1}]}, "valid index"),
        ({"data": [{"index": 0}, "x"]}, "valid index"),
        ({"data": [{"index": 0}, {}]}, "valid index"),
    ],
    ids=[
        "not-an-object", "no-data", "too-many", "repeated-index", "index-out-of-range",
        "boolean-index", "negative-index", "entry-not-an-object", "entry-without-index",
    ],
)  # fmt: skip
def test_split_refuses_an_answer_it_cannot_share(payload, message):
    with pytest.raises(MalformedEmbeddingsError, match=message):
        split_response(payload, counts=[1, 1], weights=[1, 1])


@pytest.mark.parametrize(
    ("total", "weights", "parts"),
    [
        (10, [1, 1, 1], (4, 3, 3)),
        (10, [1, 3], (3, 7)),
        (0, [5, 5], (0, 0)),
        (7, [0, 0], (4, 3)),
        (5, [], ()),
        (3, [1, 1, 1, 1], (1, 1, 1, 0)),
        (1, [1, 2], (0, 1)),
        (-5, [1, 1], (-2, -3)),
    ],
    ids=["thirds", "one-to-three", "zero", "zero-weights", "nobody", "fewer-than-callers",
         "largest-remainder", "negative"],
)  # fmt: skip
def test_apportion(total, weights, parts):
    assert apportion(total, weights) == parts


# ---------------------------------------------------------------------------------------------
# properties


@dataclass
class _Run:
    """The gateway's side of the planner, simulated: timers fire exactly at their ``until``."""

    limits: BatchLimits
    planner: BatchPlanner = field(init=False)
    arrived: dict[int, tuple[float, Item]] = field(default_factory=dict)
    flushed: dict[int, float] = field(default_factory=dict)  # item id -> when
    batches: list[tuple[Flush, float]] = field(default_factory=list)
    rejected: set[int] = field(default_factory=set)
    cancelled: set[int] = field(default_factory=set)
    timers: dict[int, float] = field(default_factory=dict)  # batch id -> until
    ended: set[int] = field(default_factory=set)  # batch ids flushed or discarded

    def __post_init__(self) -> None:
        self.planner = BatchPlanner(self.limits)

    def perform(self, actions: tuple[Action, ...], now: float) -> None:
        for a in actions:
            match a:
                case Wait():
                    assert a.batch_id not in self.timers
                    assert a.batch_id not in self.ended
                    assert a.until == now + self.limits.max_queue_delay_s
                    self.timers[a.batch_id] = a.until
                case Flush():
                    assert a.batch.id not in self.ended
                    self.ended.add(a.batch.id)
                    self.timers.pop(a.batch.id, None)
                    self.batches.append((a, now))
                    for item in a.batch.items:
                        assert item.id not in self.flushed, "an item was sent twice"
                        self.flushed[item.id] = now
                case Reject():
                    self.rejected.add(a.item_id)
                case Discard():
                    assert a.batch_id in self.timers
                    self.ended.add(a.batch_id)
                    del self.timers[a.batch_id]
        assert self.planner.pending <= self.limits.max_pending

    def advance(self, now: float) -> None:
        """Fire every timer due by ``now``, in order, each at its own time."""
        while self.timers and min(self.timers.values()) <= now:
            until = min(self.timers.values())
            due = {b for b, t in self.timers.items() if t == until}
            self.perform(self.planner.on_tick(until), until)
            assert not due & self.timers.keys(), "a batch was not sent at its deadline"


GROUPS = [A, B, None]
events = st.lists(
    st.one_of(
        st.tuples(
            st.just("arrive"),
            st.sampled_from(GROUPS),
            st.integers(1, 6),  # inputs
            st.integers(1, 60),  # tokens
            st.floats(0, 0.02),  # time since the previous event
        ),
        st.tuples(st.just("cancel"), st.integers(0, 40), st.floats(0, 0.02)),
    ),
    max_size=40,
)
limits = st.builds(
    BatchLimits,
    max_batch_size=st.integers(1, 8),
    max_batch_tokens=st.integers(1, 120),
    max_queue_delay_s=st.sampled_from([0.0, 0.005, 0.01]),
    max_pending=st.integers(1, 12),
)


@hypothesis_settings
@given(limits=limits, script=events)
def test_planner_properties(limits, script):
    run = _Run(limits)
    now, next_id = 0.0, 0
    for event in script:
        now += event[-1]
        run.advance(now)
        if event[0] == "arrive":
            _, group, inputs, tokens, _ = event
            item = Item(id=next_id, group=group, inputs=inputs, tokens=tokens)
            run.arrived[next_id] = (now, item)
            next_id += 1
            run.perform(run.planner.on_arrival(item, now), now)
        else:
            item_id = event[1]
            if run.planner.is_pending(item_id):
                run.cancelled.add(item_id)
            run.perform(run.planner.on_cancel(item_id), now)
    run.advance(math.inf)

    # liveness: nothing is left waiting, and every opened batch ended once
    assert run.planner.pending == 0
    assert not run.timers
    # every item ends exactly one way
    for item_id in run.arrived:
        fates = [item_id in run.flushed, item_id in run.rejected, item_id in run.cancelled]
        assert sum(fates) == 1, (item_id, fates)
    for flush, when in run.batches:
        batch = flush.batch
        if batch.reason is FlushReason.ALONE:
            assert len(batch.items) == 1
            continue
        # limits are never exceeded, and a batch holds one group
        assert batch.inputs <= limits.max_batch_size
        assert batch.tokens <= limits.max_batch_tokens
        assert len({i.group for i in batch.items}) == 1
        assert None not in {i.group for i in batch.items}
        # no item waits longer than max_queue_delay_s; arrival order is kept in a batch
        arrivals = [run.arrived[i.id][0] for i in batch.items]
        assert when - min(arrivals) <= limits.max_queue_delay_s + 1e-12
        assert [i.id for i in batch.items] == sorted(i.id for i in batch.items)
        if batch.reason is FlushReason.DELAY:
            assert when - min(arrivals) >= limits.max_queue_delay_s - 1e-12


@hypothesis_settings
@given(
    counts=st.lists(st.integers(1, 5), min_size=2, max_size=6),
    data=st.data(),
)
def test_split_properties(counts, data):
    weights = data.draw(st.lists(st.integers(1, 100), min_size=len(counts), max_size=len(counts)))
    usage = {
        "prompt_tokens": data.draw(st.integers(0, 10_000)),
        "total_tokens": data.draw(st.integers(0, 10_000)),
    }
    total = sum(counts)
    order = data.draw(st.permutations(range(total)))
    parts = _split(_answer(total, usage, order=list(order)), counts, weights)

    start = 0
    for count, part in zip(counts, parts, strict=True):
        # each caller gets exactly its own embeddings, in order, indexed 0..n-1
        assert [d["embedding"] for d in part["data"]] == [[float(p)] for p in
                                                          range(start, start + count)]  # fmt: skip
        assert [d["index"] for d in part["data"]] == list(range(count))
        start += count
    for key, value in usage.items():
        shares = [p["usage"][key] for p in parts]
        assert sum(shares) == value
        for share, w in zip(shares, weights, strict=True):
            assert abs(share - value * w / sum(weights)) < 1


texts = st.text(alphabet="abcdefgh ", max_size=30)
caller_inputs = st.one_of(texts, st.lists(texts, min_size=1, max_size=4))


@hypothesis_settings
@given(callers=st.lists(caller_inputs, min_size=1, max_size=6), seed=st.integers(0, 2**16))
def test_combine_then_split_gives_every_caller_its_own_answers(callers, seed):
    """With an upstream that embeds each input as itself and answers in any order."""
    docs: list[dict[str, object]] = [{"model": "m", "input": c} for c in callers]
    inputs = [read_inputs(d) for d in docs]
    body = build_request(docs, inputs)
    sent: list[Any] = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = [{"object": "embedding", "index": i, "embedding": t} for i, t in enumerate(sent)]
    random.Random(seed).shuffle(data)
    prompt = sum(len(t) for t in sent)
    answer: dict[str, Any] = {"object": "list", "data": data, "usage": {"prompt_tokens": prompt}}

    parts = _split(
        answer,
        counts=[len(i.values) for i in inputs if i is not None],
        weights=[i.tokens for i in inputs if i is not None],
    )

    for caller, part in zip(callers, parts, strict=True):
        own = [caller] if isinstance(caller, str) else caller
        ordered = sorted(part["data"], key=lambda d: d["index"])
        assert [d["embedding"] for d in ordered] == own
        if len(callers) > 1:
            assert [d["index"] for d in part["data"]] == list(range(len(own)))
    assert sum(p["usage"]["prompt_tokens"] for p in parts) == prompt


@hypothesis_settings
@given(total=st.integers(-1000, 10_000), weights=st.lists(st.integers(0, 50), max_size=8))
def test_apportion_properties(total, weights):
    parts = apportion(total, weights)
    assert len(parts) == len(weights)
    if weights:
        assert sum(parts) == total
        effective = weights if sum(weights) else [1] * len(weights)
        for part, w in zip(parts, effective, strict=True):
            assert abs(part - total * w / sum(effective)) < 1
