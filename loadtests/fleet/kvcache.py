"""A paged KV cache with automatic prefix caching, shaped like vLLM's block pool.

A fixed number of blocks. A block in use has a reference count; a free block keeps its hash
(its KV is still valid) until it is reused, so the free queue doubles as the prefix cache's LRU:
blocks are taken from its front, and a finished sequence's blocks go to its back, tail first so
that the end of a prompt is evicted before its shared beginning. Never sleeps or reads a clock.
"""

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence


@dataclasses.dataclass(slots=True, eq=False)
class Block:
    block_id: int
    ref_count: int = 0
    block_hash: int | None = None


class BlockPool:
    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        blocks = (Block(i) for i in range(num_blocks))
        self._free: OrderedDict[int, Block] = OrderedDict((b.block_id, b) for b in blocks)
        self._cached: dict[int, Block] = {}

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by sequences (cached-but-free blocks count as free)."""
        return 1.0 - len(self._free) / self.num_blocks

    def match_prefix(self, hashes: Sequence[int]) -> list[Block]:
        """The cached blocks for the longest run of leading `hashes`; changes nothing."""
        hits = []
        for block_hash in hashes:
            block = self._cached.get(block_hash)
            if block is None:
                break
            hits.append(block)
        return hits

    def can_allocate(self, hits: Sequence[Block], num_new: int) -> bool:
        reclaimed = sum(1 for b in hits if b.ref_count == 0)
        return len(self._free) - reclaimed >= num_new

    def acquire(self, hits: Sequence[Block], num_new: int) -> list[Block]:
        """Reference `hits` and take `num_new` fresh blocks; check `can_allocate` first."""
        for block in hits:
            if block.ref_count == 0:
                del self._free[block.block_id]
            block.ref_count += 1
        fresh = []
        for _ in range(num_new):
            _, block = self._free.popitem(last=False)
            if block.block_hash is not None:  # evict: its KV is about to be overwritten
                if self._cached.get(block.block_hash) is block:
                    del self._cached[block.block_hash]
                block.block_hash = None
            block.ref_count = 1
            fresh.append(block)
        return list(hits) + fresh

    def release(self, blocks: Sequence[Block]) -> None:
        for block in reversed(blocks):
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block.block_id] = block

    def register(self, block: Block, block_hash: int) -> None:
        """Record that `block` now holds the full block `block_hash` (first copy wins)."""
        if block.block_hash is None and block_hash not in self._cached:
            block.block_hash = block_hash
            self._cached[block_hash] = block
