"""Embeddings micro-batching, the decisions: which waiting ``/v1/embeddings`` callers share one
upstream call, when that call is sent, how their bodies combine and how the answer is split.

It must never read a clock (``now`` comes in), start I/O or hold a future: ``gateway/
embeddings.py`` feeds events in and performs the actions that come out, as httpcore's pool
does with h11.

``BatchPlanner`` is one state machine per (pool, model, settings). Events: ``on_arrival(item,
now)``, ``on_tick(now)``, ``on_cancel(item_id)``. Actions: ``Flush(batch)`` (send it now),
``Wait(batch_id, until)`` (arm a timer), ``Reject(item_id, ...)`` (answer 503) and
``Discard(batch_id)`` (cancellations emptied it: disarm its timer).

Rules:

1. Only items of one ``Group`` share a batch: the same body in every field but ``input``
   (``model``, ``encoding_format``, ``dimensions``, ``user``...), the same kind of input (text
   or token ids: the API has no mixed list), and the same credential headers, so that nobody
   is ever served under another caller's API key.
2. A batch is sent as soon as it holds ``max_batch_size`` inputs or ``max_batch_tokens``
   estimated tokens (``CHARS_PER_TOKEN`` characters or one token id each), or
   ``max_queue_delay_s`` after its first item arrived. An item that would overflow the open
   batch of its group sends that batch first and opens the next one.
3. An item over a limit by itself (a list input longer than ``max_batch_size``) or with an
   input the planner cannot read is sent alone with its body unchanged, never split: the
   upstream applies its own limits and answers it exactly as it would without Sluice. Any
   batch of one caller is likewise sent with the caller's body and answered verbatim.
4. At most ``max_pending`` items wait per planner (``PENDING_PER_BATCH_SIZE`` x
   ``max_batch_size``); beyond that an arrival is rejected. Items sent alone never wait.
5. Usage: an OpenAI embeddings answer has one ``usage`` for the whole call and nothing per
   item, so each caller gets a share of every integer usage field proportional to its
   estimated tokens, apportioned by largest remainder: the shares sum exactly to the
   upstream's numbers. ``index`` is renumbered 0..n-1 within each caller's own list.
"""

from __future__ import annotations

import enum
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from routing.model import EmbeddingBatching
from routing.openai import CHARS_PER_TOKEN

__all__ = [
    "Action",
    "Batch",
    "BatchLimits",
    "BatchPlanner",
    "Discard",
    "EmbeddingInputs",
    "Flush",
    "FlushReason",
    "Group",
    "InputKind",
    "Item",
    "MalformedEmbeddingsError",
    "Reject",
    "Wait",
    "apportion",
    "build_request",
    "estimate_tokens",
    "group_of",
    "limits_for",
    "read_inputs",
    "split_response",
]

PENDING_PER_BATCH_SIZE = 4
MIN_RETRY_AFTER_S = 1.0
# Headers that decide whose account a call is made on (rule 1).
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "api-key", "x-api-key", "openai-organization", "openai-project"}
)
QUEUE_FULL = "embedding_queue_full"


class InputKind(enum.StrEnum):
    TEXT = "text"
    TOKENS = "tokens"


class FlushReason(enum.StrEnum):
    SIZE = "size"  # max_batch_size inputs reached, or the next item would exceed it
    TOKENS = "tokens"  # the same for max_batch_tokens
    DELAY = "delay"  # max_queue_delay_s after the batch opened
    ALONE = "alone"  # rule 3


