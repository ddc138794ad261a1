"""The rollout scenario end to end, quick (`loadtests/scenarios/rollout.yaml --quick`).

Real processes on 127.0.0.1: two simulated fleets in the harness's event loop (5xx injected per
variant), one `sluice serve` and one load generator process per run. The harness bounds every
run (`max_run_s`) and every wait; the test only reads the report folder it wrote. The healthy
candidate must at least pass its first step: promotion also needs the 50 % step's windows to
fill in time, which a heavily loaded machine can delay past the quick run's end.
"""

import json
import time
from pathlib import Path
from typing import Any

import pytest

from loadtests import rollout_scenario

SCENARIO = Path(__file__).resolve().parents[2] / "loadtests" / "scenarios" / "rollout.yaml"
QUICK_BUDGET_S = 60.0

pytestmark = [pytest.mark.single_loop, pytest.mark.slow, pytest.mark.scenario]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("rollout-report")
    started = time.monotonic()
    code = rollout_scenario.main([str(SCENARIO), "--quick", "--out", str(out)])
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    results["exit_code"], results["elapsed_s"] = code, time.monotonic() - started
    results["out"] = out
    return results


def _run(report: dict[str, Any], name: str) -> dict[str, Any]:
    runs: dict[str, dict[str, Any]] = {r["name"]: r for r in report["runs"]}
    assert name in runs, report["failures"]
    return runs[name]


def test_the_quick_scenario_takes_under_a_minute(report):
    assert report["elapsed_s"] <= QUICK_BUDGET_S
    assert report["failures"] == {}
    assert (report["out"] / "report.md").is_file()


def test_the_failing_candidate_is_rolled_back(report):
    bad = _run(report, "bad-candidate")
    assert bad["outcome"] == "RolledBack"
    assert "maxErrorRate" in bad["message"]  # the analysis, not an operator, rolled it back
    assert bad["transitions"][-1]["weight"] == 0
    assert bad["last_analysis"]["verdict"] == "Fail"
    # every request sent after the rollback (and one poll of margin) went to the baseline
    rolled_back_at = bad["finished_from_rollout_s"] + bad["rollout_start_s"]
    raw = report["out"] / "raw" / "bad-candidate.jsonl"
    records = [json.loads(line) for line in raw.read_text().splitlines() if line]
    after = {r["variant"] for r in records if r["t"] > rolled_back_at + 0.5 and r["variant"]}
    assert after == {"llama-v1"}


def test_the_healthy_candidate_progresses_past_its_first_step(report):
    good = _run(report, "healthy-candidate")
    assert good["outcome"] != "RolledBack", good["message"]
    weights = [t["weight"] for t in good["transitions"]]
    assert weights == sorted(weights)  # only ever up
    assert max(weights) > weights[0]
    assert good["failed"].get("llama-v2", 0) == 0  # no candidate request failed
