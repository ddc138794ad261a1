"""One run of the rollout scenario: fresh fleets with faults injected, a fresh `sluice serve`,
steady sticky load, and the Rollout's status polled until it finishes (plus a tail).

Process layout, as in `loadtests/trial.py`: both fleets run in this process's event loop (light,
and their faults are set through `Replica.set_fault`); the gateway and the load generator are
separate processes. Every wait is bounded: readiness by a timeout, the run by `max_run_s`, the
generator's drain by `drain_s` plus a grace period.

Clocks. The admin API shows Rollout times in Unix seconds; the run converts them to
`time.monotonic()`, its own timeline, when it reads them. The run checks that the Rollout's
`startedAt` falls between the gateway's spawn and its readiness (`clock_ok`), so a mismatch is
reported rather than silently shifting the timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from loadtests.benchsupport import proc_cpu_seconds
from loadtests.childproc import Child
from loadtests.fleet import Fault, FaultMode, Fleet
from loadtests.targets import HOST, TargetError, free_port, running_process, sluice_serve

from .config import BASELINE, CANDIDATE, ROLLOUT_KEY, gateway_docs, write_checked
from .spec import RolloutScenario, RunSpec
from .traffic import Request, TrafficSpec, read_requests

READY_TIMEOUT_S = 30.0
GO_DELAY_S = 0.1
DONE_GRACE_S = 15.0
CLOCK_SLACK_S = 0.05
TERMINAL = ("RolledBack", "Promoted")
TRAFFIC_MODULE = "loadtests.rolloutrun.traffic"


class RunError(RuntimeError):
    """A process of the run failed to start or to finish in time."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Poll:
    """One GET /rollouts, `t` seconds after the load started."""

    t: float
    phase: str
    step: int
    weight: int
    message: str


@dataclasses.dataclass(slots=True, kw_only=True)
class RunRecord:
    """What one run produced; times are seconds after the load started (T0)."""

    spec: RunSpec
    polls: list[Poll]
    status: dict[str, Any]  # the last GET /rollouts entry of the Rollout, as served
    requests: list[Request]
    t0: float  # when the load started, on the gateway's (monotonic) clock
    rollout_start_t: float  # the Rollout's startedAt, on the T0 scale (before 0: no load yet)
    clock_ok: bool
    cpu_s: dict[str, float]  # CPU seconds from T0 to the end: generator, gateway, fleets
    wall_s: float


Say = Callable[[str], object]


async def run_once(
    scenario: RolloutScenario, run: RunSpec, out_dir: Path, say: Say = print
) -> RunRecord:
    """Run `run` with logs under `out_dir/logs` and raw data under `out_dir/raw`."""
    logs, raw = out_dir / "logs", out_dir / "raw"
    port = free_port()
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        fleets = await _fleets(stack, scenario, run)
        config = logs / f"{run.name}.config.yaml"
        write_checked(config, gateway_docs(scenario, port, fleets))
        spec = _traffic_spec(scenario, port, raw / f"{run.name}.jsonl")
        spec_path = Path(spec.records_path).with_suffix(".spec.json")
        spec_path.write_text(json.dumps(dataclasses.asdict(spec), indent=1), encoding="utf-8")
        traffic = await stack.enter_async_context(
            Child.spawn(TRAFFIC_MODULE, spec_path, logs / f"{run.name}.traffic.log", RunError)
        )
        spawned = time.monotonic()
        admin, gw_pid = await stack.enter_async_context(_gateway(config, logs / f"{run.name}.log"))
        ready = time.monotonic()
        await traffic.wait_for("ready", READY_TIMEOUT_S)
        t0 = time.monotonic() + GO_DELAY_S
        cpu0 = proc_cpu_seconds(gw_pid), proc_cpu_seconds(os.getpid())
        traffic.go(t0)
        say(f"  {run.name}: load started, polling {admin}/rollouts")
        polls, status = await _poll(scenario, admin, t0, say, run.name)
        traffic.send("stop")
        done = await traffic.finish(scenario.drain_s + DONE_GRACE_S)
        cpu_s = {
            "generator": float(done.get("cpu_s", 0.0)),
            "gateway": proc_cpu_seconds(gw_pid) - cpu0[0],
            "fleets (harness)": proc_cpu_seconds(os.getpid()) - cpu0[1],
        }
    started_at = float(status.get("startedAt", 0.0))
    return RunRecord(
        spec=run,
        polls=polls,
        status=status,
        requests=read_requests(raw / f"{run.name}.jsonl"),
        t0=t0,
        rollout_start_t=started_at - t0,
        clock_ok=spawned - CLOCK_SLACK_S <= started_at <= ready + CLOCK_SLACK_S,
        cpu_s=cpu_s,
        wall_s=time.monotonic() - started,
    )


