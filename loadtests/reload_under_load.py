"""Reload Sluice 50 times under steady traffic; not one request may fail.

Two backends (own processes) and ``sluice serve --no-watch`` (own process). A load generator
(own process, 16 keep-alive connections, aiohttp client retries off) sends GETs through the
gateway while this script rewrites the config file and calls ``POST /reload`` on the admin
listener, alternating two valid configs that differ in backend weights (90/10 vs 10/90) and in
a ResponseHeaderModifier (``x-config-variant: one|two``), with a few invalid configs mixed in
(bad YAML, an unknown field, a weight out of range, a listener port already in use) that must
be refused while traffic continues. Afterwards ``GET /config`` must show the generation
advanced by exactly the number of accepted reloads.

Exit 1 if any request failed (non-2xx or connection error) or any check did not hold.

    .venv/bin/python loadtests/reload_under_load.py [--reloads 50] [--invalid 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.benchsupport import (
    BackendProcess,
    BackendRef,
    GatewayProcess,
    LoadGenerator,
    LoadResult,
    LoadSpec,
    free_port,
    gateway_config,
    http_request,
    machine_lines,
    running_backend,
    running_gateway,
    write_atomically,
)

DEFAULT_RELOADS = 50
DEFAULT_INVALID = 8
DEFAULT_CONCURRENCY = 16
DEFAULT_INTERVAL_S = 0.1
SETTLE_S = 1.0  # traffic before the first and after the last reload
MAX_TRAFFIC_S = 120.0  # the load generator's own deadline, should this script stall
MAX_REQUESTS = 2_000_000
VARIANT_HEADER = "x-config-variant"
BACKEND_HEADER = "x-backend"
VARIANTS = {"one": (90, 10), "two": (10, 90)}
INVALID_KINDS = ("bad-yaml", "unknown-field", "weight-out-of-range", "port-in-use")


def _config(a_port: int, b_port: int, listener_port: int, variant: str) -> str:
    wa, wb = VARIANTS[variant]
    refs = [BackendRef("svc-a", a_port, wa), BackendRef("svc-b", b_port, wb)]
    return gateway_config(listener_port, refs, response_headers={VARIANT_HEADER: variant})


@dataclass
class Stack:
    a: BackendProcess
    b: BackendProcess
    gw: GatewayProcess
    config: Path

    def valid(self, variant: str, *, listener_port: int | None = None) -> str:
        port = self.gw.port if listener_port is None else listener_port
        return _config(self.a.port, self.b.port, port, variant)

    def invalid(self, kind: str) -> str:
        text = self.valid("one")
        if kind == "bad-yaml":
            return text + "---\nkind: HTTPRoute\nspec: {rules: [\n"
        if kind == "unknown-field":
            return text.replace("  - backendRefs:", "  - bogusField: 1\n    backendRefs:", 1)
        if kind == "weight-out-of-range":
            return text.replace("weight: 90}", "weight: 1000001}", 1)
        if kind == "port-in-use":
            # the gateway must bind the new port before it lets go of the old one; this one is
            # taken by backend a, so the reload has to fail whole
            return self.valid("one", listener_port=self.a.port)
        raise ValueError(kind)


@dataclass
class ReloadRecord:
    kind: str  # a variant name, or one of INVALID_KINDS
    valid: bool
    http_status: int
    ok: bool
    generation: int
    issues: list[str]
    seconds: float
    # a GET through the gateway on a new connection right after the reload answered
    probe_status: int
    probe_variant: str


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)

    def check(self, holds: bool, problem: str) -> None:
        if not holds:
            self.problems.append(problem)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reloads", type=int, default=DEFAULT_RELOADS, help="valid reloads")
    p.add_argument("--invalid", type=int, default=DEFAULT_INVALID, help="invalid configs too")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="connections")
    p.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, help="s between")
    return p


@contextlib.contextmanager
def _stack(tmp: Path) -> Iterator[Stack]:
    with running_backend("a") as a, running_backend("b") as b:
        config, port = tmp / "sluice.yaml", free_port()
        config.write_text(_config(a.port, b.port, port, "one"))
        with running_gateway(
            config, port=port, log_path=tmp / "sluice.log", extra=["--no-watch"]
        ) as gw:
            yield Stack(a=a, b=b, gw=gw, config=config)


def _schedule(reloads: int, invalid: int) -> list[str]:
    """Valid reloads alternate two, one, two, ...; invalid ones are spread evenly between."""
    valid = [("two", "one")[i % 2] for i in range(reloads)]
    out: list[str] = []
    step = max(1, reloads // (invalid + 1)) if invalid else reloads + 1
    bad = iter(INVALID_KINDS[i % len(INVALID_KINDS)] for i in range(invalid))
    for i, kind in enumerate(valid, start=1):
        out.append(kind)
        if i % step == 0:
            out.extend(b for b in [next(bad, None)] if b)
    out.extend(bad)
    return out


def _reload(stack: Stack, kind: str) -> ReloadRecord:
    is_valid = kind in VARIANTS
    write_atomically(stack.config, stack.valid(kind) if is_valid else stack.invalid(kind))
    t0 = time.perf_counter()
    reply = http_request("POST", f"{stack.gw.admin_url}/reload", timeout_s=30.0)
    seconds = time.perf_counter() - t0
    try:
        data = json.loads(reply.body)
    except ValueError:
        data = {"ok": False, "generation": -1, "issues": [reply.body[:200].decode("latin-1")]}
    probe_status, probe_variant = _probe(stack)
    return ReloadRecord(
        kind=kind,
        valid=is_valid,
        http_status=reply.status,
        ok=bool(data.get("ok")),
        generation=int(data.get("generation", -1)),
        issues=[str(i) for i in data.get("issues", [])],
        seconds=seconds,
        probe_status=probe_status,
        probe_variant=probe_variant,
    )


def _probe(stack: Stack) -> tuple[int, str]:
    """(status, variant header) of a GET on a new connection; status 0 if it failed."""
    try:
        reply = http_request("GET", f"{stack.gw.url}/probe")
    except OSError as exc:  # urllib's URLError included
        return 0, f"({type(exc).__name__}: {exc})"
    return reply.status, reply.headers.get(VARIANT_HEADER, "(absent)")


def _generation(stack: Stack) -> int:
    reply = http_request("GET", f"{stack.gw.admin_url}/config")
    if reply.status != 200:
        raise RuntimeError(f"GET /config: {reply.status}")
    return int(json.loads(reply.body)["generation"])


def _drive(stack: Stack, args: argparse.Namespace) -> tuple[LoadResult, list[ReloadRecord]]:
    spec = LoadSpec(
        url=f"{stack.gw.url}/reload-under-load",
        concurrency=args.concurrency,
        duration_s=MAX_TRAFFIC_S,
        warmup_s=0.0,
        max_requests=MAX_REQUESTS,
        count_headers=(VARIANT_HEADER, BACKEND_HEADER),
        trace_connections=True,
        stop_on_stdin=True,
    )
    gen = LoadGenerator(spec, watch={"sluice": stack.gw.proc.pid})
    records = []
    try:
        gen.wait_measuring()
        time.sleep(SETTLE_S)
        for kind in _schedule(args.reloads, args.invalid):
            records.append(_reload(stack, kind))
            time.sleep(args.interval)
        time.sleep(SETTLE_S)
        gen.stop()
        return gen.result(), records
    finally:
        gen.close()


def _check_reloads(records: list[ReloadRecord], gen0: int, v: Verdict) -> None:
    expected, in_force = gen0, "one"
    for n, r in enumerate(records, start=1):
        if r.valid:
            expected, in_force = expected + 1, r.kind
            v.check(r.http_status == 200 and r.ok, f"reload {n} ({r.kind}) refused: {r.issues}")
        else:
            v.check(
                r.http_status == 400 and not r.ok and bool(r.issues),
                f"reload {n} ({r.kind}) not refused: HTTP {r.http_status} ok={r.ok}",
            )
        v.check(
            r.generation == expected,
            f"reload {n} ({r.kind}): generation {r.generation}, expected {expected}",
        )
        v.check(
            r.probe_status == 200 and r.probe_variant == in_force,
            f"reload {n} ({r.kind}): probe got {r.probe_status} {VARIANT_HEADER}="
            f"{r.probe_variant}, want 200 {in_force}",
        )


def _check_after(stack: Stack, records: list[ReloadRecord], gen0: int, v: Verdict) -> list[str]:
    accepted = sum(1 for r in records if r.ok)
    gen1 = _generation(stack)
    v.check(gen1 == gen0 + accepted, f"/config generation {gen1} != {gen0} + {accepted}")
    last = next((r.kind for r in reversed(records) if r.valid and r.ok), "one")
    ready = http_request("GET", f"{stack.gw.admin_url}/readyz")
    v.check(ready.status == 200, f"/readyz answered {ready.status} after the reloads")
    _, variant = _probe(stack)
    v.check(variant == last, f"config in force sets {VARIANT_HEADER}={variant}, want {last}")
    v.check(stack.gw.proc.poll() is None, "sluice exited")
    return [
        f"generation: {gen0} before, {gen1} after (/config); {accepted} accepted reloads "
        f"-> expected {gen0 + accepted}",
        f"config in force afterwards: {VARIANT_HEADER}={variant} (last accepted: {last})",
    ]


def _report_traffic(res: LoadResult, args: argparse.Namespace) -> list[str]:
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(res.statuses.items())) or "none"
    errors = ", ".join(f"{e}: {n}" for e, n in sorted(res.errors.items())) or "none"
    hdr = {k: dict(sorted(v.items())) for k, v in res.headers.items()}
    return [
        f"traffic: {args.concurrency} keep-alive connections (aiohttp client in its own "
        f"process, uvloop, client retries off), {res.elapsed_s:.1f} s, "
        f"{res.connections_opened} connections opened",
        f"  total requests     {res.requests}  ({res.rps:.0f} req/s)",
        f"  by status          {statuses}",
        f"  connection errors  {errors}",
        f"  failures           {res.failures}  (non-2xx or connection error)",
        f"  latency            p50 {res.p50_ms:.2f} ms  p99 {res.p99_ms:.2f} ms  "
        f"max {res.max_ms:.2f} ms",
        f"  by {VARIANT_HEADER}  {hdr.get(VARIANT_HEADER, {})}",
        f"  by {BACKEND_HEADER}         {hdr.get(BACKEND_HEADER, {})}",
    ]


def _report_reloads(records: list[ReloadRecord]) -> list[str]:
    valid = [r for r in records if r.valid]
    invalid = [r for r in records if not r.valid]
    by_kind = Counter(r.kind for r in invalid if not r.ok)
    ms = sorted(r.seconds * 1e3 for r in records)
    probes_ok = sum(1 for r in records if r.probe_status == 200)
    lines = [
        f"reloads: {len(records)} POST /reload, "
        f"{statistics.median(ms):.1f} ms median, {ms[-1]:.1f} ms max"
        if ms
        else "reloads: 0",
        f"  valid    {len(valid)} attempted, {sum(r.ok for r in valid)} accepted "
        f"(HTTP 200, ok=true)",
        f"  invalid  {len(invalid)} attempted, {sum(not r.ok for r in invalid)} refused "
        f"(HTTP 400, ok=false): {dict(by_kind)}",
    ]
    for kind in INVALID_KINDS:
        sample = next((r for r in invalid if r.kind == kind and r.issues), None)
        if sample:
            issue = " ".join(sample.issues[0].split())
            lines.append(f"    e.g. {kind}: {issue[:150]}")
    lines.append(
        f"  probes   {probes_ok}/{len(records)} GETs on a new connection right after each "
        f"reload answered 200 (checked: {VARIANT_HEADER} is the config in force)"
    )
    return lines


def _log_problems(gw: GatewayProcess, v: Verdict) -> str:
    text = gw.log_path.read_text(errors="replace")
    tracebacks = text.count("Traceback")
    v.check(tracebacks == 0, f"{tracebacks} traceback(s) in the sluice log")
    return f"sluice log: {len(text.splitlines())} lines, {tracebacks} tracebacks"


def main() -> int:
    args = _parser().parse_args()
    print("Sluice reload under load")
    print("\n".join(machine_lines()))
    verdict = Verdict()
    with tempfile.TemporaryDirectory(prefix="sluice-reload-") as tmp, _stack(Path(tmp)) as st:
        gen0 = _generation(st)
        res, records = _drive(st, args)
        _check_reloads(records, gen0, verdict)
        after = _check_after(st, records, gen0, verdict)
        log_line = _log_problems(st.gw, verdict)
        if verdict.problems:
            print(f"--- sluice log tail ---\n{st.gw.log_tail()}\n---")
    verdict.check(res.failures == 0, f"{res.failures} request(s) failed")
    for variant in VARIANTS:
        verdict.check(
            res.headers.get(VARIANT_HEADER, {}).get(variant, 0) > 0,
            f"no response carried {VARIANT_HEADER}={variant}",
        )
    print("\n".join([*_report_traffic(res, args), *_report_reloads(records), *after, log_line]))
    if verdict.problems:
        print("FAIL:\n  " + "\n  ".join(verdict.problems))
        return 1
    print("PASS: no failed request; every valid reload accepted, every invalid one refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
