"""An approximate prefix-cache index: which endpoint likely holds which prompt prefix.

A prompt is cut into fixed-size character blocks (64 characters ≈ vLLM's 16-token KV block);
each block's hash chains the previous one, so a hash names a whole prefix. After each pick the
chosen endpoint's LRU of block hashes is updated; lookups count, per endpoint, how many leading
blocks of a new prompt it holds. Memory per endpoint is bounded by ``capacity_blocks``.
Pure data structure: no clock, no I/O; the gateway owns one per pool.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = ["DEFAULT_BLOCK_CHARS", "DEFAULT_MAX_BLOCKS", "PrefixIndex", "block_hashes"]

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
    h = hash(("sluice-prefix", model))
    out = []
    end = min(len(text), block_chars * max_blocks)
    for block in [text[i : i + block_chars] for i in range(0, end - block_chars + 1, block_chars)]:
        h = hash((h, block))
        out.append(h)
    return tuple(out)


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

        Blocks are recorded a whole prefix at a time, so an endpoint holding block k almost
        always holds blocks 0..k-1. That makes depth searchable: a binary search over the
        holder sets finds the deepest block anyone holds; holders are then gathered from
        that depth downwards, and each one's own depth is found by binary search in its LRU
        between the level it was found at and the level above (where it was not).
        Cost: O(limit · log n) whatever the pool size or the number of holders."""
        if not hashes or hashes[0] not in self._holders:
            return {}
        deepest = _deepest(1, len(hashes), self._holders.__contains__, hashes)
        counts: dict[str, int] = {}
        depth, above = deepest, deepest  # a holder first seen at depth holds < above + 1
        while depth >= 1 and len(counts) < limit:
            for endpoint in self._holders.get(hashes[depth - 1], ()):
                if endpoint not in counts:
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

    def record(self, endpoint: str, hashes: Iterable[int]) -> None:
        """The endpoint now holds these blocks (most recently used)."""
        lru = self._lru.setdefault(endpoint, OrderedDict())
        for h in hashes:
            if h in lru:
                lru.move_to_end(h)
                continue
            lru[h] = None
            self._holders.setdefault(h, set()).add(endpoint)
            if len(lru) > self._capacity:
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
