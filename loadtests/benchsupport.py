"""Processes shared by ``bench_overhead.py`` and ``reload_under_load.py``.

Each role runs in its own OS process so the client, the gateway and the backend never share
an event loop (or a GIL):

* ``python -m loadtests.benchsupport backend`` — a trivial aiohttp server on 127.0.0.1 that
  answers every request with a small fixed body; prints ``listening PORT`` once bound.
* ``python -m loadtests.benchsupport loadgen`` — a closed-loop keep-alive aiohttp client at a
  fixed concurrency. It prints ``measuring`` when the measured window opens (after warm-up),
  ``done`` when it closes, then one JSON line with the results, so the parent can sample
  other processes' CPU time at exactly the window's edges.
* ``sluice serve`` — started by :func:`start_gateway` on a config from :func:`gateway_config`.

Only 127.0.0.1 is ever contacted. Every loop is bounded by a deadline and a request count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiohttp import web

from loadtests.harness import run_async

HOST = "127.0.0.1"
BODY = b"hello from the sluice bench backend\n"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 10.0
DEFAULT_MAX_REQUESTS = 2_000_000


# ---------------------------------------------------------------------------------------------
# machine, ports, CPU time


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5); utime and stime are fields 14 and 15
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_lines() -> list[str]:
    usable = len(os.sched_getaffinity(0))
    try:
        import uvloop

        loop = f"uvloop {getattr(uvloop, '__version__', '?')}"
    except ImportError:
        loop = "asyncio (uvloop not installed)"
    now = datetime.datetime.now(datetime.UTC).astimezone()
    return [
        f"date:    {now.isoformat(timespec='seconds')}",
        f"machine: nproc={usable} (os.cpu_count={os.cpu_count()}), CPU {cpu_model()}, "
        f"{platform.system()} {platform.release()}",
        f"python:  {platform.python_implementation()} {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}, {loop}",
    ]


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(pct / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


# ---------------------------------------------------------------------------------------------
# process management


def _module_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "loadtests.benchsupport", *args]


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after a grace period; only ever the process we started."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


@dataclass
class BackendProcess:
    name: str
    proc: subprocess.Popen[str]
    port: int


@contextlib.contextmanager
def running_backend(name: str) -> Iterator[BackendProcess]:
    proc = subprocess.Popen(
        _module_cmd("backend", "--name", name), stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "listening":
            raise RuntimeError(f"backend {name} did not start (said {line!r})")
        yield BackendProcess(name=name, proc=proc, port=int(line[1]))
    finally:
        stop_process(proc)


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int
    log_path: Path

    @property
    def admin_url(self) -> str:
        return f"http://{HOST}:{self.admin_port}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _sluice_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("sluice")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("sluice")
    return [found] if found else [sys.executable, "-m", "gateway"]


@contextlib.contextmanager
def running_gateway(
    config: Path, *, port: int, log_path: Path, extra: Sequence[str] = ()
) -> Iterator[GatewayProcess]:
    """``sluice serve`` on ``config``; yields once /readyz answers 200."""
    admin_port = free_port()
    cmd = [
        *_sluice_cmd(), "serve", "--config", str(config), "--address", HOST,
        "--admin", f"{HOST}:{admin_port}", "--log-level", "warning", *extra,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    gw = GatewayProcess(proc=proc, port=port, admin_port=admin_port, log_path=log_path)
    try:
        _wait_ready(gw)
        yield gw
    finally:
        stop_process(proc)


def _wait_ready(gw: GatewayProcess) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise RuntimeError(f"sluice exited with {gw.proc.returncode}:\n{gw.log_tail()}")
        with contextlib.suppress(OSError):
            if http_request("GET", f"{gw.admin_url}/readyz", timeout_s=1.0).status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"sluice not ready after {READY_TIMEOUT_S} s:\n{gw.log_tail()}")


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes
    headers: dict[str, str]


def http_request(method: str, url: str, *, timeout_s: float = 10.0) -> HttpReply:
    """One plain HTTP request (urllib, new connection); non-2xx is returned, not raised."""
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            headers = {k.lower(): v for k, v in resp.headers.items()}
            return HttpReply(int(resp.status), resp.read(), headers)
    except urllib.error.HTTPError as exc:
        headers = {k.lower(): v for k, v in exc.headers.items()}
        return HttpReply(int(exc.code), exc.read(), headers)


# ---------------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class BackendRef:
    service: str
    port: int
    weight: int = 1


def gateway_config(
    listener_port: int, refs: Sequence[BackendRef], *, response_headers: dict[str, str] | None
) -> str:
    """GatewayClass + Gateway + one HTTPRoute + a Service and EndpointSlice per backend."""
    head = gateway_head(listener_port)
    backend_refs = ", ".join(f"{{name: {r.service}, port: 80, weight: {r.weight}}}" for r in refs)
    filters = ""
    if response_headers:
        sets = ", ".join(f"{{name: {k}, value: {v}}}" for k, v in response_headers.items())
        filters = (
            "    filters:\n    - type: ResponseHeaderModifier\n"
            f"      responseHeaderModifier: {{set: [{sets}]}}\n"
        )
    route = (
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        "metadata: {name: route, namespace: default}\n"
        "spec:\n  parentRefs: [{name: gw}]\n  rules:\n"
        f"  - backendRefs: [{backend_refs}]\n{filters}"
    )
    return head + route + "".join(service_yaml(r.service, r.port) for r in refs)


def gateway_head(port: int, listeners: Sequence[str] = ()) -> str:
    """The GatewayClass and a Gateway named ``gw`` with ``listeners`` (YAML flow mappings),
    or else one HTTP listener on ``port``."""
    items = listeners or (f"{{name: http, port: {port}, protocol: HTTP}}",)
    head = textwrap.dedent("""\
        apiVersion: gateway.networking.k8s.io/v1
        kind: GatewayClass
        metadata: {name: sluice}
        spec: {controllerName: sluice.dev/gateway-controller}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw, namespace: default}
        spec:
          gatewayClassName: sluice
          listeners:
        """)
    return head + "".join(f"  - {item}\n" for item in items)


def service_yaml(name: str, port: int) -> str:
    """A Service ``name`` (port 80) and its EndpointSlice: one endpoint, 127.0.0.1:``port``."""
    return textwrap.dedent(f"""\
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: {name}, namespace: default}}
        spec:
          ports:
          - {{name: http, port: 80}}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: {name}-0
          namespace: default
          labels: {{kubernetes.io/service-name: {name}}}
        addressType: IPv4
        endpoints:
        - addresses: [{HOST}]
        ports:
        - {{name: http, port: {port}}}
        """)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# the load generator, seen from the parent


@dataclass
class LoadResult:
    requests: int
    elapsed_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]
    errors: dict[str, int]
    headers: dict[str, dict[str, int]]
    client_cpu_s: float
    connections_opened: int
    # filled in by the parent: CPU seconds each watched process spent in the measured window
    watched_cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        bad = sum(n for s, n in self.statuses.items() if not s.startswith("2"))
        return bad + sum(self.errors.values())


@dataclass
class LoadSpec:
    url: str
    concurrency: int
    duration_s: float
    warmup_s: float
    max_requests: int = DEFAULT_MAX_REQUESTS
    count_headers: tuple[str, ...] = ()
    trace_connections: bool = False
    stop_on_stdin: bool = False

    def argv(self) -> list[str]:
        out = [
            "loadgen", "--url", self.url, "--concurrency", str(self.concurrency),
            "--duration", str(self.duration_s), "--warmup", str(self.warmup_s),
            "--requests", str(self.max_requests),
        ]  # fmt: skip
        for h in self.count_headers:
            out += ["--count-header", h]
        if self.trace_connections:
            out.append("--trace-connections")
        if self.stop_on_stdin:
            out.append("--stop-on-stdin")
        return out


class LoadGenerator:
    """A loadgen child process; ``watch`` names processes whose CPU time to sample."""

    def __init__(self, spec: LoadSpec, watch: dict[str, int] | None = None) -> None:
        self._spec = spec
        self._watch = dict(watch or {})
        self._cpu0: dict[str, float] = {}
        self._cpu1: dict[str, float] = {}
        self.proc = subprocess.Popen(
            _module_cmd(*spec.argv()),
            stdin=subprocess.PIPE if spec.stop_on_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _expect(self, word: str) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != word:
            raise RuntimeError(f"loadgen said {line!r}, expected {word!r}")

    def wait_measuring(self) -> None:
        self._expect("measuring")
        self._cpu0 = {k: proc_cpu_seconds(pid) for k, pid in self._watch.items()}

    def stop(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()

    def result(self) -> LoadResult:
        self._expect("done")
        self._cpu1 = {k: proc_cpu_seconds(pid) for k, pid in self._watch.items()}
        assert self.proc.stdout is not None
        raw = json.loads(self.proc.stdout.readline())
        limit = self._spec.warmup_s + self._spec.duration_s + STOP_TIMEOUT_S
        self.proc.wait(timeout=limit)
        res = LoadResult(**raw)
        res.watched_cpu_s = {k: self._cpu1[k] - self._cpu0[k] for k in self._watch}
        return res

    def close(self) -> None:
        stop_process(self.proc)


def run_load(spec: LoadSpec, watch: dict[str, int] | None = None) -> LoadResult:
    gen = LoadGenerator(spec, watch)
    try:
        gen.wait_measuring()
        return gen.result()
    finally:
        gen.close()


# ---------------------------------------------------------------------------------------------
# the load generator, inside its process


@dataclass
class _Tally:
    remaining: int
    count_headers: tuple[str, ...]
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    headers: dict[str, Counter[str]] = field(default_factory=dict)


async def _worker(
    session: aiohttp.ClientSession, url: str, deadline: float, stop: asyncio.Event, t: _Tally
) -> None:
    while t.remaining > 0 and not stop.is_set() and time.perf_counter() < deadline:
        t.remaining -= 1
        t0 = time.perf_counter()
        try:
            async with session.get(url) as resp:
                await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            t.errors[type(exc).__name__] += 1
            continue
        t.latencies_s.append(time.perf_counter() - t0)
        t.statuses[str(resp.status)] += 1
        for name in t.count_headers:
            t.headers.setdefault(name, Counter())[resp.headers.get(name, "(absent)")] += 1


async def _window(
    session: aiohttp.ClientSession, args: argparse.Namespace, seconds: float, stop: asyncio.Event
) -> _Tally:
    tally = _Tally(remaining=args.requests, count_headers=tuple(args.count_header))
    deadline = time.perf_counter() + seconds
    await asyncio.gather(
        *(_worker(session, args.url, deadline, stop, tally) for _ in range(args.concurrency))
    )
    return tally


async def _stop_on_stdin(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.readline()
    stop.set()


def _new_session(args: argparse.Namespace, opened: list[int]) -> aiohttp.ClientSession:
    traces = []
    if args.trace_connections:
        trace = aiohttp.TraceConfig()

        async def on_create(*_: object) -> None:
            opened[0] += 1

        trace.on_connection_create_end.append(on_create)
        traces.append(trace)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=args.concurrency, keepalive_timeout=300),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        trace_configs=traces,
        auto_decompress=False,
    )
    # aiohttp silently retries an idempotent request once when a reused keep-alive connection
    # turns out closed. That would hide exactly the failures these scripts look for, so turn
    # it off, as aiohttp's own test_utils.TestClient does.
    session._retry_connection = False
    return session


async def _loadgen(args: argparse.Namespace) -> dict[str, Any]:
    stop = asyncio.Event()
    stdin_task = asyncio.create_task(_stop_on_stdin(stop)) if args.stop_on_stdin else None
    opened = [0]
    async with _new_session(args, opened) as session:
        if args.warmup > 0:
            await _window(session, args, args.warmup, asyncio.Event())
        opened[0] = 0
        print("measuring", flush=True)
        cpu0, t0 = time.process_time(), time.perf_counter()
        tally = await _window(session, args, args.duration, stop)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        print("done", flush=True)
    if stdin_task is not None:
        stdin_task.cancel()
    return _summary(tally, elapsed, cpu, opened[0])


def _summary(t: _Tally, elapsed: float, cpu: float, opened: int) -> dict[str, Any]:
    lat = sorted(t.latencies_s)
    n = len(lat) + sum(t.errors.values())
    return {
        "requests": n,
        "elapsed_s": elapsed,
        "rps": len(lat) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(lat, 50) * 1e3,
        "p90_ms": percentile(lat, 90) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "max_ms": (lat[-1] if lat else 0.0) * 1e3,
        "statuses": dict(t.statuses),
        "errors": dict(t.errors),
        "headers": {k: dict(v) for k, v in t.headers.items()},
        "client_cpu_s": cpu,
        "connections_opened": opened,
    }


# ---------------------------------------------------------------------------------------------
# the backend, inside its process


async def _backend(name: str, ready: IO[str]) -> None:
    headers = {"Content-Type": "text/plain", "X-Backend": name}

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BODY, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening {runner.addresses[0][1]}", file=ready, flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtests.benchsupport")
    sub = parser.add_subparsers(dest="role", required=True)
    be = sub.add_parser("backend", help="trivial HTTP backend on 127.0.0.1, ephemeral port")
    be.add_argument("--name", default="backend")
    lg = sub.add_parser("loadgen", help="closed-loop keep-alive HTTP client")
    lg.add_argument("--url", required=True)
    lg.add_argument("--concurrency", type=int, default=32)
    lg.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    lg.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    lg.add_argument("--requests", type=int, default=DEFAULT_MAX_REQUESTS, help="cap per window")
    lg.add_argument("--count-header", action="append", default=[], help="tally its values")
    lg.add_argument("--trace-connections", action="store_true", help="count new connections")
    lg.add_argument("--stop-on-stdin", action="store_true", help="end at a line on stdin")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.role == "loadgen" and not args.url.startswith(f"http://{HOST}:"):
        print(f"refusing to load anything but {HOST}", file=sys.stderr)
        return 2
    if args.role == "backend":
        run_async(_backend(args.name, sys.stdout))
        return 0
    print(json.dumps(run_async(_loadgen(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
