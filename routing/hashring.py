"""Consistent hashing for session affinity: the same key maps to the same endpoint across
restarts and gateway replicas (no shared state), and removing an endpoint moves only the keys
it held. Each endpoint owns ``vnodes`` points on a 64-bit ring (blake2b, stable everywhere)."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

__all__ = ["HashRing", "stable_hash"]

DEFAULT_VNODES = 40


def stable_hash(text: str) -> int:
    """A hash of ``text`` that is the same in every process. Header values carry any bytes
    (undecodable ones as lone surrogates, as aiohttp reads them): those are hashed too."""
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big"
    )


MEMO_SESSIONS = 8192  # sessions whose endpoint a ring remembers (a session's requests repeat)
MEMO_MAX_CHARS = 256  # longer session ids (client-chosen) are looked up, not remembered


class HashRing:
    __slots__ = ("_keys", "_memo", "_points")

    def __init__(self, keys: Iterable[str], vnodes: int = DEFAULT_VNODES) -> None:
        ring = sorted((stable_hash(f"{key}#{i}"), key) for key in set(keys) for i in range(vnodes))
        self._points = [p for p, _ in ring]
        self._keys = [k for _, k in ring]
        self._memo: dict[str, str] = {}

    def lookup(self, session: str) -> str | None:
        """The endpoint owning ``session``, or None for an empty ring. Answers are remembered
        (a ring never changes; a new endpoint set is a new ring), at most ``MEMO_SESSIONS``
        of them, ids of at most ``MEMO_MAX_CHARS``: past that the memo starts over."""
        known = self._memo.get(session)
        if known is not None:
            return known
        if not self._points:
            return None
        key = self._keys[bisect.bisect_left(self._points, stable_hash(session)) % len(self._points)]
        if len(session) <= MEMO_MAX_CHARS:
            if len(self._memo) >= MEMO_SESSIONS:
                self._memo.clear()
            self._memo[session] = key
        return key
