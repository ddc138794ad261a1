"""Benchmark: the CPU the scraper costs, 100 endpoints scraped every 50 ms.

A child process serves a vLLM-style ``/metrics`` page on N loopback ports (raw asyncio,
keep-alive); this process runs the gateway's own ``Scraper`` against them with the vLLM
preset (on uvloop, as `sluice serve` does) for a fixed window and reports its CPU time per
wall second (1.0 = one core) and the scrape rate achieved. Two page sizes: the simulated
fleet's (≈8 KB, only the series it models) and a page padded to the size of a real vLLM
server's (≈70 KB: per-model histograms for TTFT, TPOT, end-to-end, queue, prefill and decode
time, token counts, plus process and GC series), since the scraper's cost grows with what it
must skip. Only 127.0.0.1 is contacted; the child exits with this process.

    python -m loadtests.bench_scrape [--endpoints 100] [--interval 0.05] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import uvloop

from gateway.configload import load_config
from gateway.scraper import Scraper, ScrapeTarget
from loadtests.fleet import Fleet, FleetSpec, ReplicaSpec

QUICKSTART = Path(__file__).resolve().parent.parent / "config/examples/quickstart.yaml"
MODEL = 'model_name="meta-llama/Llama-3.1-8B-Instruct",engine="0"'
HISTOGRAMS = (
    "time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds",
    "request_queue_time_seconds", "request_inference_time_seconds",
    "request_prefill_time_seconds", "request_decode_time_seconds",
    "request_prompt_tokens", "request_generation_tokens", "iteration_tokens_total",
    "request_max_num_generation_tokens", "request_params_max_tokens", "request_params_n",
)  # fmt: skip


async def _fleet_page() -> bytes:
    async with Fleet(FleetSpec(replicas=(ReplicaSpec(),), time_scale=0.05)) as fleet:
        return fleet.replicas[0].metrics_text().encode()


def _padded(page: bytes, target_bytes: int) -> bytes:
    """The fleet's page plus vLLM-like histogram and process series up to ``target_bytes``."""
    lines = [page.decode().rstrip("\n")]
    for name in HISTOGRAMS:
        lines.append(f"# HELP vllm:{name}_x Histogram of {name}.\n# TYPE vllm:{name}_x histogram")
        for le in [*(f"{2**i / 1000:g}" for i in range(30)), "+Inf"]:
            lines.append(f'vllm:{name}_x_bucket{{{MODEL},le="{le}"}} 12345.0')
        lines.append(f"vllm:{name}_x_sum{{{MODEL}}} 9876.5\nvllm:{name}_x_count{{{MODEL}}} 12345.0")
    i = 0
    while sum(len(x) + 1 for x in lines) < target_bytes:
        lines.append(f'python_gc_objects_collected_total{{generation="{i}"}} {i * 31}.0')
        i += 1
    return ("\n".join(lines) + "\n").encode()


SERVER = r"""
import asyncio, os, sys
body = sys.stdin.buffer.read()
head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\n\r\n")
models = b'{"object":"list","data":[{"id":"meta-llama/Llama-3.1-8B-Instruct"}]}'
models_head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
               + str(len(models)).encode() + b"\r\n\r\n")

async def serve(reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            if b"/v1/models" in line:
                writer.write(models_head + models)
            else:
                writer.write(head + body)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()

async def main():
    servers = [await asyncio.start_server(serve, "127.0.0.1", 0) for _ in range(int(sys.argv[1]))]
    ports = " ".join(str(s.sockets[0].getsockname()[1]) for s in servers)
    print(len(head) + len(body), ports, flush=True)  # a metrics response's size, the ports
    parent = os.getppid()
    while os.getppid() == parent:  # ends with the parent (which also kills it)
        await asyncio.sleep(0.5)

asyncio.run(main())
"""


def serve_pages(page: bytes, endpoints: int) -> tuple[subprocess.Popen[bytes], int, list[int]]:
    """Start the child that serves ``page`` on ``endpoints`` loopback ports; returns it, the
    size of one metrics response (head and body) and the ports."""
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(endpoints)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    if child.stdin is None or child.stdout is None:
        raise RuntimeError("no pipes to the page server")
    child.stdin.write(page)
    child.stdin.close()  # EOF: the child has the page and starts serving
    size, *ports = (int(p) for p in child.stdout.readline().split())
    return child, size, ports


