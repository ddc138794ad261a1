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
