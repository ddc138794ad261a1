"""One trial: one policy at one load point, on a fresh fleet and a fresh target.

A fresh fleet per trial means no prefix cache, queue or KV state leaks from one policy (or load
point) to the next. The fleet runs in this process's event loop (it is light: about 20% of a
core at full load); the target and the load generators are separate processes. Fleet counters
are read at the measured window's edges: prefix-cache tokens from each replica's `/metrics`
(as a scraper would), requests received from the replicas' stats.
"""

import asyncio
import contextlib
import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from .benchsupport import proc_cpu_seconds
from .childproc import Child
from .fleet import Fleet
from .fleet.testing import parse_metrics
from .loadgen import GeneratorSpec, Record, read_records
from .progress import GeneratorState, Progress
from .scenario import LoadPoint, Policy, PolicyKind, Scenario
from .stats import Snapshot, TrialResult, Window, failed_trial, summarize
from .targets import TargetError, free_port, running_target, target_url

START_DELAY_S = 0.1  # between "go" and T0, so every generator has read it
GENERATOR_READY_TIMEOUT_S = 20.0
FINISH_GRACE_S = 30.0  # past the drain, before generators are killed
RENDER_EVERY_S = 0.5
GENERATOR_MODULE = "loadtests.loadgen"
PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_HITS = "vllm:prefix_cache_hits_total"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TrialPlan:
    scenario: Scenario
    policy: Policy
    point: LoadPoint
    index: int  # of the trial in the run
    out_dir: Path

    @property
    def tag(self) -> str:
        return f"{self.policy.name}-{self.point.qps:g}rps"