async def measure(ports: list[int], interval_s: float, seconds: float) -> dict[str, float]:
    preset = load_config([str(QUICKSTART)]).table.presets["vllm"]
    scraper = Scraper()
    targets = {
        ScrapeTarget(address="127.0.0.1", port=p, preset=preset, interval_s=interval_s,
                     timeout_s=1.0)
        for p in ports
    }  # fmt: skip
    scraper.apply(targets)
    await asyncio.sleep(2.0)  # connections open, model lists read
    before = {k: s.scrapes for k, s in scraper.states.items()}
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    scrapes = sum(s.scrapes - before[k] for k, s in scraper.states.items())
    fresh = sum(1 for s in scraper.states.values() if s.metrics is not None)
    await scraper.close()
    return {
        "cpu_per_s": cpu / wall,
        "scrapes_per_s": scrapes / wall,
        "endpoints_with_metrics": fresh,
        "us_per_scrape": cpu / max(1, scrapes) * 1e6,
    }


class _CountingProtocol(asyncio.Protocol):
    """The bare-I/O floor: count a response's bytes, nothing else (no HTTP, no parsing)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.got = 0
        self.responses = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= self.size:
            self.got = 0
            self.responses += 1


async def measure_floor(
    ports: list[int], response_bytes: int, interval_s: float, seconds: float
) -> dict[str, float]:
    """What the kernel and the event loop alone cost for the same traffic: one timer writes a
    request on every keep-alive connection each interval; a protocol counts the answers."""
    loop = asyncio.get_running_loop()
    request = b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n"
    protocols = []
    for port in ports:
        _, protocol = await loop.create_connection(
            lambda: _CountingProtocol(response_bytes), "127.0.0.1", port
        )
        protocols.append(protocol)

    def tick() -> None:
        for protocol in protocols:
            if protocol.transport is not None:
                protocol.transport.write(request)
        handle[0] = loop.call_later(interval_s, tick)

    handle = [loop.call_soon(tick)]
    await asyncio.sleep(1.0)
    before = sum(p.responses for p in protocols)
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    done = sum(p.responses for p in protocols) - before
    handle[0].cancel()
    for protocol in protocols:
        if protocol.transport is not None:
            protocol.transport.close()
    return {"cpu_per_s": cpu / wall, "scrapes_per_s": done / wall,
            "us_per_scrape": cpu / max(1, done) * 1e6}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    print(f"# bench_scrape {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
          f"{cpu}, Python {platform.python_version()}; {args.endpoints} endpoints every "
          f"{args.interval * 1000:g} ms, {args.seconds:g} s measured")  # fmt: skip
    print("| page | bytes | scrapes/s (ideal) | CPU (cores) | µs CPU per scrape | with metrics |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    small = asyncio.run(_fleet_page())
    ideal = args.endpoints / args.interval
    for name, page in (("simulated fleet", small), ("vLLM-sized", _padded(small, 70_000))):
        child, size, ports = serve_pages(page, args.endpoints)
        try:
            # uvloop, as `sluice serve` runs; the floor on the same server, just before
            floor = uvloop.run(measure_floor(ports, size, args.interval, args.seconds))
            r = uvloop.run(measure(ports, args.interval, args.seconds))
        finally:
            child.kill()
            child.wait()
        print(
            f"| {name}: bare I/O floor | {len(page)} | {floor['scrapes_per_s']:.0f} "
            f"({ideal:.0f}) | {floor['cpu_per_s']:.3f} | {floor['us_per_scrape']:.0f} | – |"
        )
        print(f"| {name}: Sluice's scraper | {len(page)} | {r['scrapes_per_s']:.0f} "
              f"({ideal:.0f}) | {r['cpu_per_s']:.3f} | {r['us_per_scrape']:.0f} "
              f"| {r['endpoints_with_metrics']}/{args.endpoints} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
