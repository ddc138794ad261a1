"""Scrape each pool endpoint's /metrics on a short interval, cheaply.

One task per endpoint keeps one keep-alive connection and sends a prebuilt GET; the body is
handed to ``routing.presets.read_metrics``, which only looks at the few series the preset
names. Results are stamped with the loop clock; a reader treats data older than the pool's
staleness threshold as unknown, never as idle. Three failures in a row mark the endpoint
unhealthy; one success heals it. Model lists (/v1/models) are refreshed far less often.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field

from routing.presets import Preset, ServerMetrics, read_metrics

__all__ = ["EndpointState", "ScrapeTarget", "Scraper"]

log = logging.getLogger("sluice.scraper")
UNHEALTHY_AFTER_FAILURES = 3
MODELS_REFRESH_S = 5.0
MAX_METRICS_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ScrapeTarget:
    address: str
    port: int
    preset: Preset
    interval_s: float
    timeout_s: float

    @property
    def key(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(slots=True)
class EndpointState:
    metrics: ServerMetrics | None = None
    updated_at: float = float("-inf")
    failures: int = 0
    healthy: bool = True
    models: frozenset[str] = frozenset()
    adapters: frozenset[str] = frozenset()
    models_at: float = float("-inf")
    scrapes: int = 0
    first_scrape: asyncio.Event = field(default_factory=asyncio.Event)


class MetricsUnavailableError(Exception):
    """The endpoint answered, but not with metrics: it is alive, its signals are unknown."""


class _Connection:
    """One keep-alive HTTP/1.1 connection that GETs a path and returns the body."""

    def __init__(self, target: ScrapeTarget) -> None:
        self._target = target
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> bytes:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(
                self._target.address, self._target.port
            )
        assert self._reader is not None
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {self._target.key}\r\n"
            "Accept: text/plain\r\nUser-Agent: sluice-scraper\r\n\r\n"
        ).encode()
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = head.lower()
        if b"transfer-encoding: chunked" in headers:
            body = await self._chunked(self._reader)
        else:
            length = _content_length(headers)
            if length is None or length > MAX_METRICS_BYTES:
                self.close()
                raise ConnectionError("metrics response without a usable Content-Length")
            body = await self._reader.readexactly(length)
        if b"connection: close" in headers:
            self.close()
        if status != 200:
            raise MetricsUnavailableError(f"HTTP {status}")
        return body

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            total += size
            if total > MAX_METRICS_BYTES:
                raise ConnectionError("metrics response too large")
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = self._reader = None


def _content_length(headers: bytes) -> int | None:
    at = headers.find(b"\r\ncontent-length:")
    if at < 0:
        return None
    end = headers.find(b"\r\n", at + 2)
    try:
        return int(headers[at + 17 : end].strip())
    except ValueError:
        return None


class Scraper:
    """Keeps one scrape task per wanted endpoint; ``apply`` reconciles the set."""

    def __init__(self) -> None:
        self.states: dict[str, EndpointState] = {}
        # adapter name → endpoints whose last scrape shows it running (for candidate choice)
        self.adapter_index: dict[str, set[str]] = {}
        # every name an endpoint has listed as a LoRA adapter (names are not reused for bases)
        self.known_adapters: set[str] = set()
        self._tasks: dict[ScrapeTarget, asyncio.Task[None]] = {}

    def apply(self, targets: set[ScrapeTarget]) -> None:
        for target in set(self._tasks) - targets:
            self._tasks.pop(target).cancel()
        for target in targets - set(self._tasks):
            self.states.setdefault(target.key, EndpointState())
            self._tasks[target] = asyncio.create_task(self._run(target))
        live = {t.key for t in self._tasks}
        for key in set(self.states) - live:
            self._index_adapters(key, self.states.pop(key).metrics, None)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, target: ScrapeTarget) -> None:
        conn = _Connection(target)
        loop = asyncio.get_running_loop()
        try:
            while True:
                state = self.states.get(target.key)
                if state is None:
                    return
                await self._scrape_once(conn, target, state, loop)
                await asyncio.sleep(target.interval_s)
        finally:
            conn.close()

    async def _scrape_once(
        self,
        conn: _Connection,
        target: ScrapeTarget,
        state: EndpointState,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        try:
            async with asyncio.timeout(target.timeout_s):
                body = await conn.get(target.preset.metrics_path)
                if loop.time() - state.models_at >= MODELS_REFRESH_S:
                    state.models, state.adapters = _model_ids(
                        await conn.get(target.preset.models_path)
                    )
                    self.known_adapters |= state.adapters
                    state.models_at = loop.time()
        except MetricsUnavailableError:
            # reachable but no metrics (wrong path, a server without /metrics): signals stay
            # unknown (stale), which the pool's failureMode handles; health is unaffected
            state.failures = 0
            state.first_scrape.set()
            return
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            conn.close()
            state.failures += 1
            if state.failures >= UNHEALTHY_AFTER_FAILURES and state.healthy:
                log.warning("endpoint %s unhealthy: %s", target.key, repr(exc))
                state.healthy = False
            state.first_scrape.set()
            return
        metrics = read_metrics(body, target.preset)
        self._index_adapters(target.key, state.metrics, metrics)
        state.metrics = metrics
        state.updated_at = loop.time()
        state.scrapes += 1
        if not state.healthy:
            log.info("endpoint %s healthy again", target.key)
        state.failures = 0
        state.healthy = True
        state.first_scrape.set()

    def _index_adapters(
        self, key: str, old: ServerMetrics | None, new: ServerMetrics | None
    ) -> None:
        before = old.lora_running if old is not None else frozenset()
        after = new.lora_running if new is not None else frozenset()
        if before == after:
            return
        for adapter in before - after:
            holders = self.adapter_index.get(adapter)
            if holders is not None:
                holders.discard(key)
                if not holders:
                    del self.adapter_index[adapter]
        for adapter in after - before:
            self.adapter_index.setdefault(adapter, set()).add(key)
            self.known_adapters.add(adapter)


def _model_ids(body: bytes) -> tuple[frozenset[str], frozenset[str]]:
    """Served model ids, and those that are LoRA adapters (vLLM lists them with a parent)."""
    try:
        data = json.loads(body).get("data", [])
        ids = frozenset(str(m["id"]) for m in data if "id" in m)
        adapters = frozenset(str(m["id"]) for m in data if "id" in m and m.get("parent"))
    except (ValueError, TypeError, KeyError, AttributeError):
        return frozenset(), frozenset()
    return ids, adapters
