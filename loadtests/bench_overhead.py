"""What does going through Sluice cost? One backend, driven directly and via ``sluice serve``.

Three OS processes (backend, gateway, load generator) so none shares an event loop. Phases
alternate direct, via, direct, via, ... to cancel drift on a noisy machine; each phase has its
own unmeasured warm-up, and the table reports the median over rounds. Added latency is paired
per round (via phase minus the direct phase just before it), then the median is taken; note
that a difference of percentiles is not the percentile of per-request differences.

Sluice's CPU time is read from /proc/<pid>/stat (utime + stime) at the edges of each measured
window, as signalled by the load generator.

    .venv/bin/python loadtests/bench_overhead.py [--concurrency 32] [--duration 10]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from loadtests.benchsupport import (
    BODY,
    BackendProcess,
    BackendRef,
    GatewayProcess,
    LoadResult,
    LoadSpec,
    free_port,
    gateway_config,
    http_request,
    machine_lines,
    run_load,
    running_backend,
    running_gateway,
)

DEFAULT_CONCURRENCY = 32
DEFAULT_DURATION_S = 10.0
DEFAULT_WARMUP_S = 1.0
DEFAULT_ROUNDS = 3
DEFAULT_MAX_REQUESTS = 1_000_000


@dataclass
class Phase:
    target: str  # "direct" | "via"
    round: int
    result: LoadResult


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="connections")
    p.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="s per phase")
    p.add_argument("--requests", type=int, default=DEFAULT_MAX_REQUESTS, help="cap per phase")
    p.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S, help="s before each phase")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="direct+via pairs")
    return p


@contextlib.contextmanager
def _stack(tmp: Path) -> Iterator[tuple[BackendProcess, GatewayProcess]]:
    with running_backend("bench") as be:
        port = free_port()
        config = tmp / "bench.yaml"
        config.write_text(
            gateway_config(port, [BackendRef("bench", be.port)], response_headers=None)
        )
        with running_gateway(
            config, port=port, log_path=tmp / "sluice.log", extra=["--no-watch"]
        ) as gw:
            yield be, gw


def _check_paths(be: BackendProcess, gw: GatewayProcess) -> None:
    for url in (f"http://127.0.0.1:{be.port}/bench", f"{gw.url}/bench"):
        reply = http_request("GET", url)
        if reply.status != 200 or reply.body != BODY:
            raise RuntimeError(f"GET {url}: {reply.status} {reply.body[:200]!r}")


def _run_phases(args: argparse.Namespace, be: BackendProcess, gw: GatewayProcess) -> list[Phase]:
    urls = {"direct": f"http://127.0.0.1:{be.port}/bench", "via": f"{gw.url}/bench"}
    watch = {"sluice": gw.proc.pid, "backend": be.proc.pid}
    phases = []
    for rnd in range(args.rounds):
        for target in ("direct", "via"):
            spec = LoadSpec(
                url=urls[target],
                concurrency=args.concurrency,
                duration_s=args.duration,
                warmup_s=args.warmup,
                max_requests=args.requests,
            )
            res = run_load(spec, watch)
            phases.append(Phase(target=target, round=rnd, result=res))
            print(f"  round {rnd + 1} {target:6}: {_phase_line(res)}", flush=True)
    return phases


def _phase_line(r: LoadResult) -> str:
    sl, be = r.watched_cpu_s["sluice"], r.watched_cpu_s["backend"]
    return (
        f"{r.rps:8.0f} req/s  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms  "
        f"n={r.requests}  failures={r.failures}  CPU s: client {r.client_cpu_s:.2f} "
        f"sluice {sl:.2f} backend {be:.2f} in {r.elapsed_s:.1f} s"
    )


def _per_1k(r: LoadResult, key: str) -> float:
    ok = r.requests - sum(r.errors.values())
    return r.watched_cpu_s[key] / ok * 1000 if ok else float("nan")


def _median(phases: list[Phase], target: str, f: Callable[[LoadResult], float]) -> float:
    return statistics.median(f(p.result) for p in phases if p.target == target)


def _paired(phases: list[Phase], f: Callable[[LoadResult], float], op: str) -> float:
    """Median over rounds of (via op direct), pairing each via phase with its round's direct."""
    direct = {p.round: f(p.result) for p in phases if p.target == "direct"}
    values = []
    for p in phases:
        if p.target != "via":
            continue
        d, v = direct[p.round], f(p.result)
        values.append(v - d if op == "-" else (v / d if d else float("nan")))
    return statistics.median(values)


