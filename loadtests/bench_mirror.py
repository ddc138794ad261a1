"""Does a hanging mirror target slow the primary down? Acceptance: with a RequestMirror (or a
Rollout shadow at 100 %) to a target that accepts connections but never answers, the primary's
p99 latency rises by at most 5 ms.

Processes, so that none shares an event loop: the backend (``loadtests.benchsupport backend``),
the hanging target (``hang`` below: accepts, reads, never writes), one ``sluice serve`` per
variant, and one open-loop load generator (``loadgen`` below: requests due at a fixed rate, each
sent on time whether or not earlier ones have finished). The variants are separate gateways over
the same backend, all running throughout:

- ``none``: HTTPRoute rule → backend;
- ``mirror``: the same rule with a ``RequestMirror`` filter to the hanging target;
- ``shadow`` (``--shadow``): a Rollout on the rule, candidate = the hanging target at weight 0,
  ``shadow: {percent: 100}``.

The generator warms every variant up, then sends phases of ``--phase`` seconds alternating
between them (none, mirror[, shadow], none, mirror, ...) for ``--rounds`` rounds, so drift on a
noisy machine falls on every variant alike; shorter phases and more rounds (``--phase 1
--rounds 20``) interleave more finely for the same total. Mirrors that never finish are bounded
by the gateway (64 in flight, 30 s each; the Rollout shadow by its ``maxInFlight``, 16 by
default): once the bound is reached further copies are dropped, and every 30 s the hung ones
time out and the bound fills again. Latency is measured from when a request left the generator;
its lag (how late it left against the schedule) is shown per phase.

The verdict is on the pooled p99 of each variant against ``none``. The ``none`` phases also
measure the machine's own noise, A/A: the pooled p99 of even rounds against odd rounds. When
that alone exceeds the 5 ms limit the verdict is INCONCLUSIVE (other jobs on the same cores move
a p99 by more than the effect sought).

    .venv/bin/python -m loadtests.bench_mirror [--rate 200] [--phase 10] [--rounds 2]
        [--warmup 2] [--shadow]

Exit status: 0 PASS, 1 FAIL (the limit exceeded, or a request failed), 3 INCONCLUSIVE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loadtests.benchsupport import (
    HOST,
    GatewayProcess,
    free_port,
    gateway_head,
    http_request,
    machine_lines,
    percentile,
    proc_cpu_seconds,
    running_backend,
    running_gateway,
    service_yaml,
    stop_process,
)
from loadtests.harness import run_async

ACCEPTANCE_MS = 5.0
REQUEST_TIMEOUT_S = 10.0
GRACE_S = 30.0
VARIANTS = ("none", "mirror", "shadow")
MIRROR_METRICS = ("sluice_mirror_requests_total", "sluice_shadow_requests_total")


# ---------------------------------------------------------------------------------------------
# configs


def config_for(variant: str, port: int, backend_port: int, hang_port: int) -> str:
    """The gateway config of one variant (see the module docstring)."""
    rule = "  - name: bench\n    backendRefs:\n    - {name: bench, port: 80, weight: 100}\n"
    extra = ""
    if variant == "mirror":
        rule += (
            "    filters:\n    - type: RequestMirror\n"
            "      requestMirror: {backendRef: {name: hang, port: 80}}\n"
        )
    elif variant == "shadow":
        rule += "    - {name: hang, port: 80, weight: 0}\n"
        extra = textwrap.dedent("""\
            ---
            apiVersion: sluice.dev/v1alpha1
            kind: Rollout
            metadata: {name: hang-shadow, namespace: default}
            spec:
              targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: route}
              baseline: bench
              candidate: hang
              steps: [{weight: 0, duration: 1h}]
              shadow: {percent: 100, target: hang}
            """)
    route = (
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        "metadata: {name: route, namespace: default}\n"
        f"spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n{rule}"
    )
    return (
        gateway_head(port)
        + route
        + extra
        + service_yaml("bench", backend_port)
        + service_yaml("hang", hang_port)
    )


# ---------------------------------------------------------------------------------------------
# the hanging target, inside its process


class _Swallow(asyncio.Protocol):
    """A connection that is read and never answered."""

    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.counts["accepted"] += 1
        self.counts["open"] += 1

    def data_received(self, data: bytes) -> None:
        self.counts["bytes"] += len(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.counts["open"] -= 1


async def _hang(ready: Any) -> None:
    """Accept every connection and read what arrives; never answer. On SIGTERM, print how
    many connections were accepted and how many are still open."""
    counts: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Swallow(counts), HOST, 0, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening {server.sockets[0].getsockname()[1]}", file=ready, flush=True)
    await stop.wait()
    print(json.dumps(dict(counts)), file=ready, flush=True)
    server.close()


@dataclass
class HangProcess:
    proc: subprocess.Popen[str]
    port: int

    def accepted(self) -> dict[str, int]:
        """Stop it and read how many connections it accepted."""
        stop_process(self.proc)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        return dict(json.loads(line)) if line else {}


@contextlib.contextmanager
def running_hang() -> Iterator[HangProcess]:
    cmd = [sys.executable, "-m", "loadtests.bench_mirror", "hang"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "listening":
            raise RuntimeError(f"the hanging target did not start (said {line!r})")
        yield HangProcess(proc=proc, port=int(line[1]))
    finally:
        stop_process(proc)


# ---------------------------------------------------------------------------------------------
# the open-loop load generator, inside its process


@dataclass
class _Tally:
    latencies_s: list[float] = field(default_factory=list)
    lags_s: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


async def _one(session: aiohttp.ClientSession, url: str, due: float, tally: _Tally) -> None:
    sent = time.perf_counter()
    try:
        async with session.get(url) as resp:
            await resp.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        tally.errors[type(exc).__name__] += 1
        return
    tally.latencies_s.append(time.perf_counter() - sent)
    tally.lags_s.append(max(0.0, sent - due))
    tally.statuses[str(resp.status)] += 1


async def _schedule(
    session: aiohttp.ClientSession, url: str, rate: float, seconds: float
) -> _Tally:
    """Requests due every 1/rate s for `seconds`, each sent on time; waits for all of them."""
    tally, tasks = _Tally(), []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(session, url, due, tally)))
    await asyncio.gather(*tasks)
    return tally


async def _loadgen(targets: Sequence[tuple[str, str]], args: argparse.Namespace) -> dict[str, Any]:
    """Warm every target up, then `rounds` rounds of one `phase`-second phase per target."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    phases = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        session._retry_connection = False  # as benchsupport: never hide a failed request
        for _, url in targets:
            await _schedule(session, url, args.rate, args.warmup)
        cpu0 = time.process_time()
        for rnd in range(args.rounds):
            for name, url in targets:
                tally = await _schedule(session, url, args.rate, args.phase)
                phases.append({
                    "variant": name, "round": rnd,
                    "latencies_ms": [round(v * 1e3, 4) for v in tally.latencies_s],
                    "lag_p99_ms": percentile(sorted(tally.lags_s), 99) * 1e3,
                    "statuses": dict(tally.statuses), "errors": dict(tally.errors),
                })  # fmt: skip
        cpu = time.process_time() - cpu0
    return {"phases": phases, "client_cpu_s": cpu}