class MalformedEmbeddingsError(ValueError):
    """The upstream answered 200 with a body that cannot be split between the callers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchLimits:
    max_batch_size: int
    max_batch_tokens: int
    max_queue_delay_s: float
    max_pending: int


def limits_for(settings: EmbeddingBatching) -> BatchLimits:
    return BatchLimits(
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=settings.max_batch_tokens,
        max_queue_delay_s=settings.max_queue_delay_s,
        max_pending=PENDING_PER_BATCH_SIZE * settings.max_batch_size,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    """What callers must share to share a batch (rule 1)."""

    fields: str  # every body field but ``input``, as canonical JSON
    kind: InputKind
    credentials: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    """One waiting caller as the planner sees it."""

    id: int
    group: Group | None  # None: never merged (rule 3)
    inputs: int
    tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    id: int
    items: tuple[Item, ...]
    reason: FlushReason

    @property
    def inputs(self) -> int:
        return sum(i.inputs for i in self.items)

    @property
    def tokens(self) -> int:
        return sum(i.tokens for i in self.items)


@dataclass(frozen=True, slots=True, kw_only=True)
class Flush:
    batch: Batch


@dataclass(frozen=True, slots=True, kw_only=True)
class Wait:
    batch_id: int
    until: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    item_id: int
    reason: str
    retry_after_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Discard:
    batch_id: int


Action = Flush | Wait | Reject | Discard


@dataclass(slots=True, kw_only=True)
class _Open:
    id: int
    deadline: float
    items: list[Item] = field(default_factory=list)
    inputs: int = 0
    tokens: int = 0


class BatchPlanner:
    """Open batches per group; see the module docstring for the rules."""

    def __init__(self, limits: BatchLimits) -> None:
        self.limits = limits
        self._open: dict[Group, _Open] = {}
        self._where: dict[int, Group] = {}  # waiting item id -> its group
        self._ids = itertools.count()

    @property
    def pending(self) -> int:
        """Items waiting in an open batch."""
        return len(self._where)

    def is_pending(self, item_id: int) -> bool:
        return item_id in self._where

    def on_arrival(self, item: Item, now: float) -> tuple[Action, ...]:
        if item.id in self._where:
            raise ValueError(f"item {item.id} is already waiting")
        lim = self.limits
        group = item.group
        if group is None or item.inputs > lim.max_batch_size or item.tokens > lim.max_batch_tokens:
            return (
                Flush(batch=Batch(id=next(self._ids), items=(item,), reason=FlushReason.ALONE)),
            )
        if self.pending >= lim.max_pending:
            retry = max(MIN_RETRY_AFTER_S, lim.max_queue_delay_s)
            return (Reject(item_id=item.id, reason=QUEUE_FULL, retry_after_s=retry),)
        actions: list[Action] = []
        batch = self._open.get(group)
        if batch is not None and (reason := self._overflow(batch, item)) is not None:
            actions.append(Flush(batch=self._close(group, reason)))
            batch = None
        opened = batch is None
        if batch is None:
            batch = self._open[group] = _Open(
                id=next(self._ids), deadline=now + lim.max_queue_delay_s
            )
        batch.items.append(item)
        batch.inputs += item.inputs
        batch.tokens += item.tokens
        self._where[item.id] = group
        if (reason := self._full(batch)) is not None:
            actions.append(Flush(batch=self._close(group, reason)))
        elif opened:
            actions.append(Wait(batch_id=batch.id, until=batch.deadline))
        return tuple(actions)

    def on_tick(self, now: float) -> tuple[Action, ...]:
        """Send every batch whose first item has waited ``max_queue_delay_s``."""
        due = [g for g, b in self._open.items() if b.deadline <= now]
        return tuple(Flush(batch=self._close(g, FlushReason.DELAY)) for g in due)

    def on_cancel(self, item_id: int) -> tuple[Action, ...]:
        """The caller left: take it out of its batch if that has not been sent."""
        group = self._where.pop(item_id, None)
        if group is None:
            return ()
        batch = self._open[group]
        item = next(i for i in batch.items if i.id == item_id)
        batch.items.remove(item)
        batch.inputs -= item.inputs
        batch.tokens -= item.tokens
        if batch.items:
            return ()
        del self._open[group]
        return (Discard(batch_id=batch.id),)

    def _overflow(self, batch: _Open, item: Item) -> FlushReason | None:
        if batch.inputs + item.inputs > self.limits.max_batch_size:
            return FlushReason.SIZE
        if batch.tokens + item.tokens > self.limits.max_batch_tokens:
            return FlushReason.TOKENS
        return None

    def _full(self, batch: _Open) -> FlushReason | None:
        if batch.inputs >= self.limits.max_batch_size:
            return FlushReason.SIZE
        if batch.tokens >= self.limits.max_batch_tokens:
            return FlushReason.TOKENS
        return None

    def _close(self, group: Group, reason: FlushReason) -> Batch:
        batch = self._open.pop(group)
        for item in batch.items:
            del self._where[item.id]
        return Batch(id=batch.id, items=tuple(batch.items), reason=reason)


# ---------------------------------------------------------------------------------------------
# bodies


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddingInputs:
    """A caller's ``input`` as a list: strings, or token-id tuples (JSON writes them as lists)."""

    kind: InputKind
    values: tuple[str, ...] | tuple[tuple[int, ...], ...]

    @property
    def tokens(self) -> int:
        return sum(estimate_tokens(v) for v in self.values)


def estimate_tokens(value: str | tuple[int, ...]) -> int:
    """At least one; ``CHARS_PER_TOKEN`` characters (rounded up) or one token id each."""
    if isinstance(value, str):
        return max(1, math.ceil(len(value) / CHARS_PER_TOKEN))
    return max(1, len(value))