def _cores(r: LoadResult) -> float:
    busy = r.client_cpu_s + r.watched_cpu_s["sluice"] + r.watched_cpu_s["backend"]
    return busy / r.elapsed_s


def _table(phases: list[Phase]) -> list[str]:
    def row(label: str, f: Callable[[LoadResult], float], fmt: str, ratio: bool = True) -> str:
        d, v = _median(phases, "direct", f), _median(phases, "via", f)
        r = f"{_paired(phases, f, '/'):12.2f}" if ratio else f"{'':12}"
        return f"{label:<34}{d:>12{fmt}}{v:>14{fmt}}{r}".rstrip()

    def added(label: str, f: Callable[[LoadResult], float]) -> str:
        return f"{label:<34}{'':>12}{_paired(phases, f, '-'):>14.2f}"

    return [
        f"{'median over rounds':<34}{'direct':>12}{'via Sluice':>14}{'via/direct':>12}",
        row("throughput (req/s)", lambda r: r.rps, ".0f"),
        row("latency p50 (ms)", lambda r: r.p50_ms, ".2f"),
        row("latency p99 (ms)", lambda r: r.p99_ms, ".2f"),
        added("added latency p50 (ms)", lambda r: r.p50_ms),
        added("added latency p99 (ms)", lambda r: r.p99_ms),
        f"{'Sluice CPU (s/1k req)':<34}{'':>12}"
        f"{_median(phases, 'via', lambda r: _per_1k(r, 'sluice')):>14.3f}",
        row("backend CPU (s/1k req)", lambda r: _per_1k(r, "backend"), ".3f"),
        row("load generator CPU (s/1k req)", lambda r: r.client_cpu_s / r.requests * 1e3, ".3f"),
        row("load generator busy (cores)", lambda r: r.client_cpu_s / r.elapsed_s, ".2f", False),
        row("all three processes (cores)", _cores, ".2f", False),
        "",
        "via/direct and added latency are paired per round (each via phase against the direct",
        "phase just before it), then the median over rounds is taken. CPU s/1k req is the",
        "process's utime+stime during the measured window / completed requests.",
    ]


def main() -> int:
    args = _parser().parse_args()
    print("Sluice overhead benchmark")
    print("\n".join(machine_lines()))
    print(
        f"load:    {args.concurrency} keep-alive connections, closed loop, GET with "
        f"{len(BODY)}-byte response; {args.duration:g} s measured per phase after "
        f"{args.warmup:g} s warm-up (cap {args.requests} requests); "
        f"{args.rounds} rounds of direct then via"
    )
    wrk = shutil.which("wrk")
    print(
        "generator: Python aiohttp client (own process, uvloop, client retries off); "
        f"wrk {'at ' + wrk + ' not used' if wrk else 'not on PATH'}\n"
        "backend: aiohttp (own process); gateway: sluice serve --no-watch (own process)"
    )
    with (
        tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp,
        _stack(Path(tmp)) as (be, gw),
    ):
        _check_paths(be, gw)
        phases = _run_phases(args, be, gw)
    print()
    print("\n".join(_table(phases)))
    failures = sum(p.result.failures for p in phases)
    if failures:
        print(f"WARNING: {failures} failed requests (non-2xx or connection errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