async def run_trial(plan: TrialPlan, progress: Progress) -> tuple[TrialResult, list[Record]]:
    """Run one trial; a target or generator that fails becomes a `failure` result."""
    s, policy, point = plan.scenario, plan.policy, plan.point
    label = f"{policy.name} @ {point.label}"
    label += "" if point.label.endswith("rps") else f" ({point.qps:.1f} rps)"
    progress.start_trial(plan.index, label, s.warmup_s, s.generator_processes)
    try:
        result, records = await _run(plan, progress)
    except (TargetError, GeneratorError, OSError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        progress.end_trial(f"FAILED: {reason.splitlines()[0]}")
        return failed_trial(policy.name, point.label, point.qps, reason), []
    progress.end_trial(_summary_line(result))
    return result, records


def _summary_line(r: TrialResult) -> str:
    if r.completed == 0:
        return f"no request succeeded, errors {r.errors} (see the report's Errors section)"
    return (
        f"{r.achieved_rps:.1f} req/s, TTFT p90 {r.ttft_s.p90 * 1000:.0f} ms, "
        f"E2E p90 {r.e2e_s.p90:.2f} s, errors {r.errors}, lag max {r.lag_max_ms:.0f} ms"
    )


async def _run(plan: TrialPlan, progress: Progress) -> tuple[TrialResult, list[Record]]:
    s, policy = plan.scenario, plan.policy
    logs, raw = plan.out_dir / "logs", plan.out_dir / "raw"
    port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        fleet = None
        if policy.kind is not PolicyKind.URL:
            fleet = await stack.enter_async_context(Fleet(s.fleet))
        specs = _generator_specs(plan, target_url(policy, port), raw)
        gens = await stack.enter_async_context(_Generators.spawn(specs, logs, plan.tag, progress))
        pid = await stack.enter_async_context(
            running_target(policy, s, fleet, port, logs, plan.tag)
        )
        await gens.wait_ready()
        t0 = time.monotonic() + START_DELAY_S
        gens.go(t0)
        progress.go(t0)
        window = Window(start_s=s.warmup_s, end_s=s.warmup_s + s.duration_s)
        snapshots = asyncio.create_task(_snapshots(fleet, pid, t0, window))
        try:
            cpu_s = await gens.wait_done(t0 + window.end_s + s.drain_s + FINISH_GRACE_S)
            before, after = await snapshots
        finally:
            snapshots.cancel()
    records = [r for spec in specs for r in read_records(Path(spec.records_path))]
    result = summarize(
        policy=policy.name, load=plan.point.label, target_qps=plan.point.qps, records=records,
        window=window, before=before, after=after, generator_cpu_s=cpu_s,
        wall_s=time.monotonic() - t0,
    )  # fmt: skip
    return result, records


def _generator_specs(plan: TrialPlan, url: str, raw: Path) -> list[GeneratorSpec]:
    s = plan.scenario
    n = s.generator_processes
    qps = plan.point.qps / n  # superposed Poisson streams are one Poisson stream
    expected = qps * (s.warmup_s + s.duration_s + s.drain_s)
    return [
        GeneratorSpec(
            url=url,
            qps=qps,
            seed=s.seed,
            index=i,
            warmup_s=s.warmup_s,
            duration_s=s.duration_s,
            drain_s=s.drain_s,
            request_timeout_s=s.request_timeout_s,
            max_in_flight=max(1, s.max_in_flight // n),
            max_requests=int(3 * expected + 6 * math.sqrt(expected) + 100),
            default_model=s.fleet.replicas[0].model,
            workload=dict(s.raw_workload),
            records_path=str(raw / f"{plan.tag}.gen{i}.jsonl"),
        )
        for i in range(n)
    ]


async def _snapshots(
    fleet: Fleet | None, pid: int | None, t0: float, window: Window
) -> tuple[Snapshot | None, Snapshot | None]:
    if fleet is None:
        return None, None
    timeout = aiohttp.ClientTimeout(total=5.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.sleep(max(0.0, t0 + window.start_s - time.monotonic()))
        before = await _snapshot(fleet, pid, session)
        await asyncio.sleep(max(0.0, t0 + window.end_s - time.monotonic()))
        after = await _snapshot(fleet, pid, session)
    return before, after


async def _snapshot(fleet: Fleet, pid: int | None, session: aiohttp.ClientSession) -> Snapshot:
    at = time.monotonic()
    received = tuple(r.stats.received for r in fleet.replicas)
    held = tuple(r.engine.counters.held_request_s for r in fleet.replicas)
    cpu = proc_cpu_seconds(os.getpid()), proc_cpu_seconds(pid) if pid is not None else None
    queries: float | None = 0.0
    hits: float | None = 0.0
    for replica in fleet.replicas:
        async with session.get(f"{replica.url}/metrics") as resp:
            samples = parse_metrics(await resp.text())
        if PREFIX_QUERIES not in samples or PREFIX_HITS not in samples:
            queries = hits = None  # not a vLLM replica: no prefix-cache token counters
            break
        queries = (queries or 0.0) + sum(v for _, v in samples[PREFIX_QUERIES])
        hits = (hits or 0.0) + sum(v for _, v in samples[PREFIX_HITS])
    return Snapshot(
        at=at, prefix_queries=queries, prefix_hits=hits, received=received, held_request_s=held,
        harness_cpu_s=cpu[0], target_cpu_s=cpu[1],
    )  # fmt: skip


class GeneratorError(RuntimeError):
    """A load generator process failed to start, or did not finish in time."""


class _Generators:
    """The generator processes of one trial (see `loadgen`), their progress rendered."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.children: list[Child] = []
        self.changed = asyncio.Event()  # any child printed something, or exited

    @classmethod
    @contextlib.asynccontextmanager
    async def spawn(
        cls, specs: Sequence[GeneratorSpec], logs: Path, tag: str, progress: Progress
    ) -> AsyncIterator["_Generators"]:
        gens = cls(progress)
        async with contextlib.AsyncExitStack() as stack:
            for i, spec in enumerate(specs):
                spec_path = Path(spec.records_path).with_suffix(".spec.json")
                spec_path.write_text(json.dumps(dataclasses.asdict(spec)), encoding="utf-8")
                log = logs / f"{tag}.gen{spec.index}.log"
                on_event = functools.partial(gens._on_event, i)
                child = Child.spawn(GENERATOR_MODULE, spec_path, log, GeneratorError, on_event)
                gens.children.append(await stack.enter_async_context(child))
            yield gens

    def _on_event(self, i: int, kind: str, event: dict[str, Any]) -> None:
        if kind == "progress":
            self.progress.generators[i] = GeneratorState(**event)
        self.changed.set()

    async def _wait_for(self, event: str) -> None:
        """Until every generator has reported `event`; GeneratorError if one exits first."""
        while not all([child.has(event) for child in self.children]):
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RENDER_EVERY_S):
                    await self.changed.wait()
            if event == "done":
                self.progress.render()

    async def wait_ready(self) -> None:
        try:
            async with asyncio.timeout(GENERATOR_READY_TIMEOUT_S):
                await self._wait_for("ready")
        except TimeoutError:
            raise GeneratorError("a load generator did not start (see logs/*.gen*.log)") from None

    def go(self, t0: float) -> None:
        for child in self.children:
            child.go(t0)

    async def wait_done(self, deadline: float) -> float:
        """Render progress until every generator has finished; their total CPU seconds."""
        await self._wait_for_within("done", deadline)
        timeout_s = max(0.0, deadline - time.monotonic())
        done = await asyncio.gather(*(child.finish(timeout_s) for child in self.children))
        return sum(float(d.get("cpu_s", 0.0)) for d in done)

    async def _wait_for_within(self, event: str, deadline: float) -> None:
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                await self._wait_for(event)
        except TimeoutError:
            raise GeneratorError("a load generator did not finish in time") from None


def _loop_time(monotonic_deadline: float) -> float:
    """`time.monotonic()` deadline → the running loop's clock (uvloop's may differ)."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())
