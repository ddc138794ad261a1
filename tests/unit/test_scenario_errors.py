"""The three kinds of load-test scenario (load test, closed loop, rollout) report a bad
`fleet:` section and bad names the same way: every issue with its path, as a subclass of
`ScenarioError` with the kind's own code."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loadtests.closedloop.scenario import ClosedLoopError, parse_closed_loop
from loadtests.rolloutrun.spec import RolloutScenarioError, parse_rollout_scenario
from loadtests.scenario import ScenarioError, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "loadtests" / "scenarios"
KINDS = [
    ("smoke.yaml", parse_scenario, ScenarioError, "scenario_invalid", "policies", 0),
    ("closed-loop.yaml", parse_closed_loop, ClosedLoopError, "closed_loop_scenario_invalid",
     "policies", 0),
    ("rollout.yaml", parse_rollout_scenario, RolloutScenarioError, "rollout_scenario_invalid",
     "runs", 0),
]  # fmt: skip


@pytest.mark.parametrize(("file", "parse", "error", "code", "named", "i"), KINDS)
def test_a_bad_fleet_and_a_bad_name_are_both_reported(file, parse, error, code, named, i):
    raw = yaml.safe_load((SCENARIOS / file).read_text())
    parse(raw)  # the shipped scenario is valid
    raw["fleet"] = {"replicas": "four"}
    raw[named][i]["name"] = "no spaces/or slashes"
    with pytest.raises(error) as caught:
        parse(raw)
    assert isinstance(caught.value, ScenarioError)
    assert caught.value.code == code
    issues = caught.value.issues
    assert any(issue.startswith("fleet.") for issue in issues), issues
    assert any(issue.startswith(f"{named}[{i}].name:") for issue in issues), issues


@pytest.mark.parametrize(("file", "parse", "error", "code", "named", "i"), KINDS)
def test_a_fleet_that_is_not_a_mapping_is_named(file, parse, error, code, named, i):
    raw = yaml.safe_load((SCENARIOS / file).read_text())
    raw["fleet"] = 3
    with pytest.raises(error, match=r"fleet: must be a mapping"):
        parse(raw)
