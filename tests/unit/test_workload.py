"""Scenario workloads: per-objective streaming, and another Sluice build per policy."""

from __future__ import annotations

import json
import random
import sys

import pytest

from loadtests.scenario import ScenarioError, parse_scenario, parse_workload
from loadtests.workload import RequestFactory


def test_an_objective_can_turn_streaming_off_for_its_requests():
    issues: list[str] = []
    workload = parse_workload(
        {"kind": "random", "stream": True,
         "objectives": [{"name": "chat", "weight": 1}, {"name": "batch", "stream": False}]},
        "workload", issues,
    )  # fmt: skip
    assert issues == []
    factory = RequestFactory(workload, default_model="m")
    rng = random.Random(0)
    seen = {}
    for _ in range(200):
        plan = factory.next(rng)
        seen.setdefault(plan.headers["x-gateway-inference-objective"], set()).add(
            json.loads(plan.body).get("stream", False)
        )
    assert seen == {"chat": {True}, "batch": {False}}


def test_stream_is_only_for_objectives_and_must_be_a_boolean():
    issues: list[str] = []
    parse_workload(
        {"models": [{"name": "a", "stream": False}],
         "objectives": [{"name": "b", "stream": "no"}]},
        "workload", issues,
    )  # fmt: skip
    assert any("models[0]" in i and "stream" in i for i in issues), issues
    assert any("objectives[0].stream: must be bool" in i for i in issues), issues


def _scenario(policy: dict) -> dict:
    return {"name": "s", "fleet": {"replicas": [{"count": 1}]}, "load": [0.5],
            "capacity_rps": 1, "policies": [policy]}  # fmt: skip


def test_a_policy_can_run_another_sluice_build():
    scenario = parse_scenario(
        _scenario({"name": "old", "sluice_profile": "default", "sluice_bin": sys.executable})
    )
    assert scenario.policies[0].sluice_bin == sys.executable


def test_sluice_bin_must_be_an_executable_and_only_for_sluice_policies():
    with pytest.raises(ScenarioError, match="sluice_bin: /nonexistent/sluice is not an exec"):
        parse_scenario(_scenario({"name": "a", "sluice_bin": "/nonexistent/sluice"}))
    with pytest.raises(ScenarioError, match="only for a Sluice policy"):
        parse_scenario(
            _scenario({"name": "b", "url": "http://127.0.0.1:1", "sluice_bin": sys.executable})
        )


def test_a_policy_can_bring_its_own_extra_gateway_resources():
    from loadtests.fleet import Fleet, FleetSpec
    from loadtests.targets import gateway_config

    own = {"apiVersion": "sluice.dev/v1alpha1", "kind": "TrafficPolicy", "metadata": {"name": "t"}}
    shared = {**own, "metadata": {"name": "shared"}}
    raw = _scenario({"name": "own", "extra_config": [own]})
    raw["policies"].append({"name": "plain"})
    raw["gateway"] = {"extra_config": [shared]}
    scenario = parse_scenario(raw)
    fleet = Fleet(FleetSpec(replicas=()))  # no replicas: nothing to start
    configs = {p.name: gateway_config(scenario, p, fleet, 8080) for p in scenario.policies}
    assert configs["own"][-2:] == [shared, own]
    assert configs["plain"][-1] == shared
    assert own not in configs["plain"]
    with pytest.raises(ScenarioError, match="extra_config: a list of Kubernetes resources"):
        parse_scenario(_scenario({"name": "x", "url": "http://127.0.0.1:1", "extra_config": []}))
