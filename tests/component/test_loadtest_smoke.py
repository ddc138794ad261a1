"""`sluice loadtest` end to end on the smoke scenario (loadtests/scenarios/smoke.yaml, --quick).

Real processes on 127.0.0.1: the simulated fleet in the harness's own event loop, one
`sluice serve` per trial, a load generator process. The harness waits on readiness with bounded
polls and on the generators' own reports; the test only reads the report folder it wrote.
"""

import json
import math
from pathlib import Path

import pytest

from loadtests import cli

SMOKE = Path(__file__).resolve().parents[2] / "loadtests" / "scenarios" / "smoke.yaml"
POLICIES = ("sluice-default", "round-robin")

pytestmark = [pytest.mark.single_loop, pytest.mark.slow]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("smoke-report")
    assert cli.main([str(SMOKE), "--quick", "--out", str(out)]) == 0
    return out


def test_report_has_a_row_per_policy(report: Path) -> None:
    text = (report / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for policy in POLICIES:
        assert any(row.startswith(f"| {policy} | ") for row in rows), policy
    assert "failed:" not in text
    assert "nproc=" in text  # the machine is recorded


def test_every_trial_ran_without_errors(report: Path) -> None:
    results = json.loads((report / "results.json").read_text())
    trials = {t["policy"]: t for t in results["trials"]}
    assert set(trials) == set(POLICIES)
    for policy, trial in trials.items():
        assert trial["failure"] is None, policy
        assert trial["errors"] == 0, (policy, trial["error_kinds"])
        assert trial["completed"] > 0, policy
        assert trial["ttft_s"]["p50"] > 0, policy
        assert trial["e2e_s"]["p90"] >= trial["ttft_s"]["p90"], policy
        assert math.isclose(sum(trial["replica_requests"]) / trial["duration_s"],
                            trial["offered_rps"], rel_tol=0.5), policy  # fmt: skip
        assert 0.0 < trial["prefix_hit_rate"] <= 1.0, policy


def test_raw_records_and_logs_are_kept(report: Path) -> None:
    raw = sorted(p.name for p in (report / "raw").glob("*.jsonl"))
    assert len(raw) == len(POLICIES)
    configs = list((report / "logs").glob("*.config.yaml"))
    assert len(configs) == len(POLICIES)
    assert "InferencePoolPolicy" in configs[0].read_text()
