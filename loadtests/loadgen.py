"""The open-loop load generator: Poisson arrivals, streaming OpenAI requests, one record each.

Runs as its own process (`python -m loadtests.loadgen SPEC.json`) so that it never shares an
event loop with the fleet or the gateway. Protocol on stdio, one JSON object per line:
it prints `{"event": "ready"}`, waits for `go T0` on stdin (T0 on the shared CLOCK_MONOTONIC,
so several generators start together), prints `{"event": "progress", ...}` every
`progress_interval_s`, writes its records as JSON lines to `records_path`, then prints
`{"event": "done", ...}`.

Arrivals are open loop: request i is due at T0 + the sum of i exponential gaps, whether or not
earlier ones have finished. `lag` is how late each request actually left (a busy generator's
own delay, reported so that it is never mistaken for the server's). After the measured window
arrivals go on (phase `cooldown`, unmeasured) until every measured request has finished or
`drain_s` has passed, so the last measured requests see the same load as the first. Bounded:
`max_requests` arrivals, `max_in_flight` open requests (beyond that an arrival is recorded as
`dropped`), `request_timeout_s` each, and nothing is left running after `drain_s`.
"""

import asyncio
import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import aiohttp

from .childproc import emit, read_jsonl, run_child, serve_records
from .scenario import parse_workload
from .workload import OBJECTIVE_HEADER, PlannedRequest, RequestFactory, StreamTally

ENDPOINT_HEADER = "x-gateway-destination-endpoint-served"
ERROR_TEXT_CHARS = 200


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GeneratorSpec:
    url: str
    qps: float
    seed: int
    index: int  # this generator's number among the ones sharing the load
    warmup_s: float
    duration_s: float
    drain_s: float
    request_timeout_s: float
    max_in_flight: int
    max_requests: int
    default_model: str
    workload: dict[str, Any]
    records_path: str
    progress_interval_s: float = 0.5


@dataclasses.dataclass(slots=True, kw_only=True)
class Record:
    """One request. Times are seconds; `t` and `done_t` are offsets from T0."""

    phase: str  # warmup | measure | cooldown
    t: float  # when it was due
    lag: float = 0.0  # how late it left
    status: int = 0
    ttft: float | None = None
    e2e: float | None = None
    done_t: float | None = None
    tokens: int = 0
    error: str | None = None
    endpoint: str | None = None
    model: str = ""
    group: int | None = None
    objective: str | None = None  # the x-gateway-inference-objective header sent, if any
    retry_after: str | None = None  # the Retry-After header of a non-200 answer, if any


