"""Embeddings micro-batching (placeholder: being implemented)."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from routing.backends import Endpoint
from routing.model import EmbeddingBatching

__all__ = ["EmbeddingBatcher", "EmbeddingResult"]

EmbeddingResult = tuple[int, dict[str, object]]


class EmbeddingBatcher:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def embed(
        self,
        *,
        key: tuple[str, str],
        settings: EmbeddingBatching,
        document: dict[str, object],
        headers: list[tuple[str, str]],
        path: str,
        pick: Callable[[], Endpoint],
        release: Callable[[Endpoint], None],
    ) -> EmbeddingResult:
        raise NotImplementedError

    async def close(self) -> None:
        return None
