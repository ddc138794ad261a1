"""What the load-generator child processes share (``loadtests.loadgen``,
``loadtests.closedloop.loadgen``, ``loadtests.rolloutrun.traffic``): the JSON-lines events
they print for their parent, their records files (one JSON object per line), their CPU time,
and the entry point that reads the spec file and runs on uvloop when it is installed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["cpu_seconds", "emit", "read_jsonl", "run_child", "write_jsonl"]

T = TypeVar("T")
S = TypeVar("S")


def emit(event: str, **fields: Any) -> None:
    """One event for the parent, on its own line of stdout."""
    print(json.dumps({"event": event, **fields}), flush=True)


def cpu_seconds() -> float:
    """This process's CPU time so far (user + system)."""
    times = os.times()
    return times.user + times.system


def write_jsonl(path: Path, records: Iterable[Any]) -> None:
    """Dataclass records, one compact JSON object per line."""
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(dataclasses.asdict(record), separators=(",", ":")) + "\n")


def read_jsonl(path: Path, cls: Callable[..., T]) -> list[T]:
    """What ``write_jsonl`` wrote, as ``cls`` again."""
    with path.open(encoding="utf-8") as f:
        return [cls(**json.loads(line)) for line in f if line.strip()]


def run_child(
    argv: list[str] | None,
    module: str,
    parse: Callable[[str], S],
    generate: Callable[[S], Coroutine[Any, Any, None]],
) -> int:
    """``python -m MODULE SPEC.json``: parse the spec file's text and run ``generate`` on it
    (uvloop when installed). Exit status 2 for a wrong command line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m {module} SPEC.json", file=sys.stderr)
        return 2
    spec = parse(Path(args[0]).read_text(encoding="utf-8"))
    try:
        import uvloop
    except ImportError:
        asyncio.run(generate(spec))
    else:
        uvloop.run(generate(spec))
    return 0
