"""The rollout scenario (`loadtests/scenarios/rollout.yaml`): frozen dataclasses and the one
strict parser of its YAML form.

Decides what a scenario means: the fleet behind each variant, the load, the Rollout's steps and
analysis, and the runs (error rates injected per variant, and the outcome each run must reach).
Rejects a bad scenario with every issue and its path before anything starts. Never touches
sockets, processes or clocks. The Rollout section is handed to the gateway as written, so its
own parser (`routing.rolloutconfig`) judges it; here only the step list is read for the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from loadtests.fields import Fields
from loadtests.fleet import FleetSpec
from loadtests.scenario import ScenarioError, check_name, parse_fleet, parse_workload
from routing.durations import parse_duration

PHASES = ("RolledBack", "Promoted")
_TOP = {
    *("name", "description", "fleet", "workload", "load", "rollout", "error_statuses"),
    *("runs", "max_run_s", "tail_s", "drain_s", "poll_s", "share_window_s"),
    "request_timeout_s",
    *("seed", "quick"),
}
_QUICK = {"rollout", "load", "max_run_s", "tail_s", "drain_s", "runs", "share_window_s"}
_LOAD = {"qps", "users", "user_header", "max_in_flight"}
_RUN = {"name", "baseline_error_rate", "candidate_error_rate", "expect"}


class RolloutScenarioError(ScenarioError):
    """A rollout scenario is invalid; `issues` lists every problem with its path."""

    code = "rollout_scenario_invalid"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec:
    """One run: a fresh fleet and gateway, these error rates, and the phase it must reach."""

    name: str
    baseline_error_rate: float
    candidate_error_rate: float
    expect: str  # one of PHASES


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    qps: float
    users: int  # distinct sticky keys; each request picks one uniformly
    user_header: str = "x-user-id"
    max_in_flight: int = 1024


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RolloutScenario:
    name: str
    description: str
    fleet: FleetSpec  # each variant's InferencePool gets its own fleet of this shape
    workload: Mapping[str, Any]  # the `workload:` form of loadtests/scenario.py
    load: Load
    rollout: Mapping[str, Any]  # Rollout spec.steps / spec.analysis, in the Rollout's spelling
    steps: tuple[tuple[int, float], ...]  # (weight %, duration s), read from `rollout`
    error_statuses: tuple[int, ...]
    runs: tuple[RunSpec, ...]
    max_run_s: float  # per run: stop even if the rollout has not finished
    tail_s: float  # load goes on this long after the rollout finished
    drain_s: float  # then open requests get this long to finish before they are cancelled
    poll_s: float  # GET /rollouts period
    share_window_s: float  # window of the observed x-sluice-variant share
    request_timeout_s: float
    seed: int
    quick: bool


def parse_rollout_scenario(raw: object, *, quick: bool = False) -> RolloutScenario:
    """Build a scenario from its YAML form (with `quick:` applied on top when `quick`);
    raises `RolloutScenarioError` listing every issue."""
    issues: list[str] = []
    given: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    if not isinstance(raw, Mapping):
        issues.append("<root>: must be a mapping")
    shrink = Fields(given.get("quick", {}), "quick", issues, _QUICK)
    overrides = {k: v for k, v in shrink.raw.items() if k in _QUICK} if quick else {}
    top = Fields({**given, **overrides}, "", issues, _TOP)
    workload = top.get("workload", dict, {})
    parse_workload(workload, "workload", issues)
    rollout = top.get("rollout", dict, {})
    scenario = RolloutScenario(
        name=top.get("name", str, "rollout"),
        description=top.get("description", str, ""),
        fleet=parse_fleet(top.raw.get("fleet", {}), issues),
        workload=workload,
        load=_load(Fields(top.raw.get("load"), "load", issues, _LOAD)),
        rollout=rollout,
        steps=_steps(rollout, issues),
        error_statuses=_statuses(top, issues),
        runs=_runs(top.raw.get("runs"), issues),
        max_run_s=top.number("max_run_s", float, 120.0, lo=1.0, hi=3600.0),
        tail_s=top.number("tail_s", float, 10.0, lo=0.0, hi=600.0),
        drain_s=top.number("drain_s", float, 5.0, lo=0.0, hi=600.0),
        poll_s=top.number("poll_s", float, 0.5, lo=0.05, hi=10.0),
        share_window_s=top.number("share_window_s", float, 5.0, lo=0.5, hi=600.0),
        request_timeout_s=top.number("request_timeout_s", float, 30.0, lo=0.1, hi=600.0),
        seed=top.get("seed", int, 0),
        quick=quick,
    )
    if issues:
        raise RolloutScenarioError(issues)
    return scenario


def _load(r: Fields) -> Load:
    return Load(
        qps=r.number("qps", float, 50.0, lo=0.1, hi=10_000.0),
        users=r.number("users", int, 1000, lo=1, hi=10_000_000),
        user_header=r.get("user_header", str, "x-user-id").lower(),
        max_in_flight=r.number("max_in_flight", int, 1024, lo=1, hi=100_000),
    )


def _steps(rollout: Mapping[str, Any], issues: list[str]) -> tuple[tuple[int, float], ...]:
    raw = rollout.get("steps")
    if not isinstance(raw, list) or not raw:
        issues.append("rollout.steps: a non-empty list of {weight, duration}")
        return ()
    out: list[tuple[int, float]] = []
    for i, step in enumerate(raw):
        weight = step.get("weight") if isinstance(step, Mapping) else None
        duration = step.get("duration") if isinstance(step, Mapping) else None
        percent: int | None = None
        if isinstance(weight, int) and not isinstance(weight, bool) and 0 <= weight <= 100:
            percent = weight
        else:
            issues.append(f"rollout.steps[{i}].weight: an integer in [0, 100]")
        try:
            seconds = parse_duration(str(duration))
        except ValueError as exc:
            issues.append(f"rollout.steps[{i}].duration: {exc}")
            continue
        if percent is not None:
            out.append((percent, seconds))
    return tuple(out)


def _statuses(top: Fields, issues: list[str]) -> tuple[int, ...]:
    raw = top.get("error_statuses", list, [500, 503])
    if not raw or not all(isinstance(s, int) and 500 <= s <= 599 for s in raw):
        issues.append("error_statuses: a non-empty list of 5xx codes")
        return (500, 503)
    return tuple(raw)


def _runs(raw: object, issues: list[str]) -> tuple[RunSpec, ...]:
    if not isinstance(raw, list) or not raw:
        issues.append("runs: a non-empty list of {name, baseline_error_rate, ...}")
        return ()
    runs = []
    for i, item in enumerate(raw):
        r = Fields(item, f"runs[{i}]", issues, _RUN)
        expect = r.get("expect", str, "Promoted")
        if expect not in PHASES:
            issues.append(f"runs[{i}].expect: one of {', '.join(PHASES)}")
        runs.append(
            RunSpec(
                name=r.get("name", str, f"run-{i}"),
                baseline_error_rate=r.number("baseline_error_rate", float, 0.0, lo=0.0, hi=1.0),
                candidate_error_rate=r.number("candidate_error_rate", float, 0.0, lo=0.0, hi=1.0),
                expect=expect,
            )
        )
    for i, run in enumerate(runs):
        check_name(run.name, f"runs[{i}].name", issues)
    if len({r.name for r in runs}) != len(runs):
        issues.append("runs: names must be unique")
    return tuple(runs)
