"""Measure one replica's saturation throughput with a closed-loop client in the same process.

    python -m loadtests.fleet.capacity --prompt-tokens 1000 --output-tokens 100 --concurrency 64

Every request has a unique prompt (no prefix-cache hits) and `ignore_eos`, so each costs exactly
prompt + output tokens. With more clients than `max_num_seqs` the replica is saturated and the
completion rate is its capacity. The result is reported at time_scale 1 (measured rate times
time_scale), so a fast time_scale measures the default speed quickly.
"""

import argparse
import asyncio
import dataclasses
import itertools
import time
from collections.abc import Iterator
from typing import Any

import aiohttp

from .fleet import Fleet
from .spec import EngineProfile, FleetSpec, ReplicaSpec


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CapacityReport:
    requests_per_s: float  # at time_scale 1
    mean_latency_s: float  # at time_scale 1
    mean_batch: float  # mean running sequences per engine step
    completed: int


async def measure_capacity(
    replica: ReplicaSpec,
    *,
    prompt_tokens: int = 1000,
    output_tokens: int = 100,
    concurrency: int = 64,
    duration_s: float = 20.0,
    time_scale: float = 1.0,
) -> CapacityReport:
    """Drive one replica at `concurrency` for `duration_s` wall-clock seconds after a warm-up
    of a quarter of that; count the requests completed inside the measured window."""
    fleet = Fleet(FleetSpec(replicas=(replica,), time_scale=time_scale))
    async with fleet, aiohttp.ClientSession(fleet.replicas[0].url) as session:
        start = time.monotonic() + duration_s / 4
        window = _Window(start=start, stop=start + duration_s)
        counters = fleet.replicas[0].engine.counters
        before = (counters.steps, counters.scheduled_seqs)
        body = {"model": replica.model, "max_tokens": output_tokens, "ignore_eos": True}
        clients = (_client(session, body, prompt_tokens, window) for _ in range(concurrency))
        await asyncio.gather(*clients)
        steps, scheduled = counters.steps - before[0], counters.scheduled_seqs - before[1]
    latencies = window.latencies
    return CapacityReport(
        requests_per_s=len(latencies) / duration_s * time_scale,
        mean_latency_s=sum(latencies) / max(1, len(latencies)) / time_scale,
        mean_batch=scheduled / max(1, steps),
        completed=len(latencies),
    )


@dataclasses.dataclass(slots=True, kw_only=True)
class _Window:
    start: float
    stop: float
    latencies: list[float] = dataclasses.field(default_factory=list)
    ids: Iterator[int] = dataclasses.field(default_factory=itertools.count)


async def _client(
    session: aiohttp.ClientSession, body: dict[str, Any], prompt_tokens: int, window: _Window
) -> None:
    filler = " ".join(["w"] * (prompt_tokens - 1))
    while time.monotonic() < window.stop:
        # A unique first token makes every block hash unique: no prefix-cache hits.
        prompt = f"{next(window.ids)} {filler}"
        sent = time.monotonic()
        async with session.post("/v1/completions", json={**body, "prompt": prompt}) as response:
            await response.read()
        done = time.monotonic()
        if window.start <= done <= window.stop:
            window.latencies.append(done - sent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.fleet.capacity")
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--output-tokens", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--accelerator", default="a100")
    parser.add_argument("--max-num-seqs", type=int, default=EngineProfile().max_num_seqs)
    args = parser.parse_args(argv)
    profile = EngineProfile(max_num_seqs=args.max_num_seqs)
    report = asyncio.run(
        measure_capacity(
            ReplicaSpec(accelerator=args.accelerator, profile=profile),
            prompt_tokens=args.prompt_tokens,
            output_tokens=args.output_tokens,
            concurrency=args.concurrency,
            duration_s=args.duration,
            time_scale=args.time_scale,
        )
    )
    print(
        f"{args.accelerator}: {report.requests_per_s:.2f} req/s "
        f"(prompt {args.prompt_tokens}, output {args.output_tokens}, "
        f"concurrency {args.concurrency}), mean latency {report.mean_latency_s:.2f} s, "
        f"mean batch {report.mean_batch:.1f}, {report.completed} requests measured"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
