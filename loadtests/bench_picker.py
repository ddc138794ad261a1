"""Benchmark: one endpoint decision in a pool of N endpoints with every scorer on.

Measures the whole synchronous pick path the gateway runs per request
(``gateway.inference.pick_endpoint``): prompt block hashes (chat requests: one of 32 shared
~3,400-character system prompts and a short question), the prefix index lookup, candidate
selection, snapshots, the default profile's filters, every registered scorer (the default's
six at their weights, the others at weight 1), the picker and the prefix-index update. Endpoint
signals are synthetic but fresh (as if just scraped). Prints p50/p90/p99 in µs, and the same
for a fixed computation timed between the picks: identical work whose spread is this
machine's (scheduling, other tenants), not the picker's.

    python loadtests/bench_picker.py [--endpoints 1000] [--picks 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import statistics
import sys
import time
import timeit
from datetime import UTC, datetime
from pathlib import Path

from gateway.context import Limits, ProxyContext, TableHolder
from gateway.inference import pick_endpoint
from gateway.metrics import Metrics
from gateway.scraper import EndpointState
from gateway.upstream import make_session
from routing import model as m
from routing.backends import Endpoint, PoolTarget
from routing.openai import parse_body
from routing.pipeline import Profile, WeightedScorer
from routing.plugins.registry import BUILTIN_PROFILES, SCORERS
from routing.pools import PoolSettings
from routing.presets import ServerMetrics
from routing.table import RoutingTable

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _pool(n: int) -> PoolTarget:
    pool = m.InferencePool(
        meta=m.Meta(name="bench", namespace="default"),
        selector=m.LabelSelector(match_labels=(("app", "bench"),)),
        target_ports=(8000,),
    )
    endpoints = tuple(
        Endpoint(address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", port=8000) for i in range(n)
    )
    return PoolTarget(name="default/bench", endpoints=endpoints, pool=pool)


def every_scorer() -> Profile:
    """The default profile with every registered scorer on (those it lacks at weight 1)."""
    default = BUILTIN_PROFILES["default"]
    weights = {ws.scorer.name: ws.weight for ws in default.scorers}
    scorers = tuple(
        WeightedScorer(scorer=make({}), weight=weights.get(name, 1.0))
        for name, make in SCORERS.items()
    )
    return Profile(name="every-scorer", filters=default.filters, scorers=scorers,
                   picker=default.picker)  # fmt: skip


def _bodies(rng: random.Random, count: int) -> list[bytes]:
    systems = [f"system prompt {g} " * 200 for g in range(32)]
    out = []
    for i in range(count):
        adapter = ("sql-lora", "chat-lora", MODEL)[i % 3]
        prompt = systems[rng.randrange(len(systems))][:4000]
        out.append(
            (
                f'{{"model": "{adapter}", "max_tokens": 100, "messages": '
                f'[{{"role": "system", "content": "{prompt}"}}, '
                f'{{"role": "user", "content": "question {i}"}}]}}'
            ).encode()
        )
    return out


def _reference() -> int:
    """A fixed computation timed between picks: how much this machine's timing of identical
    work varies (scheduler, other tenants), beside the picks' own spread."""
    return sum(range(4000))


async def run(n: int, picks: int) -> tuple[list[float], list[float]]:
    rng = random.Random(0)
    target = _pool(n)
    settings = PoolSettings(key=target.name, profile=every_scorer(), failure_mode="FailOpen")
    table = RoutingTable(ports={}, config=m.Config(), pools={target.name: settings})
    session = make_session()
    ctx = ProxyContext(holder=TableHolder(table=table), session=session,
                       metrics=Metrics.create(), limits=Limits(), rng=rng)  # fmt: skip
    now = asyncio.get_running_loop().time()
    for i, ep in enumerate(target.endpoints):
        lora = frozenset({("sql-lora", "chat-lora")[i % 2]})
        ctx.pools.scraper.states[ep.key] = EndpointState(
            metrics=ServerMetrics(waiting=rng.randint(0, 8), running=rng.randint(0, 32),
                                  kv_usage=rng.random(), lora_running=lora, max_lora=2),
            updated_at=now + 3600,  # fresh for the whole run
            models=frozenset({MODEL, "sql-lora", "chat-lora"}),
            held_average=rng.uniform(0, 40),
        )  # fmt: skip
        ctx.pools.in_flight_tokens[ep.key] = rng.randint(0, 100_000)
        for adapter in lora:
            ctx.pools.scraper.adapter_index.setdefault(adapter, set()).add(ep.key)
    ctx.pools.scraper.known_adapters |= {"sql-lora", "chat-lora"}
    parsed = [parse_body(b) for b in _bodies(rng, 512)]
    timings, reference = [], []
    gc.disable()
    try:
        for i in range(picks):
            req = parsed[i % len(parsed)]
            t0 = time.perf_counter()
            ep = pick_endpoint(ctx, target, settings, parsed=req, model=req.model or MODEL,
                               priority=0, session=f"user-{i % 97}", selection=None)  # fmt: skip
            t1 = time.perf_counter()
            _reference()
            reference.append(time.perf_counter() - t1)
            timings.append(t1 - t0)
            ctx.in_flight[ep.key] = ctx.in_flight.get(ep.key, 0) + 1
            if i % 7 == 0:  # requests complete, so in-flight counts stay realistic
                ctx.in_flight[ep.key] -= 1
    finally:
        gc.enable()
        await session.close()
    return timings, reference


def _row(label: str, seconds: list[float]) -> str:
    t = sorted(seconds)
    q = statistics.quantiles(t, n=100)
    return (f"| {label} | {len(t)} | {q[49] * 1e6:.0f} | {q[89] * 1e6:.0f} | {q[98] * 1e6:.0f} "
            f"| {t[-1] * 1e6:.0f} |")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--picks", type=int, default=5000)
    args = parser.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    # a yardstick for this machine's CPython speed (a recent desktop core: about 10 µs)
    yardstick = min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6
    print(f"# bench_picker {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
          f"{cpu}, Python {platform.python_version()}; sum(range(1000)) takes "
          f"{yardstick:.1f} µs here")  # fmt: skip
    print("| endpoints | picks | p50 µs | p90 µs | p99 µs | max µs |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    references = []
    for n in args.endpoints:
        t, ref = asyncio.run(run(n, args.picks))
        print(_row(str(n), t))
        references += ref
    print(_row("reference: sum(range(4000)), timed between the picks", references))
    return 0


if __name__ == "__main__":
    sys.exit(main())
