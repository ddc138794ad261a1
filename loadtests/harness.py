"""What the load-test and benchmark command lines share: running a coroutine on uvloop when
it is installed, reading a scenario file, the report folder, and the harness's own log."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from loadtests.scenario import ScenarioError

__all__ = ["logging_to", "read_scenario", "report_folder", "run_async"]

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``coro`` on uvloop when it is installed (as the gateway runs), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def read_scenario(
    path: Path, parse: Callable[[Any], T], error: type[ScenarioError]
) -> tuple[T, dict[str, Any]]:
    """The parsed scenario and its raw YAML; a file that cannot be read or is not YAML is an
    ``error`` naming the file, as parsing's own issues are."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise error([f"{path}: {exc}"]) from exc
    return parse(raw), raw


def report_folder(out: Path | None, root: Path, name: str, started: datetime.datetime) -> Path:
    """``out``, or ``root/<name>-<timestamp>``, with its ``logs/`` and ``raw/`` made."""
    folder = out or root / f"{name}-{started:%Y%m%d-%H%M%S}"
    for sub in ("logs", "raw"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def logging_to(path: Path) -> Iterator[None]:
    """Log records of this process (the fleet's aiohttp servers, e.g. a client that went away
    mid-stream when a trial ends) go to a file in the report, not over the progress line."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
