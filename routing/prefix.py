"""An approximate prefix-cache index: which endpoint likely holds which prompt prefix.

A prompt is cut into fixed-size character blocks (64 characters ≈ vLLM's 16-token KV block);
each block's hash chains the previous one, so a hash names a whole prefix. After each pick the
chosen endpoint's LRU of block hashes is updated; lookups count, per endpoint, how many leading
blocks of a new prompt it holds. Memory per endpoint is bounded by ``capacity_blocks``.
Pure data structure: no clock, no I/O; the gateway owns one per pool.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "DEFAULT_BLOCK_CHARS",
    "DEFAULT_MAX_BLOCKS",
    "PrefixIndex",
    "PromptHasher",
    "block_hashes",
]

DEFAULT_BLOCK_CHARS = 64
DEFAULT_MAX_BLOCKS = 256
DEFAULT_CAPACITY_BLOCKS = 31_250  # the Inference Extension's H100/Qwen3-32B sizing example


def _deepest(lo: int, hi: int, holds: Callable[[int], bool], hashes: Sequence[int]) -> int:
    """The largest d in [lo, hi] with holds(hashes[d-1]), given it holds for d = lo and,
    prefixes being recorded whole, for every smaller d whenever it holds for d."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if holds(hashes[mid - 1]):
            lo = mid
        else:
            hi = mid - 1
    return lo


def block_hashes(
    model: str,
    text: str,
    *,
    block_chars: int = DEFAULT_BLOCK_CHARS,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
) -> tuple[int, ...]:
    """Chained hashes of the full ``block_chars`` blocks of ``text`` (at most ``max_blocks``).
    The model name seeds the chain: the same text for two models shares no cache."""
    return _chain(hash(("sluice-prefix", model)), text, block_chars, max_blocks)[0]


MEMO_MIN_CHARS = 256  # shorter parts are hashed directly: a lookup would cost about as much


class PromptHasher:
    """``block_hashes`` of prompts given in parts (a chat's messages), remembering where the
    hash chain stands after each part it has seen. Requests that share a system prompt, or a
    conversation's earlier turns, then hash only what is new: a 3,000-character system prompt
    costs one dictionary lookup instead of ~50 block hashes. Results are identical to
    ``block_hashes`` of the joined text (property-tested).

    Only parts worth it are remembered: not a prompt's last part (usually the new, unique
    question) and not parts under ``MEMO_MIN_CHARS``. Bounded: at most ``max_parts`` parts
    and ``max_chars`` characters in all (least recently used out first), a part counted only
    up to the characters that can still reach a hash (``block_chars × max_blocks``)."""

    __slots__ = ("_block", "_chars", "_max_blocks", "_max_chars", "_max_parts", "_memo")

    def __init__(
        self,
        block_chars: int = DEFAULT_BLOCK_CHARS,
        max_blocks: int = DEFAULT_MAX_BLOCKS,
        max_parts: int = 512,
        max_chars: int = 4_000_000,
    ) -> None:
        self._block = block_chars
        self._max_blocks = max_blocks
        self._max_parts = max_parts
        self._max_chars = max_chars
        self._chars = 0
        # (chain hash, carried partial block, part) → (hashes it adds, chain hash, carry)
        self._memo: OrderedDict[tuple[int, str, str], tuple[tuple[int, ...], int, str]] = (
            OrderedDict()
        )

    @property
    def remembered(self) -> tuple[int, int]:
        """How many parts, and characters in them, the hasher remembers now."""
        return len(self._memo), self._chars

    def hashes(self, model: str, parts: Sequence[str]) -> tuple[int, ...]:
        block, room = self._block, self._max_blocks
        memo = self._memo
        h = hash(("sluice-prefix", model))
        carry = ""
        out: list[int] = []
        last = len(parts) - 1
        for i, part in enumerate(parts):
            need = room * block - len(carry)  # characters that can still reach a hash
            if len(part) > need:
                part = part[:need]
            if i == last or len(part) < MEMO_MIN_CHARS:
                added, h, carry = _chain(h, carry + part, block, room)
            else:
                key = (h, carry, part)
                known = memo.get(key)
                if known is None:
                    known = memo[key] = _chain(h, carry + part, block, room)
                    self._chars += len(part)
                    while len(memo) > self._max_parts or self._chars > self._max_chars:
                        (_, _, old), _ = memo.popitem(last=False)
                        self._chars -= len(old)
                else:
                    memo.move_to_end(key)
                added, h, carry = known
            out += added
            room -= len(added)
            if room <= 0:
                break
        return tuple(out)


