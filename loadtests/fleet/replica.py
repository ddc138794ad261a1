"""One simulated model server: an engine, an aiohttp server on its own port, faults, and records.

Tests synchronise on it without sleeping: `wait_for_requests(n)` and `wait_until(predicate)`
wake on every state change (arrival, engine step, completion); `request_started` is set on each
inference request (clear it to wait for the next one). The request log keeps the last
`REQUEST_LOG_SIZE` inference requests.
"""

import asyncio
import contextlib
import dataclasses
import itertools
import random
import time
import types
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any

from aiohttp import web

from .api import build_app
from .engine import Engine
from .faults import Fault, FaultMode
from .metrics import render_metrics
from .spec import ReplicaSpec

REQUEST_LOG_SIZE = 10_000
SHUTDOWN_TIMEOUT_S = 1.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """An inference request as received: path, `model` field (None if unreadable), headers."""

    path: str
    model: str | None
    headers: Mapping[str, str]  # lower-case names
    received_at: float  # time.monotonic()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaStats:
    """A snapshot of one replica; token counts are in tokens, like vLLM's counters."""

    received: int  # inference requests received (including ones failed by a fault)
    served: int  # inference requests answered completely with 200
    in_flight: int
    max_in_flight: int
    # streamed requests still waiting for their first token (in the queue or in prefill)
    awaiting_first: int
    max_awaiting_first: int
    waiting: int
    running: int
    max_running: int
    kv_usage: float  # 0..1
    prefix_queries: int
    prefix_hits: int
    preemptions: int
    prompt_tokens: int
    generation_tokens: int
    lora_loads: int
    running_adapters: tuple[str, ...]
    waiting_adapters: tuple[str, ...]
    errors_injected: int
    resets_injected: int
    fault_mode: FaultMode


class Replica:
    """A simulated server; build it through `Fleet`, or directly and `await start()`."""

    def __init__(
        self,
        spec: ReplicaSpec,
        *,
        index: int = 0,
        seed: int = 0,
        time_scale: float = 1.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.spec = spec
        self.index = index
        self.name = spec.name or f"replica-{index}"
        self.host = host
        self.seed = seed
        self.time_scale = time_scale
        self.engine = Engine(
            spec.profile,
            max_loras=spec.max_loras,
            seconds_per_unit=time_scale / spec.effective_speed,
            on_change=self._notify,
        )
        self.request_started = asyncio.Event()
        self.embed_lock = asyncio.Lock()
        self._fault = Fault()
        self._rng = random.Random(f"{seed}/{index}")
        self._log: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_SIZE)
        self._ids = itertools.count()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._heal_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._port = spec.port
        self._counts = {"received": 0, "served": 0, "in_flight": 0, "max_in_flight": 0}
        self._counts |= {"errors_injected": 0, "resets_injected": 0}
        self._counts |= {"awaiting_first": 0, "max_awaiting_first": 0}

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError(f"{self.name} has not been started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def fault(self) -> Fault:
        return self._fault

    @property
    def requests(self) -> tuple[RequestRecord, ...]:
        return tuple(self._log)

    @property
    def stats(self) -> ReplicaStats:
        c, engine = self.engine.counters, self.engine
        running, waiting = engine.lora_state()
        return ReplicaStats(
            **self._counts,
            waiting=len(engine.waiting),
            running=len(engine.running),
            max_running=c.max_running,
            kv_usage=engine.pool.usage,
            prefix_queries=c.prefix_queries,
            prefix_hits=c.prefix_hits,
            preemptions=c.preemptions,
            prompt_tokens=c.prompt_tokens,
            generation_tokens=c.generation_tokens,
            lora_loads=c.lora_loads,
            running_adapters=running,
            waiting_adapters=waiting,
            fault_mode=self._fault.mode,
        )

    def metrics_text(self) -> str:
        return render_metrics(self.engine, self.spec)

    async def start(self) -> None:
        self._runner = web.AppRunner(
            build_app(self),
            handler_cancellation=True,  # a client that disconnects aborts its sequence
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        await self._runner.setup()
        await self._listen()
        self.engine.start()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._unlisten()
        await self.engine.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def set_fault(self, fault: Fault) -> None:
        """Switch failure mode now; with `fault.duration_s`, heal after that many seconds."""
        previous, self._fault = self._fault, fault
        if self._heal_task is not None:
            self._heal_task.cancel()
            self._heal_task = None
        if fault.duration_s is not None:
            self._heal_task = self.spawn(self._heal_after(fault.duration_s))
        self.engine.slow_factor = fault.factor if fault.mode is FaultMode.SLOW else 1.0
        if fault.mode is FaultMode.CRASH and previous.mode is not FaultMode.CRASH:
            await self._unlisten()
            await self.engine.restart()
        elif fault.mode is not FaultMode.CRASH and previous.mode is FaultMode.CRASH:
            await self._listen()
        self._notify()

    async def wait_until(self, predicate: Callable[[ReplicaStats], bool]) -> ReplicaStats:
        """Return the first stats snapshot satisfying `predicate` (checked on every change)."""
        while True:
            stats = self.stats
            if predicate(stats):
                return stats
            await self._changed.wait()

    async def wait_for_requests(self, count: int) -> ReplicaStats:
        return await self.wait_until(lambda s: s.received >= count)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` in a task owned (and cancelled on stop) by this replica."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- used by the HTTP layer (api.py) ---

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{self.index:02x}{next(self._ids):030x}"

    def draw_error(self) -> int | None:
        """The status of an injected error for this request, or None to serve it."""
        fault = self._fault
        if fault.mode is not FaultMode.ERROR_RATE or self._rng.random() >= fault.rate:
            return None
        self.count("errors_injected")
        return self._rng.choice(fault.statuses)

    def record(self, path: str, model: str | None, headers: Mapping[str, str]) -> None:
        lowered = {k.lower(): v for k, v in headers.items()}
        self._log.append(
            RequestRecord(
                path=path,
                model=model,
                headers=types.MappingProxyType(lowered),
                received_at=time.monotonic(),
            )
        )
        self.count("received")
        self.request_started.set()

    def count(self, name: str) -> None:
        self._counts[name] += 1
        self._notify()

    def awaiting_first(self, delta: int) -> None:
        """A generation request started (+1), or got its first token or ended before one (-1):
        streamed or not, the requests in (or queued for) prefill."""
        counts = self._counts
        counts["awaiting_first"] += delta
        counts["max_awaiting_first"] = max(counts["max_awaiting_first"], counts["awaiting_first"])
        self._notify()

    @contextlib.contextmanager
    def tracking_in_flight(self) -> Iterator[None]:
        self._counts["in_flight"] += 1
        self._counts["max_in_flight"] = max(
            self._counts["max_in_flight"], self._counts["in_flight"]
        )
        self._notify()
        try:
            yield
        finally:
            self._counts["in_flight"] -= 1
            self._notify()

    # --- internals ---

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _heal_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._heal_task = None  # so set_fault does not cancel the task running it
        await self.set_fault(Fault())

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self._port)
        await self._site.start()
        self._port = self._runner.addresses[-1][1]

    async def _unlisten(self) -> None:
        """Stop accepting and drop every open connection (their handlers are cancelled)."""
        site, self._site = self._site, None
        if site is not None:
            await site.stop()
        server = self._runner.server if self._runner is not None else None
        for connection in server.connections if server is not None else ():
            connection.force_close()
