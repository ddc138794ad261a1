"""Run every policy of a closed-loop scenario: fleets, gateways, generators, reconcilers.

Per policy: an elastic fleet (in this process's event loop) at `min_replicas`, a `sluice serve`
in front of it, a load generator process replaying the shared arrival trace, and a reconciler
that scales the fleet every tick. With `concurrent: true` all policies run side by side from
the same T0 (one machine, so they share its CPUs); otherwise one after the other. Only
127.0.0.1 is contacted and every wait is bounded.
"""

import asyncio
import contextlib
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ..childproc import Child
from ..loadgen import GeneratorSpec, read_records
from ..targets import HOST, free_port
from .analysis import PolicyResult, summarize
from .elastic import ElasticFleet, Phase, RunClock
from .loadgen import ProfileSpec
from .reconciler import Reconciler
from .scenario import ClosedLoopScenario, Policy
from .target import GatewayLink, running_gateway, static_docs

START_DELAY_S = 0.2  # between "go" and T0, so every generator has read it
GENERATOR_READY_TIMEOUT_S = 20.0
GENERATOR_MODULE = "loadtests.closedloop.loadgen"
FINISH_GRACE_S = 30.0  # past the drain, before generators are stopped
PROGRESS_EVERY_S = 10.0


class GeneratorError(RuntimeError):
    """A load generator failed to start or did not finish in time."""


@dataclasses.dataclass(slots=True, kw_only=True)
class _PolicyRun:
    policy: Policy
    link: GatewayLink
    fleet: ElasticFleet
    reconciler: Reconciler
    generator: Child
    records_path: Path


async def run_scenario(
    scenario: ClosedLoopScenario, out: Path, progress: TextIO = sys.stderr
) -> list[PolicyResult]:
    groups: Sequence[tuple[Policy, ...]] = (
        [scenario.policies] if scenario.concurrent else [(p,) for p in scenario.policies]
    )
    results: list[PolicyResult] = []
    for group in groups:
        results.extend(await _run_group(scenario, group, out, progress))
    return results


async def _run_group(
    scenario: ClosedLoopScenario, policies: Sequence[Policy], out: Path, progress: TextIO
) -> list[PolicyResult]:
    clock = RunClock()
    end_s = scenario.load.end_s
    runs: list[_PolicyRun] = []
    async with contextlib.AsyncExitStack() as stack:
        for policy in policies:
            runs.append(await _start_policy(stack, scenario, policy, clock, out))
        for run in runs:
            await run.generator.wait_for("ready", GENERATOR_READY_TIMEOUT_S)
        clock.t0 = time.monotonic() + START_DELAY_S
        for run in runs:
            run.generator.go(clock.t0)
        tasks = [asyncio.create_task(r.reconciler.run(end_s + scenario.drain_s)) for r in runs]
        tasks.append(asyncio.create_task(_report_progress(scenario, runs, clock, progress)))
        deadline = clock.t0 + end_s + scenario.drain_s + FINISH_GRACE_S
        try:
            await asyncio.gather(*(r.generator.finish(deadline - time.monotonic()) for r in runs))
        finally:
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome  # a reconciler failed: the run means nothing
    return [_summarize(scenario, run) for run in runs]


def _summarize(scenario: ClosedLoopScenario, run: _PolicyRun) -> PolicyResult:
    failures = run.reconciler.read_failures
    return summarize(
        policy=run.policy.name,
        kind=str(run.policy.kind),
        records=read_records(run.records_path),
        members=run.fleet.members,
        changes=run.fleet.changes,
        timeline=run.reconciler.timeline,
        slo=scenario.slo,
        end_s=scenario.load.end_s,
        reloads=run.link.reloads,
        problems=[
            *run.fleet.problems,
            *([f"{failures} recommendations could not be read"] if failures else []),
        ],
    )


async def _start_policy(
    stack: contextlib.AsyncExitStack,
    scenario: ClosedLoopScenario,
    policy: Policy,
    clock: RunClock,
    out: Path,
) -> _PolicyRun:
    logs, raw = out / "logs", out / "raw"
    port = free_port()
    link = GatewayLink(
        config_path=logs / f"{policy.name}.config.yaml",
        static=static_docs(
            port=port, pool=scenario.pool, traffic=scenario.traffic_for(policy),
            request_timeout_s=scenario.request_timeout_s,
        ),
        pool=scenario.pool,
        admin_port=free_port(),
    )  # fmt: skip
    fleet = ElasticFleet(
        template=scenario.replica, time_scale=scenario.time_scale, seed=scenario.seed,
        scaling=scenario.scaling, link=link, clock=clock,
    )  # fmt: skip
    stack.push_async_callback(fleet.close)  # after the gateway and the generator have stopped
    await fleet.start(scenario.scaling.min_replicas)
    await stack.enter_async_context(running_gateway(link, port, logs / f"{policy.name}.log"))
    records_path = raw / f"{policy.name}.jsonl"
    spec_path = raw / f"{policy.name}.spec.json"
    spec_path.write_text(_generator_spec(scenario, port, records_path).to_json(), encoding="utf-8")
    generator = await stack.enter_async_context(
        Child.spawn(GENERATOR_MODULE, spec_path, logs / f"{policy.name}.gen.log", GeneratorError)
    )
    return _PolicyRun(
        policy=policy, link=link, fleet=fleet, reconciler=Reconciler(scenario, policy, fleet),
        generator=generator, records_path=records_path,
    )  # fmt: skip


def _generator_spec(scenario: ClosedLoopScenario, port: int, records: Path) -> ProfileSpec:
    load = scenario.load
    expected = load.expected_requests()
    return ProfileSpec(
        generator=GeneratorSpec(
            url=f"http://{HOST}:{port}",
            qps=expected / load.end_s,
            seed=scenario.seed,
            index=0,
            warmup_s=0.0,
            duration_s=load.end_s,
            drain_s=scenario.drain_s,
            request_timeout_s=scenario.request_timeout_s,
            max_in_flight=scenario.max_in_flight,
            max_requests=int(2 * expected + 100),
            default_model=scenario.replica.model,
            workload=dict(scenario.raw_workload),
            records_path=str(records),
        ),
        profile=load.points,
    )


async def _report_progress(
    scenario: ClosedLoopScenario, runs: Sequence[_PolicyRun], clock: RunClock, out: TextIO
) -> None:
    """One line every PROGRESS_EVERY_S: offered load and each policy's replicas."""
    end_s = scenario.load.end_s + scenario.drain_s
    for k in range(1, int(end_s / PROGRESS_EVERY_S) + 1):
        await asyncio.sleep(max(0.0, k * PROGRESS_EVERY_S - clock.now()))
        t = clock.now()
        parts = [f"t={t:5.0f}s load {scenario.load.rate(t):5.1f} req/s"]
        for run in runs:
            f = run.fleet
            parts.append(
                f"{run.policy.name}: {f.count(Phase.SERVING)} serving"
                f" +{f.count(Phase.STARTING)} starting -{f.count(Phase.DRAINING)} draining"
            )
        print(" | ".join(parts), file=out, flush=True)
