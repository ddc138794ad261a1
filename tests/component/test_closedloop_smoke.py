"""`python -m loadtests.closedloop` end to end on the quick variant of closed-loop.yaml.

Real processes on 127.0.0.1: per policy, an elastic simulated fleet (in the harness's own event
loop), one `sluice serve`, one load generator process and a reconciler scaling the fleet every
second. The harness waits on readiness with bounded polls and on the
generators' own reports; the only timing is the scenario's. The test reads the report folder.
"""

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from loadtests.closedloop import cli

SCENARIO = Path(__file__).resolve().parents[2] / "loadtests" / "scenarios" / "closed-loop.yaml"
POLICIES = {"sluice": "sluice", "hpa-busy": "utilisation"}
QUICK_WALL_S = 60.0

pytestmark = [pytest.mark.single_loop, pytest.mark.slow, pytest.mark.scenario]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("closed-loop")
    assert cli.main([str(SCENARIO), "--quick", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def results(report: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((report / "results.json").read_text())
    return doc


def by_policy(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["policy"]: p for p in results["policies"]}


def test_the_quick_run_fits_in_a_minute(results: dict[str, Any]) -> None:
    assert results["quick"] is True
    assert results["wall_s"] <= QUICK_WALL_S


def test_report_has_both_policies(report: Path, results: dict[str, Any]) -> None:
    assert {name: p["kind"] for name, p in by_policy(results).items()} == POLICIES
    lines = (report / "report.md").read_text().splitlines()
    rows = [line for line in lines if line.startswith("| ")]
    for name in POLICIES:
        assert any(row.startswith(f"| {name} | ") for row in rows), name
    if importlib.util.find_spec("matplotlib") is not None:  # plots need the loadtest extra
        assert (report / "timeline.png").stat().st_size > 0
    assert {p.name for p in (report / "raw").glob("*.jsonl")} == {f"{n}.jsonl" for n in POLICIES}


def test_sluice_reconciler_scaled_up(results: dict[str, Any]) -> None:
    sluice = by_policy(results)["sluice"]
    ups = [c for c in sluice["changes"] if c["after"] > c["before"]]
    assert ups, sluice["changes"]
    assert sluice["scale_ups"] == len(ups)
    assert sluice["max_replicas"] > 1
    assert any(row["serving"] > 1 for row in sluice["timeline"])  # a new replica served


def test_no_errors(results: dict[str, Any]) -> None:
    for name, policy in by_policy(results).items():
        assert policy["requests"] > 0, name
        assert policy["errors"] == 0, (name, policy["error_kinds"])
        assert policy["completed"] == policy["requests"], name
        assert policy["problems"] == [], name
        assert policy["forced_stops"] == 0, name
