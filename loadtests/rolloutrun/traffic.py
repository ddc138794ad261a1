"""The rollout scenario's load generator: open-loop Poisson arrivals from simulated users, each
request carrying its user's sticky key, one record per request with the variant that served it.

Runs as its own process (`python -m loadtests.rolloutrun.traffic SPEC.json`), so it never
shares an event loop with the fleet or the gateway. Protocol on stdio, one JSON object per line:
it prints `{"event": "ready"}`, waits for `go T0` on stdin (T0 on the shared CLOCK_MONOTONIC),
sends until a `stop` line arrives or `max_s` has passed, waits up to `drain_s` for open
requests (then cancels them), writes its records as JSON lines to `records_path` and prints
`{"event": "done", ...}`. A request due at `t` goes out at T0 + t whether or not earlier ones
have finished; `lag` is how late it actually left. Bounded: `max_requests` arrivals,
`max_in_flight` open requests (beyond that an arrival is recorded as dropped), and
`request_timeout_s` each.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import aiohttp

from loadtests.childproc import read_jsonl, run_child, serve_records
from loadtests.scenario import parse_workload
from loadtests.workload import PlannedRequest, RequestFactory, StreamTally

VARIANT_HEADER = "x-sluice-variant"
ERROR_TEXT_CHARS = 160


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TrafficSpec:
    url: str
    qps: float
    users: int
    user_header: str
    seed: int
    max_s: float
    drain_s: float
    request_timeout_s: float
    max_in_flight: int
    max_requests: int
    default_model: str
    workload: dict[str, Any]
    records_path: str


@dataclasses.dataclass(slots=True, kw_only=True)
class Request:
    """One request. `t` (due) and `done_t` are seconds after T0."""

    t: float
    user: int
    lag: float = 0.0
    status: int = 0
    variant: str = ""  # the x-sluice-variant response header
    ttft: float | None = None
    e2e: float | None = None
    done_t: float | None = None
    error: str | None = None


class Traffic:
    def __init__(self, spec: TrafficSpec, session: aiohttp.ClientSession, t0: float) -> None:
        issues: list[str] = []
        workload = parse_workload(spec.workload, "workload", issues)
        if issues:
            raise ValueError("; ".join(issues))
        self.spec, self.session, self.t0 = spec, session, t0
        self.factory = RequestFactory(workload, default_model=spec.default_model, seed=spec.seed)
        self.records: list[Request] = []
        self.stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        s = self.spec
        arrivals = random.Random(f"arrivals/{s.seed}")
        content = random.Random(f"content/{s.seed}")
        t = 0.0
        for _ in range(s.max_requests):
            t += arrivals.expovariate(s.qps)
            if t >= s.max_s or not await self._until(t):
                break
            self._dispatch(content, t)
        await self._drain()

    async def _until(self, t: float) -> bool:
        """Wait until T0 + t; False if told to stop meanwhile."""
        delay = self.t0 + t - time.monotonic()
        if delay > 0:
            try:
                async with asyncio.timeout(delay):
                    await self.stop.wait()
            except TimeoutError:
                pass
        return not self.stop.is_set()

    def _dispatch(self, rng: random.Random, t: float) -> None:
        record = Request(t=t, user=rng.randrange(self.spec.users))
        self.records.append(record)
        if len(self._tasks) >= self.spec.max_in_flight:
            record.error = "dropped: max_in_flight reached in the generator"
            return
        task = asyncio.create_task(self._send(self.factory.next(rng), record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self.spec.drain_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _send(self, plan: PlannedRequest, record: Request) -> None:
        headers = {**plan.headers, self.spec.user_header: f"user-{record.user}"}
        sent = time.monotonic()
        record.lag = max(0.0, sent - self.t0 - record.t)
        try:
            async with self.session.post(
                self.spec.url + plan.path, data=plan.body, headers=headers
            ) as resp:
                record.status = resp.status
                record.variant = resp.headers.get(VARIANT_HEADER, "")
                await _read_body(resp, record, sent)
        except asyncio.CancelledError:
            record.error = record.error or "unfinished: still open at the end of the drain"
            raise
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_CHARS]
        now = time.monotonic()
        record.e2e, record.done_t = now - sent, now - self.t0


async def _read_body(resp: aiohttp.ClientResponse, record: Request, sent: float) -> None:
    if resp.status != 200:
        text = await resp.text(errors="replace")
        record.error = f"HTTP {resp.status}: {text}"[:ERROR_TEXT_CHARS]
        return
    tally = StreamTally()
    async for chunk in resp.content.iter_any():
        if tally.feed(chunk) and record.ttft is None:
            record.ttft = time.monotonic() - sent
    if tally.error is not None:
        record.error = tally.error[:ERROR_TEXT_CHARS]
    elif record.ttft is None:
        record.error = "no token in the response"


async def _watch(traffic: Traffic, stdin: asyncio.StreamReader) -> None:
    """Set `stop` at a `stop` line or at the end of input."""
    while True:
        line = await stdin.readline()
        if not line or line.strip() == b"stop":
            traffic.stop.set()
            return


async def generate(spec: TrafficSpec) -> None:
    await serve_records(
        spec.url, spec.request_timeout_s, spec.records_path,
        lambda session, t0: Traffic(spec, session, t0), alongside=_watch,
    )  # fmt: skip


def read_requests(path: Path) -> list[Request]:
    return read_jsonl(path, Request)


def main(argv: list[str] | None = None) -> int:
    return run_child(
        argv, "loadtests.rolloutrun.traffic", lambda text: TrafficSpec(**json.loads(text)),
        generate,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