@dataclasses.dataclass(slots=True)
class _Tally:
    sent: int = 0
    done: int = 0
    errors: int = 0
    measured_open: int = 0
    max_lag: float = 0.0
    measured_done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class Generator:
    def __init__(self, spec: GeneratorSpec, session: aiohttp.ClientSession, t0: float) -> None:
        issues: list[str] = []
        workload = parse_workload(spec.workload, "workload", issues)
        if issues:
            raise ValueError("; ".join(issues))
        self.spec, self.session, self.t0 = spec, session, t0
        self.factory = RequestFactory(workload, default_model=spec.default_model, seed=spec.seed)
        self.records: list[Record] = []
        self.tally = _Tally()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Send until the window and the drain are over, then cancel what is left."""
        s = self.spec
        arrivals = random.Random(f"arrivals/{s.seed}/{s.index}")
        content = random.Random(f"content/{s.seed}/{s.index}")
        window_end, hard_end = s.warmup_s + s.duration_s, s.warmup_s + s.duration_s + s.drain_s
        t = 0.0
        for _ in range(s.max_requests):
            t += arrivals.expovariate(s.qps)
            if t >= hard_end or (t >= window_end and self.tally.measured_open == 0):
                break
            if t >= window_end:
                await self._until(t, self.tally.measured_done)
                if self.tally.measured_open == 0:
                    break
            else:
                await self._until(t, None)
            phase = "warmup" if t < s.warmup_s else "measure" if t < window_end else "cooldown"
            self._dispatch(content, t, phase)
        await self._finish(hard_end)

    async def _until(self, t: float, wake: asyncio.Event | None) -> None:
        delay = self.t0 + t - time.monotonic()
        if delay <= 0:
            return
        if wake is None:
            await asyncio.sleep(delay)
            return
        try:
            async with asyncio.timeout(delay):
                await wake.wait()
        except TimeoutError:
            pass

    def _dispatch(self, rng: random.Random, t: float, phase: str) -> None:
        plan = self.factory.next(rng)
        record = Record(
            phase=phase, t=t, model=plan.model, group=plan.group,
            objective=plan.headers.get(OBJECTIVE_HEADER),
        )  # fmt: skip
        self.records.append(record)
        if len(self._tasks) >= self.spec.max_in_flight:
            record.error = "dropped: max_in_flight reached in the generator"
            self.tally.errors += 1
            return
        if phase == "measure":
            self.tally.measured_open += 1
            self.tally.measured_done.clear()
        task = asyncio.create_task(self._send(plan, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def _finish(self, hard_end: float) -> None:
        """Wait (up to the drain's end) for the measured requests only; cancel the rest."""
        if self.tally.measured_open > 0:
            await self._until(hard_end, self.tally.measured_done)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send(self, plan: PlannedRequest, record: Record) -> None:
        sent = time.monotonic()
        record.lag = max(0.0, sent - self.t0 - record.t)
        self.tally.max_lag = max(self.tally.max_lag, record.lag)
        self.tally.sent += 1
        try:
            await self._exchange(plan, record, sent)
        except asyncio.CancelledError:
            record.error = record.error or "unfinished: still open at the end of the drain"
            raise
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_CHARS]
        finally:
            self._settle(record)

    def _settle(self, record: Record) -> None:
        self.tally.done += 1
        if record.error is not None:
            self.tally.errors += 1
        if record.phase == "measure":
            self.tally.measured_open -= 1
            if self.tally.measured_open == 0:
                self.tally.measured_done.set()

    async def _exchange(self, plan: PlannedRequest, record: Record, sent: float) -> None:
        url = self.spec.url + plan.path
        async with self.session.post(url, data=plan.body, headers=plan.headers) as resp:
            record.status = resp.status
            record.endpoint = resp.headers.get(ENDPOINT_HEADER)
            if resp.status != 200:
                record.retry_after = resp.headers.get("Retry-After")
                text = await resp.text(errors="replace")
                record.error = f"HTTP {resp.status}: {text}"[:ERROR_TEXT_CHARS]
            elif resp.content_type == "text/event-stream":
                await _read_events(resp, record, sent)
            else:
                body = await resp.json()
                record.ttft = time.monotonic() - sent
                record.tokens = int((body.get("usage") or {}).get("completion_tokens", 0))
        now = time.monotonic()
        record.e2e, record.done_t = now - sent, now - self.t0
        if record.error is None and record.ttft is None:
            record.error = "no token in the response"


async def _read_events(resp: aiohttp.ClientResponse, record: Record, sent: float) -> None:
    """TTFT is when the first frame with text arrives; tokens from usage, else text frames."""
    tally = StreamTally()
    async for chunk in resp.content.iter_any():
        if tally.feed(chunk) and record.ttft is None:
            record.ttft = time.monotonic() - sent
    record.tokens = tally.tokens
    if tally.error is not None:
        record.error = tally.error[:ERROR_TEXT_CHARS]


async def _progress(gen: Generator, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        t = gen.tally
        emit("progress", sent=t.sent, done=t.done, errors=t.errors, in_flight=gen.in_flight,
              max_lag_ms=round(t.max_lag * 1000, 1))  # fmt: skip
        t.max_lag = 0.0


async def generate(spec: GeneratorSpec) -> None:
    await serve_records(
        spec.url, spec.request_timeout_s, spec.records_path,
        lambda session, t0: Generator(spec, session, t0),
        alongside=lambda gen, _: _progress(gen, spec.progress_interval_s),
    )  # fmt: skip


def read_records(path: Path) -> list[Record]:
    return read_jsonl(path, Record)


def main(argv: list[str] | None = None) -> int:
    return run_child(
        argv, "loadtests.loadgen", lambda text: GeneratorSpec(**json.loads(text)), generate
    )


if __name__ == "__main__":
    raise SystemExit(main())