# ---------------------------------------------------------------------------------------------
# the benchmark, in the parent


@dataclass
class Phase:
    variant: str
    round: int
    latencies_ms: list[float]
    lag_p99_ms: float
    statuses: dict[str, int]
    errors: dict[str, int]

    def p(self, pct: float) -> float:
        return percentile(sorted(self.latencies_ms), pct)

    @property
    def failures(self) -> int:
        bad = sum(n for s, n in self.statuses.items() if not s.startswith("2"))
        return bad + sum(self.errors.values())


@dataclass
class Usage:
    """Per variant, over the whole run: its gateway's CPU seconds and mirror/shadow copies."""

    sluice_cpu_s: dict[str, float]
    copies: dict[str, dict[str, float]]
    client_cpu_s: float


def _copies(gw: GatewayProcess) -> dict[str, float]:
    """sluice_{mirror,shadow}_requests_total by result, from the gateway's /metrics."""
    text = http_request("GET", f"{gw.admin_url}/metrics").body.decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name in MIRROR_METRICS:
            result = rest.split('result="', 1)[1].split('"', 1)[0]
            out[result] = out.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _drive(gws: dict[str, GatewayProcess], args: argparse.Namespace) -> tuple[list[Phase], Usage]:
    cmd = [sys.executable, "-m", "loadtests.bench_mirror", "loadgen", "--rate", str(args.rate),
           "--phase", str(args.phase), "--rounds", str(args.rounds),
           "--warmup", str(args.warmup)]  # fmt: skip
    for name, gw in gws.items():
        cmd += ["--target", f"{name}={gw.url}/bench"]
    before = {v: (proc_cpu_seconds(gw.proc.pid), _copies(gw)) for v, gw in gws.items()}
    per_round = (args.phase + REQUEST_TIMEOUT_S) * len(gws)
    limit = args.rounds * per_round + args.warmup * len(gws) + GRACE_S
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{done.stderr[-2000:]}")
    raw = json.loads(done.stdout)
    usage = Usage(sluice_cpu_s={}, copies={}, client_cpu_s=raw["client_cpu_s"])
    for v, gw in gws.items():
        cpu0, copies0 = before[v]
        usage.sluice_cpu_s[v] = proc_cpu_seconds(gw.proc.pid) - cpu0
        after = _copies(gw)
        usage.copies[v] = {k: after[k] - copies0.get(k, 0.0) for k in after}
    return [Phase(**p) for p in raw["phases"]], usage