async def _fleets(
    stack: contextlib.AsyncExitStack, scenario: RolloutScenario, run: RunSpec
) -> dict[str, Fleet]:
    """A fresh fleet per variant (seeds differ), every replica failing at its variant's rate."""
    out = {}
    for index, (name, rate) in enumerate(
        ((BASELINE, run.baseline_error_rate), (CANDIDATE, run.candidate_error_rate))
    ):
        spec = dataclasses.replace(scenario.fleet, seed=scenario.fleet.seed + index)
        fleet = out[name] = await stack.enter_async_context(Fleet(spec))
        if rate > 0:
            fault = Fault(mode=FaultMode.ERROR_RATE, rate=rate, statuses=scenario.error_statuses)
            for replica in fleet.replicas:
                await replica.set_fault(fault)
    return out


def _traffic_spec(scenario: RolloutScenario, port: int, records: Path) -> TrafficSpec:
    load = scenario.load
    return TrafficSpec(
        url=f"http://{HOST}:{port}",
        qps=load.qps,
        users=load.users,
        user_header=load.user_header,
        seed=scenario.seed,
        max_s=scenario.max_run_s,
        drain_s=scenario.drain_s,
        request_timeout_s=scenario.request_timeout_s,
        max_in_flight=load.max_in_flight,
        max_requests=int(load.qps * scenario.max_run_s * 2 + 1000),
        default_model=scenario.fleet.replicas[0].model,
        workload=dict(scenario.workload),
        records_path=str(records),
    )


async def _poll(
    scenario: RolloutScenario, admin: str, t0: float, say: Say, name: str
) -> tuple[list[Poll], dict[str, Any]]:
    """GET /rollouts every `poll_s` until the Rollout has been finished for `tail_s`, or
    `max_run_s` after T0."""
    polls: list[Poll] = []
    status: dict[str, Any] = {}
    finished_at: float | None = None
    timeout = aiohttp.ClientTimeout(total=5.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while (t := time.monotonic() - t0) < scenario.max_run_s:
            async with session.get(f"{admin}/rollouts") as resp:
                status = _on_monotonic_clock((await resp.json())["rollouts"][ROLLOUT_KEY])
            poll = Poll(t=t, phase=status["phase"], step=status["step"],
                        weight=status["weight"], message=status["message"])  # fmt: skip
            if not polls or (poll.phase, poll.weight) != (polls[-1].phase, polls[-1].weight):
                say(f"  {name}: t={t:6.1f} s  {poll.phase:<11} weight {poll.weight:3d} %  "
                    f"({poll.message})")  # fmt: skip
            polls.append(poll)
            if finished_at is None and poll.phase in TERMINAL:
                finished_at = t
            if finished_at is not None and t - finished_at >= scenario.tail_s:
                break
            await asyncio.sleep(scenario.poll_s)
    return polls, status


def _on_monotonic_clock(status: dict[str, Any]) -> dict[str, Any]:
    """The admin API shows Rollout times in Unix seconds; the run's timeline is on
    `time.monotonic()`. Convert the times it uses (startedAt, updatedAt, history)."""
    offset = time.time() - time.monotonic()
    out = dict(status)
    for key in ("startedAt", "updatedAt"):
        if isinstance(out.get(key), int | float):
            out[key] = out[key] - offset
    out["history"] = [[t - offset, w] for t, w in status.get("history", [])]
    return out


@contextlib.asynccontextmanager
async def _gateway(config: Path, log_path: Path) -> AsyncIterator[tuple[str, int]]:
    """`sluice serve` on `config`; yields its admin URL and pid once /readyz answers 200."""
    admin_port = free_port()
    admin = f"http://{HOST}:{admin_port}"
    cmd = sluice_serve(config, admin_port, log_level="info")
    try:
        async with running_process(cmd, log_path, f"{admin}/readyz", READY_TIMEOUT_S) as proc:
            yield admin, proc.pid
    except TargetError as exc:
        raise RunError(f"sluice: {exc}") from exc