def read_inputs(document: Mapping[str, object]) -> EmbeddingInputs | None:
    """The caller's inputs, or None when ``input`` is not one of the API's four shapes
    (string, list of strings, token ids, list of token-id lists)."""
    raw = document.get("input")
    if isinstance(raw, str):
        return EmbeddingInputs(kind=InputKind.TEXT, values=(raw,))
    if not isinstance(raw, list) or not raw:
        return None
    if all(isinstance(v, str) for v in raw):
        return EmbeddingInputs(kind=InputKind.TEXT, values=tuple(str(v) for v in raw))
    if _is_token_ids(raw):
        return EmbeddingInputs(kind=InputKind.TOKENS, values=(_token_ids(raw),))
    if all(isinstance(v, list) and _is_token_ids(v) for v in raw):
        return EmbeddingInputs(kind=InputKind.TOKENS, values=tuple(_token_ids(v) for v in raw))
    return None


def _is_token_ids(values: Sequence[object]) -> bool:
    return bool(values) and all(isinstance(t, int) and not isinstance(t, bool) for t in values)


def _token_ids(values: Sequence[object]) -> tuple[int, ...]:
    return tuple(t for t in values if isinstance(t, int))


def group_of(
    document: Mapping[str, object], inputs: EmbeddingInputs, headers: Iterable[tuple[str, str]]
) -> Group:
    rest = {k: v for k, v in document.items() if k != "input"}
    credentials = sorted((k.lower(), v) for k, v in headers if k.lower() in CREDENTIAL_HEADERS)
    return Group(
        fields=json.dumps(rest, sort_keys=True, separators=(",", ":")),
        kind=inputs.kind,
        credentials=tuple(credentials),
    )


def build_request(
    documents: Sequence[Mapping[str, object]], inputs: Sequence[EmbeddingInputs | None]
) -> dict[str, object]:
    """The upstream body: one caller's body unchanged, or the first caller's body with the
    inputs of all (one group, so they differ in nothing else) concatenated in order."""
    if len(documents) == 1:
        return dict(documents[0])
    values: list[object] = []
    for each in inputs:
        if each is None:
            raise ValueError("an unreadable input is always sent alone")
        values.extend(each.values)
    return {**documents[0], "input": values}


def split_response(
    payload: object, counts: Sequence[int], weights: Sequence[int]
) -> tuple[dict[str, object], ...]:
    """One answer per caller: caller k gets the ``counts[k]`` embeddings after those of the
    callers before it, re-indexed from 0, and a ``weights[k]`` share of the usage (rule 5).
    A single caller gets the upstream's answer unchanged."""
    if not isinstance(payload, dict):
        raise MalformedEmbeddingsError("the upstream answer is not a JSON object")
    if len(counts) == 1:
        return (payload,)
    data = _ordered_data(payload.get("data"), sum(counts))
    usage = payload.get("usage")
    shares = _split_usage(usage, weights) if isinstance(usage, dict) else None
    head = {k: v for k, v in payload.items() if k not in ("data", "usage")}
    out: list[dict[str, object]] = []
    start = 0
    for k, count in enumerate(counts):
        own = [{**d, "index": i} for i, d in enumerate(data[start : start + count])]
        start += count
        part: dict[str, object] = {**head, "data": own}
        if shares is not None:
            part["usage"] = shares[k]
        out.append(part)
    return tuple(out)


def _ordered_data(data: object, total: int) -> list[dict[str, object]]:
    if not isinstance(data, list) or len(data) != total:
        raise MalformedEmbeddingsError(f"expected {total} embeddings in 'data'")
    by_index: dict[int, dict[str, object]] = {}
    for entry in data:
        index = entry.get("index") if isinstance(entry, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < total:
            raise MalformedEmbeddingsError(f"an embedding has no valid index: {index!r}")
        by_index[index] = entry
    if len(by_index) != total:
        raise MalformedEmbeddingsError("the embeddings' indices repeat")
    return [by_index[i] for i in range(total)]


def _split_usage(usage: dict[str, object], weights: Sequence[int]) -> list[dict[str, object]]:
    """Integer fields (prompt_tokens, total_tokens...) are shared out; others are dropped, as
    they describe the whole batch."""
    shares: list[dict[str, object]] = [{} for _ in weights]
    for key, value in usage.items():
        if isinstance(value, int) and not isinstance(value, bool):
            for share, part in zip(shares, apportion(value, weights), strict=True):
                share[key] = part
    return shares


def apportion(total: int, weights: Sequence[int]) -> tuple[int, ...]:
    """``total`` split in proportion to ``weights`` (largest remainder; ties go to the
    earlier position); the parts sum to ``total``. All-zero weights count as equal."""
    if not weights:
        return ()
    if sum(weights) <= 0:
        weights = [1] * len(weights)
    whole = sum(weights)
    parts = [total * w // whole for w in weights]
    left = total - sum(parts)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-((total * weights[i]) % whole), i))
    for i in by_remainder[:left]:
        parts[i] += 1
    return tuple(parts)