def _line(p: Phase) -> str:
    return (
        f"  round {p.round + 1} {p.variant:<6}  n={len(p.latencies_ms):5d}  p50 {p.p(50):6.2f} ms"
        f"  p99 {p.p(99):7.2f} ms  max {max(p.latencies_ms, default=0):7.1f} ms  "
        f"lag p99 {p.lag_p99_ms:5.1f} ms  failures {p.failures}"
    )


def _pooled(phases: Sequence[Phase], variant: str, pct: float, parity: int | None = None) -> float:
    values = sorted(
        v
        for p in phases
        if p.variant == variant and (parity is None or p.round % 2 == parity)
        for v in p.latencies_ms
    )
    return percentile(values, pct)


def _paired(phases: Sequence[Phase], variant: str) -> float:
    """Median over rounds of (variant's p99 − the none phase's p99 of the same round)."""
    base = {p.round: p.p(99) for p in phases if p.variant == "none"}
    return statistics.median(p.p(99) - base[p.round] for p in phases if p.variant == variant)


def _noise_ms(phases: Sequence[Phase]) -> float | None:
    """An A/A comparison: the pooled p99 of the `none` phases of even rounds against that of
    odd rounds. What the machine alone moves a pooled p99 by (None with one round)."""
    if len({p.round for p in phases}) < 2:
        return None
    return abs(_pooled(phases, "none", 99, 0) - _pooled(phases, "none", 99, 1))


