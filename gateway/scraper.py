"""Scrape each pool endpoint's /metrics on a short interval, cheaply.

Each endpoint keeps one keep-alive connection; a timer shared by every endpoint on the same
cadence sends a prebuilt GET every interval and the response is read by callbacks (no task
per endpoint); the body is read in place by the endpoint's ``routing.presets.MetricsReader``,
which only looks at the few series the preset names. Results are stamped with the loop
clock; a reader treats data older than the pool's staleness threshold as unknown, never as
idle. Three failures in a row mark the endpoint unhealthy; one success heals it. Model lists
(/v1/models) are refreshed far less often.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from routing.presets import MetricsReader, Preset, ServerMetrics

__all__ = ["EndpointState", "ScrapeTarget", "Scraper"]

log = logging.getLogger("sluice.scraper")
UNHEALTHY_AFTER_FAILURES = 3
MODELS_REFRESH_S = 5.0
MAX_METRICS_BYTES = 8 * 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024
# time constant of each endpoint's long-run load (requests held, averaged over the scrapes)
HELD_AVERAGE_S = 10.0


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
    # requests held (waiting + running), an exponential moving average over HELD_AVERAGE_S
    # of the scrapes: which endpoints stay busier than the rest, not which are busy now
    held_average: float | None = None
    failures: int = 0
    healthy: bool = True
    models: frozenset[str] = frozenset()
    adapters: frozenset[str] = frozenset()
    models_at: float = float("-inf")
    scrapes: int = 0
    first_scrape: asyncio.Event = field(default_factory=asyncio.Event)


TICK_BATCH = 100  # endpoints a tick starts at most: bounds how long one tick holds the loop


class _Ticker:
    """One timer for every endpoint scraped on the same cadence. Each period is cut into
    slots of at most ``TICK_BATCH`` endpoints; a tick lets one slot's endpoints start a scrape
    (or time one out). Scrapes then go out in small batches, so their writes, wake-ups and
    answers share event-loop turns instead of costing one timer and one wake-up each
    (measured: ``loadtests/bench_scrape.py``), while no tick holds the loop for long even with
    a thousand endpoints (a batch of 100 writes is about 1.5 ms of work on a slow core)."""

    __slots__ = ("_due", "_handle", "_loop", "_slot", "endpoints", "period")

    def __init__(self, period: float) -> None:
        self.period = period
        self.endpoints: dict[_Endpoint, None] = {}
        self._loop = asyncio.get_running_loop()
        self._slot = 0
        self._due = self._loop.time()
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        endpoints = list(self.endpoints)
        slots = max(1, -(-len(endpoints) // TICK_BATCH))
        slot = self._slot = (self._slot + 1) % slots
        for endpoint in endpoints[slot::slots]:
            endpoint.tick(now)
        self._due += self.period / slots
        if self._due <= now:  # the loop was held up: skip the missed ticks, do not burst
            self._due = now + self.period / slots
        self._handle = self._loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _period(target: ScrapeTarget) -> float:
    """How often a target's ticker fires: its interval, or half its timeout when that is
    shorter, so a timeout is noticed at most half a timeout late."""
    return min(target.interval_s, target.timeout_s / 2)


class _Endpoint:
    """One endpoint's scrape cycle, driven by callbacks: no task, no future, no sleep.

    Its ticker (shared with every endpoint on the same cadence) starts a scrape every
    ``interval_s`` by writing a prebuilt GET on a keep-alive connection; the connection's
    ``_Wire`` calls ``_answered`` or ``_failed`` when the response is complete or broken. A
    tick that finds a request outstanding past ``timeout_s`` fails it. At 2,000 scrapes a
    second (100 endpoints every 50 ms) the event loop's per-scrape work is most of the cost,
    so a scrape is one write and a callback or two; only (re)connecting runs as a task."""

    __slots__ = (
        "_busy_since", "_closed", "_connecting", "_first", "_key", "_loop", "_path",
        "_period", "_reader", "_requests", "_scraper", "_started", "_wire", "state", "target",
    )  # fmt: skip

    def __init__(self, scraper: Scraper, target: ScrapeTarget, state: EndpointState) -> None:
        self._scraper = scraper
        self.target = target
        self.state = state
        self._loop = asyncio.get_running_loop()
        self._wire: _Wire | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._busy_since: float | None = None  # a request (or connect) is outstanding
        self._path = ""
        self._started = float("-inf")
        self._closed = False
        self._reader = MetricsReader(target.preset)
        self._key = target.key
        self._period = _period(target)
        self._requests = {
            path: (
                f"GET {path} HTTP/1.1\r\nHost: {target.key}\r\n"
                "Accept: text/plain\r\nUser-Agent: sluice-scraper\r\n\r\n"
            ).encode()
            for path in (target.preset.metrics_path, target.preset.models_path)
        }
        # the first scrape now, not at the ticker's next tick
        self._first = self._loop.call_soon(lambda: self.tick(self._loop.time()))

    def tick(self, now: float) -> None:
        if self._closed:
            return
        target = self.target
        if self._busy_since is not None:
            if now - self._busy_since < target.timeout_s:
                return
            self._failed(TimeoutError(f"no answer within {target.timeout_s:g} s"))
        # ticks come every period (<= interval): start when an interval has (almost) passed
        if now - self._started < target.interval_s - self._period / 2:
            return
        self._started = now
        state = self.state
        if now - state.models_at >= MODELS_REFRESH_S:
            state.models_at = now  # the model list first, then the metrics, in one cycle
            self._request(target.preset.models_path)
        else:
            self._request(target.preset.metrics_path)

    def _request(self, path: str) -> None:
        self._busy_since = self._loop.time()
        self._path = path
        wire = self._wire
        if wire is not None and wire.open:
            wire.send(self._requests[path])
            return
        # a connection closing (Connection: close) is let go first: its loss, when it comes,
        # is not this request's failure
        self._drop_wire()
        if self._connecting is None:
            self._connecting = self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            _, wire = await self._loop.create_connection(
                lambda: _Wire(self), self.target.address, self.target.port
            )
        except OSError as exc:
            self._connecting = None
            self._failed(exc)
            return
        self._connecting = None
        if self._closed or self._busy_since is None:
            wire.close()  # closed or timed out meanwhile
            return
        self._wire = wire
        wire.send(self._requests[self._path])

    def _answered(self, wire: _Wire, status: int, body: bytes, at: int) -> None:
        """A complete response; its body is ``body[at:]``."""
        if wire is not self._wire or self._busy_since is None:
            return  # an answer from a connection already given up on
        self._busy_since = None
        state = self.state
        if self._path == self.target.preset.models_path:
            # no model list here (non-200): the model filter lets the endpoint pass
            state.models, state.adapters = _model_ids(body[at:] if status == 200 else b"")
            self._scraper.known_adapters |= state.adapters
            if not self._closed:
                self._request(self.target.preset.metrics_path)
            return
        if status != 200:
            # reachable but no metrics (wrong path, a server without /metrics): signals stay
            # unknown (stale), which the pool's failureMode handles; health is unaffected
            state.failures = 0
            state.first_scrape.set()
            return
        self._scraper._record(self._key, state, self._reader.read, body, at)

    def _failed(self, exc: BaseException, wire: _Wire | None = None) -> None:
        if wire is not None and wire is not self._wire:
            return  # a connection already given up on
        self._drop_wire()
        if self._busy_since is None:
            return  # an idle keep-alive connection closed: reconnect on the next scrape
        self._busy_since = None
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        state = self.state
        state.failures += 1
        if state.failures >= UNHEALTHY_AFTER_FAILURES and state.healthy:
            log.warning("endpoint %s unhealthy: %s", self.target.key, repr(exc))
            state.healthy = False
        state.first_scrape.set()

    def _drop_wire(self) -> None:
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.close()

    def close(self) -> list[asyncio.Future[None]]:
        """Stop scraping; returns what to wait for: the connection closing, the connect
        task ending."""
        self._closed = True
        self._first.cancel()
        pending = [] if self._wire is None else [self._wire.lost]
        self._drop_wire()
        task, self._connecting = self._connecting, None
        if task is not None:
            task.cancel()
            pending.append(task)
        return pending


class _Wire(asyncio.Protocol):
    """One TCP connection's HTTP/1.1 responses, parsed as they arrive and handed to the
    endpoint (one request at a time)."""

    def __init__(self, owner: _Endpoint) -> None:
        self._owner = owner
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiting = False
        self._reset_response()

    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def _reset_response(self) -> None:
        self._body_at = -1  # where the body starts in the buffer; -1 = head not complete
        self._status = 0
        self._length: int | None = None
        self._chunked = False
        self._close_after = False
        self._chunk_at = 0
        self._parts: list[bytes] = []
        self._total = 0

    def send(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self._owner._failed(ConnectionError("connection closed"), self)
            return
        self._buffer.clear()
        self._reset_response()
        self._waiting = True
        transport.write(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.lost.done():
            self.lost.set_result(None)
        self._owner._failed(
            ConnectionError(f"connection closed: {exc!r}" if exc else "connection closed"), self
        )

    def data_received(self, data: bytes) -> None:
        if not self._waiting:
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        buffer = self._buffer
        buf: bytes | bytearray = data  # most answers arrive whole: read them where they are
        if buffer:
            buffer += data
            buf = buffer
        try:
            answer = self._parse(buf)
        except (ValueError, IndexError, ConnectionError) as exc:
            self._waiting = False
            self._owner._failed(ConnectionError(f"bad response: {exc}"), self)
            self.close()
            return
        if answer is None:
            if buf is data:
                buffer += data  # keep it: offsets found so far stay valid
            return  # more to come
        self._waiting = False
        if self._close_after:
            self.close()
        self._owner._answered(self, self._status, *answer)

    def _parse(self, buf: bytes | bytearray) -> tuple[bytes, int] | None:
        """The complete body as (bytes, where the body starts in them), or None while more
        bytes are needed. A response that arrived in one piece is not copied: its body is
        read in place, after the head."""
        if self._body_at < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise ConnectionError("response head too large")
                return None
            head = bytes(buf[:end]).lower()
            self._status = int(head.split(b" ", 2)[1])
            self._close_after = b"connection: close" in head
            self._chunked = b"transfer-encoding: chunked" in head
            self._length = None if self._chunked else _content_length(head)
            if not self._chunked and (self._length is None or self._length > MAX_METRICS_BYTES):
                raise ConnectionError("metrics response without a usable Content-Length")
            self._body_at = self._chunk_at = end + 4
        if self._chunked:
            body = self._chunks(buf)
            return None if body is None else (body, 0)
        end = self._body_at + (self._length or 0)
        if len(buf) < end:
            return None
        if end == len(buf) and isinstance(buf, bytes):
            return buf, self._body_at
        return bytes(buf[self._body_at : end]), 0

    def _chunks(self, buf: bytes | bytearray) -> bytes | None:
        while True:
            line_end = buf.find(b"\r\n", self._chunk_at)
            if line_end < 0:
                return None
            size_field = bytes(buf[self._chunk_at : line_end]).split(b";")[0].strip()
            if not size_field or size_field.strip(b"0123456789abcdefABCDEF"):
                raise ConnectionError(f"bad chunk size {size_field[:16]!r}")
            size = int(size_field, 16)
            if self._total + size > MAX_METRICS_BYTES:  # before waiting for it to arrive
                raise ConnectionError("metrics response too large")
            if size == 0:
                if buf.find(b"\r\n", line_end + 2) < 0:  # the empty line after the last chunk
                    return None
                return b"".join(self._parts)
            data_at = line_end + 2
            if len(buf) < data_at + size + 2:
                return None
            self._total += size
            self._parts.append(bytes(buf[data_at : data_at + size]))
            self._chunk_at = data_at + size + 2

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _content_length(headers: bytes) -> int | None:
    """The Content-Length of a lower-cased head (without its final empty line)."""
    at = headers.find(b"\r\ncontent-length:")
    if at < 0:
        return None
    end = headers.find(b"\r\n", at + 2)
    if end < 0:  # the last header line
        end = len(headers)
    try:
        return int(headers[at + 17 : end].strip())
    except ValueError:
        return None


class Scraper:
    """Keeps one scrape cycle per wanted endpoint; ``apply`` reconciles the set."""

    def __init__(self) -> None:
        self.states: dict[str, EndpointState] = {}
        # adapter name → endpoints whose last scrape shows it running (for candidate choice)
        self.adapter_index: dict[str, set[str]] = {}
        # every name an endpoint has listed as a LoRA adapter (names are not reused for bases)
        self.known_adapters: set[str] = set()
        self._endpoints: dict[ScrapeTarget, _Endpoint] = {}
        self._tickers: dict[float, _Ticker] = {}
        self._closing: set[asyncio.Future[None]] = set()

    def apply(self, targets: set[ScrapeTarget]) -> None:
        for target in set(self._endpoints) - targets:
            self._stop(self._endpoints.pop(target))
        for target in targets - set(self._endpoints):
            state = self.states.setdefault(target.key, EndpointState())
            endpoint = self._endpoints[target] = _Endpoint(self, target, state)
            period = _period(target)
            ticker = self._tickers.get(period)
            if ticker is None:
                ticker = self._tickers[period] = _Ticker(period)
            ticker.endpoints[endpoint] = None
        live = {t.key for t in self._endpoints}
        for key in set(self.states) - live:
            self._index_adapters(key, self.states.pop(key).metrics, None)

    def _stop(self, endpoint: _Endpoint) -> None:
        period = _period(endpoint.target)
        ticker = self._tickers.get(period)
        if ticker is not None:
            ticker.endpoints.pop(endpoint, None)
            if not ticker.endpoints:
                ticker.stop()
                del self._tickers[period]
        for pending in endpoint.close():
            self._closing.add(pending)
            pending.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        endpoints = list(self._endpoints.values())
        self._endpoints.clear()
        for endpoint in endpoints:
            self._stop(endpoint)
        if self._closing:  # connections closed, connect tasks ended (bounded: 2 s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await asyncio.gather(*self._closing, return_exceptions=True)

    def _record(
        self,
        key: str,
        state: EndpointState,
        read: Callable[[bytes, int], ServerMetrics],
        body: bytes,
        at: int,
    ) -> None:
        try:
            metrics = read(body, at)
        except Exception as exc:  # any page we cannot read is not a metrics page; a
            # callback must not raise (the loop would drop the connection and log it)
            log.debug("endpoint %s: unreadable metrics: %r", key, exc)
            state.failures = 0
            state.first_scrape.set()
            return
        if metrics.waiting is None and metrics.running is None and metrics.kv_usage is None:
            # a 200 page with none of the preset's load series (not this engine's metrics, or
            # not a metrics page at all): signals stay unknown, as for a 404; health is fine
            state.failures = 0
            state.first_scrape.set()
            return
        self._index_adapters(key, state.metrics, metrics)
        now = asyncio.get_running_loop().time()
        if metrics.waiting is None and metrics.running is None:
            state.held_average = None
        else:
            held = (metrics.waiting or 0.0) + (metrics.running or 0.0)
            old = state.held_average  # after a gap (or at first), the new sample counts whole
            weight = 1.0 - math.exp((state.updated_at - now) / HELD_AVERAGE_S)
            if math.isfinite(held):  # a NaN or Inf sample would stay in the average for good
                state.held_average = held if old is None else old + weight * (held - old)
        state.metrics = metrics
        state.updated_at = now
        state.scrapes += 1
        if not state.healthy:
            log.info("endpoint %s healthy again", key)
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
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return frozenset(), frozenset()
    return ids, adapters
