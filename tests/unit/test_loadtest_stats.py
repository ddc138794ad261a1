"""Load-test summaries (loadtests/stats.py): answers by status and the per-objective breakdown,
from hand-made request records. Pure: no process, no socket."""

from loadtests.loadgen import Record
from loadtests.stats import Snapshot, TrialResult, Window, status_counts, summarize

WINDOW = Window(start_s=1.0, end_s=11.0)


def _ok(objective: str | None, ttft: float, t: float = 2.0) -> Record:
    return Record(phase="measure", t=t, status=200, ttft=ttft, e2e=ttft + 1.0, done_t=t + 1.5,
                  tokens=10, objective=objective)  # fmt: skip


def _shed(objective: str, status: int = 429, retry_after: str | None = "1") -> Record:
    return Record(
        phase="measure", t=3.0, status=status, e2e=0.01, done_t=3.01,
        error=f"HTTP {status}: shed", objective=objective, retry_after=retry_after,
    )  # fmt: skip


def _summary(records: list[Record]) -> TrialResult:
    snap = Snapshot(at=0.0, prefix_queries=None, prefix_hits=None, received=(0,),
                    held_request_s=(0.0,), harness_cpu_s=0.0, target_cpu_s=None)  # fmt: skip
    return summarize(policy="p", load="1x", target_qps=1.0, records=records, window=WINDOW,
                     before=snap, after=snap, generator_cpu_s=0.0, wall_s=10.0)  # fmt: skip


def test_status_counts_name_every_answer_and_every_missing_one() -> None:
    records = [
        _ok(None, 0.1),
        _shed("b"),
        _shed("b", 503),
        Record(phase="measure", t=1.0, error="ClientConnectorError: refused"),
        Record(phase="measure", t=1.0, status=200, ttft=0.1, error="in-stream error: x"),
    ]
    assert status_counts(records) == {
        "200": 1, "200 + error": 1, "429": 1, "503": 1,
        "no answer: ClientConnectorError": 1,
    }  # fmt: skip


def test_per_objective_percentiles_and_retry_after() -> None:
    records = [_ok("critical", 0.1 * i) for i in range(1, 11)]
    records += [_shed("sheddable"), _shed("sheddable", retry_after=None), _ok("sheddable", 0.5)]
    records.append(Record(phase="warmup", t=0.5, status=429, error="HTTP 429", objective="x"))
    result = _summary(records)
    assert set(result.by_objective) == {"critical", "sheddable"}  # warm-up is not measured
    critical, sheddable = result.by_objective["critical"], result.by_objective["sheddable"]
    assert (critical.sent, critical.completed) == (10, 10)
    assert critical.ttft_s.p90 == 0.9
    assert critical.statuses == {"200": 10}
    assert (sheddable.sent, sheddable.completed) == (3, 1)
    assert sheddable.statuses == {"200": 1, "429": 2}
    assert sheddable.retry_after == 1
    assert result.statuses == {"200": 11, "429": 2}


def test_no_objectives_means_no_breakdown() -> None:
    assert _summary([_ok(None, 0.2)]).by_objective == {}


def test_load_balance_is_each_replicas_mean_held_requests_over_the_window() -> None:
    before = Snapshot(at=0.0, prefix_queries=None, prefix_hits=None, received=(0, 0),
                      held_request_s=(5.0, 0.0), harness_cpu_s=0.0, target_cpu_s=None)  # fmt: skip
    after = Snapshot(at=10.0, prefix_queries=None, prefix_hits=None, received=(30, 10),
                     held_request_s=(65.0, 20.0), harness_cpu_s=0.0, target_cpu_s=None)  # fmt: skip
    result = summarize(policy="p", load="1x", target_qps=1.0, records=[], window=WINDOW,
                       before=before, after=after, generator_cpu_s=0.0, wall_s=10.0)  # fmt: skip
    assert result.replica_load == (6.0, 2.0)
    assert result.load_balance == 1.5
    assert result.balance == 1.5  # requests: 30 and 10 against a mean of 20