def _table(phases: Sequence[Phase], variants: Sequence[str], usage: Usage) -> list[str]:
    lines = [
        "| variant | requests | p50 (ms) | p99 (ms) | p99 − none (ms) | p99 − none, paired "
        "median over rounds (ms) | failures | gateway CPU (s) | copies (by result) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        n = sum(len(p.latencies_ms) for p in phases if p.variant == v)
        fails = sum(p.failures for p in phases if p.variant == v)
        diff = "" if v == "none" else f"{_pooled(phases, v, 99) - _pooled(phases, 'none', 99):+.2f}"
        paired = "" if v == "none" else f"{_paired(phases, v):+.2f}"
        copies = ", ".join(f"{k} {c:.0f}" for k, c in sorted(usage.copies[v].items()) if c)
        lines.append(
            f"| {v} | {n} | {_pooled(phases, v, 50):.2f} | {_pooled(phases, v, 99):.2f} | "
            f"{diff} | {paired} | {fails} | {usage.sluice_cpu_s[v]:.1f} | {copies or '-'} |"
        )
    return lines


def _verdicts(phases: Sequence[Phase], variants: Sequence[str]) -> list[tuple[str, str]]:
    """(PASS | FAIL | INCONCLUSIVE, why) per variant, on the pooled p99 difference;
    inconclusive when the A/A noise alone exceeds the limit."""
    out = []
    noise = _noise_ms(phases)
    shown = "unknown (one round)" if noise is None else f"{noise:.2f} ms"
    for v in variants[1:]:
        diff = _pooled(phases, v, 99) - _pooled(phases, "none", 99)
        text = (
            f"{v}: p99 {diff:+.2f} ms against none (limit +{ACCEPTANCE_MS:g} ms; "
            f"A/A noise of the none phases {shown})"
        )
        if any(p.failures for p in phases if p.variant == v):
            out.append(("FAIL", text + "; requests failed"))
        elif noise is None or noise > ACCEPTANCE_MS:
            out.append(("INCONCLUSIVE", text))
        else:
            out.append(("PASS" if diff <= ACCEPTANCE_MS else "FAIL", text))
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_mirror",
                                description=__doc__.splitlines()[0])  # fmt: skip
    sub = p.add_subparsers(dest="role")
    sub.add_parser("hang", help="(internal) the hanging target")
    lg = sub.add_parser("loadgen", help="(internal) the open-loop phases")
    for q in (p, lg):
        q.add_argument("--rate", type=float, default=200.0, help="requests/s (200)")
        q.add_argument("--phase", type=float, default=10.0, help="s per phase (10)")
        q.add_argument("--rounds", type=int, default=2, help="phases per variant (2)")
        q.add_argument("--warmup", type=float, default=2.0, help="unmeasured s per variant (2)")
    lg.add_argument("--target", action="append", default=[], help="NAME=URL, in phase order")
    p.add_argument("--shadow", action="store_true", help="also a Rollout shadow variant")
    return p


@contextlib.contextmanager
def _gateways(
    tmp: Path, variants: Sequence[str], backend_port: int, hang_port: int
) -> Iterator[dict[str, GatewayProcess]]:
    with contextlib.ExitStack() as stack:
        gws = {}
        for v in variants:
            port, config = free_port(), tmp / f"{v}.yaml"
            config.write_text(config_for(v, port, backend_port, hang_port))
            gws[v] = stack.enter_context(
                running_gateway(config, port=port, log_path=tmp / f"{v}.log", extra=["--no-watch"])
            )
        yield gws


def bench(args: argparse.Namespace) -> int:
    variants = ("none", "mirror", "shadow") if args.shadow else ("none", "mirror")
    print("Sluice mirror benchmark: does a hanging mirror target raise the primary's p99?")
    print("\n".join(machine_lines()))
    print(f"load:    open loop, {args.rate:g} req/s fixed rate, GET; phases of {args.phase:g} s "
          f"alternating {', '.join(variants)}, {args.rounds} rounds, after {args.warmup:g} s "
          f"warm-up per variant; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("processes: backend (aiohttp), hanging target (asyncio, never answers), one sluice "
          "serve per variant, one load generator (aiohttp, uvloop)")  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="sluice-mirror-") as tmp,
        running_backend("bench") as be,
        running_hang() as hang,
        _gateways(Path(tmp), variants, be.port, hang.port) as gws,
    ):
        phases, usage = _drive(gws, args)
        accepted = hang.accepted()
    if len(phases) <= 12:
        print("\n".join(_line(p) for p in phases))
    print(f"hanging target: {accepted.get('accepted', '?')} connections accepted, "
          f"{accepted.get('open', '?')} still open at the end (none ever answered); "
          f"load average at the end {os.getloadavg()[0]:.2f}\n")  # fmt: skip
    print("\n".join(_table(phases, variants, usage)))
    verdicts = _verdicts(phases, variants)
    for word, text in verdicts:
        print(f"{word}: {text}")
    words = {word for word, _ in verdicts}
    return 1 if "FAIL" in words else 3 if "INCONCLUSIVE" in words else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.role == "hang":
        run_async(_hang(sys.stdout))
        return 0
    if args.role == "loadgen":
        targets = [tuple(t.split("=", 1)) for t in args.target]
        if not targets or not all(url.startswith(f"http://{HOST}:") for _, url in targets):
            print(f"refusing to load anything but {HOST}", file=sys.stderr)
            return 2
        print(json.dumps(run_async(_loadgen(targets, args))))
        return 0
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
