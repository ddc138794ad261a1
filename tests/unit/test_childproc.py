"""The load-generator children's shared plumbing: records files and the entry point."""

from __future__ import annotations

import json

from loadtests.childproc import read_jsonl, run_child, write_jsonl
from loadtests.loadgen import Record


def test_records_read_back_as_written(tmp_path):
    records = [Record(phase="measure", t=i * 0.5, ttft=0.01 * i, error=None) for i in range(3)]
    path = tmp_path / "r.jsonl"
    write_jsonl(path, records)
    assert read_jsonl(path, Record) == records
    assert len(path.read_text().splitlines()) == 3


def test_the_entry_point_reads_the_spec_and_runs_the_generator(tmp_path, capsys):
    seen: list[dict[str, int]] = []

    async def generate(spec: dict[str, int]) -> None:
        seen.append(spec)

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"n": 3}))
    assert run_child([str(spec)], "loadtests.x", json.loads, generate) == 0
    assert seen == [{"n": 3}]
    assert run_child([], "loadtests.x", json.loads, generate) == 2
    assert "usage: python -m loadtests.x SPEC.json" in capsys.readouterr().err
