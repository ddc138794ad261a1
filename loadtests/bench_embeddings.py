"""Embeddings micro-batching: throughput and latency of single-input ``/v1/embeddings`` calls
through Sluice with batching on and off, side by side in one run.

Three OS processes on 127.0.0.1: the simulated fleet (``loadtests.fleet.cli``, time scale 1,
so an upstream embeddings call costs 8 ms + 0.02 ms per token and each replica runs one call
at a time, as one accelerator would), ``sluice serve`` with two InferencePools over the same
replicas (``emb-on`` with the TrafficPolicy's ``embeddings`` batching, ``emb-off`` with
``enabled: false``, chosen by a request header), and this process as a closed-loop aiohttp
load generator. Phases alternate on, off, on, off... each after its own unmeasured warm-up;
the table shows the median over rounds. Upstream calls per phase come from the gateway's
``sluice_picks_total`` (one pick per upstream call, batched or not).

    .venv/bin/python -m loadtests.bench_embeddings [--concurrency 64] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp

from loadtests.benchsupport import (
    HOST,
    REQUEST_TIMEOUT_S,
    free_port,
    gateway_head,
    http_request,
    machine_lines,
    percentile,
    running_gateway,
    stop_process,
)
from loadtests.fleet import DEFAULT_MODEL
from loadtests.harness import run_async

DEFAULT_CONCURRENCY = 64
DEFAULT_DURATION_S = 5.0
DEFAULT_WARMUP_S = 1.0
DEFAULT_ROUNDS = 2
DEFAULT_REPLICAS = 2
FLEET_READY_TIMEOUT_S = 20.0
MODE_HEADER = "x-bench-batching"
MODES = ("on", "off")
# about 12 estimated tokens: a short sentence, as in search or RAG indexing
TEXT = "embedding benchmark input {n}: the quick brown fox jumps over"
T = TypeVar("T")
_PICKS = re.compile(r"^sluice_picks_total\{([^}]*)\}\s+([0-9.e+]+)$", re.MULTILINE)


@dataclass
class Phase:
    mode: str
    round: int
    requests: int
    failures: dict[str, int]
    elapsed_s: float
    latencies_s: list[float] = field(repr=False)
    upstream_calls: float

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_s, 50) * 1e3

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_s, 99) * 1e3

    @property
    def inputs_per_call(self) -> float:
        return len(self.latencies_s) / self.upstream_calls if self.upstream_calls else 0.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="clients")
    p.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="s per phase")
    p.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S, help="s before each phase")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="on+off pairs")
    p.add_argument("--replicas", type=int, default=DEFAULT_REPLICAS, help="fleet replicas")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-batch-tokens", type=int, default=16384)
    p.add_argument("--max-queue-delay", default="5ms", help="a Gateway API duration")
    return p


# ---------------------------------------------------------------------------------------------
# processes


@contextlib.contextmanager
def _fleet(tmp: Path, replicas: int) -> Iterator[Path]:
    """``loadtests.fleet.cli`` in its own process; yields its EndpointSlices file."""
    slices = tmp / "slices.yaml"
    cmd = [
        sys.executable, "-m", "loadtests.fleet.cli", "--replicas", str(replicas),
        "--host", HOST, "--time-scale", "1", "--endpoint-slices", str(slices),
        "--labels", "app=llama",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + FLEET_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the fleet exited with {proc.wait()}")
            if line.startswith("EndpointSlices written"):
                break
        else:
            raise RuntimeError("the fleet did not start in time")
        yield slices
    finally:
        stop_process(proc)


def _config(port: int, slices: Path, args: argparse.Namespace) -> str:
    head = gateway_head(port) + textwrap.dedent("""\
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: embeddings, namespace: default}
        spec:
          parentRefs: [{name: gw}]
          rules:
        """)
    batching = {
        "on": (
            f"{{maxBatchSize: {args.max_batch_size}, maxBatchTokens: {args.max_batch_tokens}, "
            f"maxQueueDelay: {args.max_queue_delay}}}"
        ),
        "off": "{enabled: false}",
    }
    rules, pools = "", ""
    for mode in MODES:
        rules += (
            f'  - matches: [{{headers: [{{name: {MODE_HEADER}, value: "{mode}"}}]}}]\n'
            "    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
            f"name: emb-{mode}}}]\n"
        )
        pools += textwrap.dedent(f"""\
            ---
            apiVersion: inference.networking.k8s.io/v1
            kind: InferencePool
            metadata: {{name: emb-{mode}, namespace: default}}
            spec:
              selector: {{matchLabels: {{app: llama}}}}
              targetPorts: [{{number: 8000}}]
              endpointPickerRef: {{name: epp, port: {{number: 9002}}, failureMode: FailOpen}}
            ---
            apiVersion: sluice.dev/v1alpha1
            kind: TrafficPolicy
            metadata: {{name: emb-{mode}, namespace: default}}
            spec:
              targetRefs: [{{group: inference.networking.k8s.io, kind: InferencePool, name: emb-{mode}}}]
              embeddings: {batching[mode]}
            """)  # noqa: E501 - YAML inside a dedent
    # Sluice is the endpoint picker; the pools' endpointPickerRef must still resolve.
    picker = textwrap.dedent("""\
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: epp, namespace: default}
        spec:
          ports: [{name: grpc, port: 9002}]
        """)
    return head + rules + pools + picker + "---\n" + slices.read_text()


def _check(url: str) -> None:
    """One request per mode must answer 200 before anything is measured."""

    async def probe(mode: str) -> tuple[int, bytes]:
        body = {"model": DEFAULT_MODEL, "input": "probe"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=body, headers={MODE_HEADER: mode}) as resp,
        ):
            return resp.status, await resp.read()

    for mode in MODES:
        status, body = run_async(probe(mode))
        if status != 200:
            raise RuntimeError(f"batching {mode}: POST {url}: {status} {body[:300]!r}")


def _picks(admin_url: str) -> dict[str, float]:
    """``sluice_picks_total{result="ok"}`` per pool (the pool label holds its name)."""
    text = http_request("GET", f"{admin_url}/metrics").body.decode()
    out: dict[str, float] = {}
    for labels, value in _PICKS.findall(text):
        if 'result="ok"' not in labels:
            continue
        for mode in MODES:
            if f"emb-{mode}" in labels:
                out[mode] = out.get(mode, 0.0) + float(value)
    return out


# ---------------------------------------------------------------------------------------------
# load


@dataclass
class _Tally:
    latencies_s: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    sent: int = 0


async def _client(
    session: aiohttp.ClientSession, url: str, mode: str, worker: int, deadline: float, t: _Tally
) -> None:
    headers = {MODE_HEADER: mode, "Content-Type": "application/json"}
    n = 0
    while time.perf_counter() < deadline:
        body = json.dumps({"model": DEFAULT_MODEL, "input": TEXT.format(n=f"{worker}-{n}")})
        n += 1
        t.sent += 1
        t0 = time.perf_counter()
        try:
            async with session.post(url, data=body.encode(), headers=headers) as resp:
                await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            t.failures[type(exc).__name__] += 1
            continue
        if resp.status != 200:
            t.failures[str(resp.status)] += 1
            continue
        t.latencies_s.append(time.perf_counter() - t0)


async def _window(url: str, mode: str, concurrency: int, seconds: float) -> tuple[_Tally, float]:
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=300)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tally = _Tally()
        t0 = time.perf_counter()
        deadline = t0 + seconds
        await asyncio.gather(
            *(_client(session, url, mode, w, deadline, tally) for w in range(concurrency))
        )
        return tally, time.perf_counter() - t0


def _phase(args: argparse.Namespace, url: str, admin_url: str, mode: str, rnd: int) -> Phase:
    if args.warmup > 0:
        run_async(_window(url, mode, args.concurrency, args.warmup))
    before = _picks(admin_url).get(mode, 0.0)
    tally, elapsed = run_async(_window(url, mode, args.concurrency, args.duration))
    calls = _picks(admin_url).get(mode, 0.0) - before
    return Phase(
        mode=mode,
        round=rnd,
        requests=tally.sent,
        failures=dict(tally.failures),
        elapsed_s=elapsed,
        latencies_s=sorted(tally.latencies_s),
        upstream_calls=calls,
    )


# ---------------------------------------------------------------------------------------------
# report


def _phase_line(p: Phase) -> str:
    return (
        f"  round {p.round + 1} batching {p.mode:3}: {p.rps:7.0f} req/s  p50 {p.p50_ms:7.2f} ms  "
        f"p99 {p.p99_ms:7.2f} ms  n={p.requests}  failures={sum(p.failures.values())}  "
        f"upstream calls {p.upstream_calls:.0f} ({p.inputs_per_call:.1f} inputs each)"
    )


def _table(phases: list[Phase]) -> list[str]:
    def median(mode: str, f: Callable[[Phase], float]) -> float:
        return statistics.median(f(p) for p in phases if p.mode == mode)

    def row(label: str, f: Callable[[Phase], float], fmt: str) -> str:
        on, off = median("on", f), median("off", f)
        ratio = f"{on / off:12.2f}" if off else f"{'n/a':>12}"
        return f"{label:<28}{on:>12{fmt}}{off:>12{fmt}}{ratio}"

    return [
        f"{'median over rounds':<28}{'batching on':>12}{'off':>12}{'on/off':>12}",
        row("throughput (req/s)", lambda p: p.rps, ".0f"),
        row("latency p50 (ms)", lambda p: p.p50_ms, ".2f"),
        row("latency p99 (ms)", lambda p: p.p99_ms, ".2f"),
        row("inputs per upstream call", lambda p: p.inputs_per_call, ".1f"),
    ]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    print("Sluice embeddings micro-batching benchmark")
    print("\n".join(machine_lines()))
    print(
        f"load:     {args.concurrency} closed-loop clients (aiohttp, keep-alive, this process), "
        f"each POST /v1/embeddings with one ~{len(TEXT) // 4}-token input; {args.duration:g} s "
        f"measured per phase after {args.warmup:g} s warm-up; {args.rounds} rounds of on, off\n"
        f"fleet:    {args.replicas} simulated replicas (own process, time scale 1: 8 ms + "
        "0.02 ms/token per upstream call, one call at a time per replica)\n"
        f"gateway:  sluice serve --no-watch (own process); batching on = maxBatchSize "
        f"{args.max_batch_size}, maxBatchTokens {args.max_batch_tokens}, maxQueueDelay "
        f"{args.max_queue_delay}; off = embeddings: {{enabled: false}}"
    )
    with tempfile.TemporaryDirectory(prefix="sluice-bench-emb-") as tmp_name:
        tmp = Path(tmp_name)
        with _fleet(tmp, args.replicas) as slices:
            port = free_port()
            config = tmp / "sluice.yaml"
            config.write_text(_config(port, slices, args))
            with running_gateway(
                config, port=port, log_path=tmp / "sluice.log", extra=["--no-watch"]
            ) as gw:
                url = f"{gw.url}/v1/embeddings"
                _check(url)
                phases = []
                for rnd in range(args.rounds):
                    for mode in MODES:
                        phase = _phase(args, url, gw.admin_url, mode, rnd)
                        phases.append(phase)
                        print(_phase_line(phase), flush=True)
    print()
    print("\n".join(_table(phases)))
    failures = sum(sum(p.failures.values()) for p in phases)
    if failures:
        print(f"WARNING: {failures} failed requests: {[p.failures for p in phases]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