def _chain(h: int, text: str, block: int, room: int) -> tuple[tuple[int, ...], int, str]:
    """The chained hashes of ``text``'s full blocks (at most ``room``) from chain hash
    ``h``; the chain hash after them; the characters left over (a partial block)."""
    out = []
    end = min(len(text) // block, room) * block
    for i in range(0, end, block):
        h = hash((h, text[i : i + block]))
        out.append(h)
    return tuple(out), h, text[end:] if len(out) < room else ""


class PrefixIndex:
    """Per-endpoint LRUs of block hashes plus a reverse map for lookups."""

    __slots__ = ("_capacity", "_holders", "_lru")

    def __init__(self, capacity_blocks: int = DEFAULT_CAPACITY_BLOCKS) -> None:
        if capacity_blocks <= 0:
            raise ValueError("capacity_blocks must be > 0")
        self._capacity = capacity_blocks
        self._lru: dict[str, OrderedDict[int, None]] = {}
        self._holders: dict[int, set[str]] = {}

    def match(self, hashes: Sequence[int], limit: int = 64) -> Mapping[str, int]:
        """Per endpoint, how many leading blocks of ``hashes`` it holds (absent = 0), for at
        most ``limit`` endpoints, the deepest matches first.

        Each endpoint's blocks form whole prefixes (``record`` keeps them so), so an endpoint
        holding block k holds blocks 0..k-1. That makes depth searchable: a binary search over
        the holder sets finds the deepest block anyone holds; holders are then gathered from
        that depth downwards, and each one's own depth is found by binary search in its LRU
        between the level it was found at and the level above (where it was not).
        Cost: O(limit · log n) whatever the pool size or the number of holders."""
        holders = self._holders
        if not hashes or hashes[0] not in holders:
            return {}
        deepest = _deepest(1, len(hashes), holders.__contains__, hashes)
        counts: dict[str, int] = {}
        seen = counts.keys()
        depth, above = deepest, deepest  # a holder first seen at depth holds < above + 1
        while depth >= 1 and len(counts) < limit:
            level = holders.get(hashes[depth - 1])
            # only holders not counted yet (a set difference, not a loop over all of them)
            for endpoint in level - seen if level is not None and counts else level or ():
                counts[endpoint] = (
                    depth
                    if depth == above
                    else _deepest(depth, above, self._lru[endpoint].__contains__, hashes)
                )
                if len(counts) >= limit:
                    break
            above = depth - 1
            depth = depth * 3 // 4 if depth > 3 else depth - 1
        return counts

    def record(self, endpoint: str, hashes: Sequence[int], held: int = 0) -> None:
        """The endpoint now holds these blocks (most recently used). ``held``: how many
        leading blocks it is known to hold already (from ``match``); those are only
        refreshed, without a lookup each.

        Blocks are ordered deepest first, so a prompt's first block is its most recent: the
        LRU then evicts the deep end of a prefix before its start, and what an endpoint holds
        stays whole prefixes (``match`` relies on it)."""
        lru = self._lru.get(endpoint)
        if lru is None:
            lru = self._lru[endpoint] = OrderedDict()
        holders = self._holders
        for h in reversed(hashes[held:]):
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
                holders.setdefault(h, set()).add(endpoint)
        if held:
            try:  # the common case, a cache hit: refresh the held prefix in one C-level pass
                deque(map(lru.move_to_end, reversed(hashes[:held])), maxlen=0)
            except KeyError:  # ``held`` was out of date: insert what is missing
                self.record(endpoint, hashes[:held])
        while len(lru) > self._capacity:
            old, _ = lru.popitem(last=False)
            self._drop(old, endpoint)

    def forget(self, endpoint: str) -> None:
        """The endpoint is gone (or restarted): drop everything it held."""
        for h in self._lru.pop(endpoint, OrderedDict()):
            self._drop(h, endpoint)

    def size(self, endpoint: str) -> int:
        return len(self._lru.get(endpoint, ()))

    def endpoints(self) -> tuple[str, ...]:
        return tuple(self._lru)

    def _drop(self, h: int, endpoint: str) -> None:
        holders = self._holders.get(h)
        if holders is not None:
            holders.discard(endpoint)
            if not holders:
                del self._holders[h]
