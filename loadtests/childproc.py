"""What the load-generator child processes share (``loadtests.loadgen``,
``loadtests.closedloop.loadgen``, ``loadtests.rolloutrun.traffic``), on both sides of the pipe.

The child's side: the JSON-lines events it prints for its parent, its records file (one JSON
object per line), its CPU time, the entry point that reads the spec file and runs on uvloop
when it is installed, and ``serve_records``, the protocol itself: print ``ready``, wait for
``go T0`` on stdin (T0 on the shared CLOCK_MONOTONIC), send, write the records, print ``done``.
The parent's side: ``Child``, one such process and the events it has printed."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp

from loadtests.harness import run_async
from loadtests.scenario import is_loopback_url
from loadtests.targets import stop_process

__all__ = [
    "Child",
    "RecordSource",
    "cpu_seconds",
    "emit",
    "read_jsonl",
    "run_child",
    "serve_records",
    "write_jsonl",
]

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
    run_async(generate(parse(Path(args[0]).read_text(encoding="utf-8"))))
    return 0


class RecordSource(Protocol):
    """What a child sends with: ``run`` sends until done, one record per request."""

    @property
    def records(self) -> Sequence[Any]: ...

    async def run(self) -> None: ...


R = TypeVar("R", bound=RecordSource)


async def serve_records(
    url: str,
    request_timeout_s: float,
    records_path: str,
    start: Callable[[aiohttp.ClientSession, float], R],
    *,
    ready: Mapping[str, Any] | None = None,
    alongside: Callable[[R, asyncio.StreamReader], Coroutine[Any, Any, None]] | None = None,
    done: Callable[[R], Mapping[str, Any]] | None = None,
) -> None:
    """A generator child's whole protocol. Refuses a non-loopback ``url``; prints ``ready``
    (with ``ready``'s fields); waits for ``go T0`` (anything else: returns, nothing sent);
    runs ``start(session, T0)`` with ``alongside(source, stdin)`` beside it (cancelled when
    it ends: progress reports, or watching stdin for more commands); writes the records to
    ``records_path``; prints ``done`` with the record count, CPU seconds since ``go`` and
    ``done``'s fields."""
    if not is_loopback_url(url):
        raise ValueError(f"refusing to load a non-loopback URL: {url}")
    stdin = await _stdin()
    emit("ready", **(ready or {}))
    word, _, when = (await stdin.readline()).decode().partition(" ")
    if word != "go":
        return  # the parent gave up before starting: nothing sent
    cpu0 = cpu_seconds()
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        source = start(session, float(when))
        beside = asyncio.create_task(alongside(source, stdin)) if alongside else None
        try:
            await source.run()
        finally:
            if beside is not None:
                beside.cancel()
                await asyncio.gather(beside, return_exceptions=True)
    await asyncio.to_thread(write_jsonl, Path(records_path), source.records)
    extra = done(source) if done else {}
    emit("done", records=len(source.records), cpu_s=round(cpu_seconds() - cpu0, 3), **extra)


async def _stdin() -> asyncio.StreamReader:
    """stdin as a stream: a blocked read can be cancelled, and no thread outlives the run."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


class Child:
    """The parent's side: one generator child process (``python -m MODULE SPEC.json``) and the
    events it has printed, the latest of each kind by name (``exited`` once its stdout ends),
    each also passed to ``on_event``. ``error`` is the exception class its failures are raised
    as (the caller's own)."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        error: type[Exception],
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.proc = proc
        self.error = error
        self.events: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Event()
        self._on_event = on_event
        self.reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def spawn(
        cls,
        module: str,
        spec_path: Path,
        log_path: Path,
        error: type[Exception],
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> AsyncIterator[Child]:
        """The running child; stopped (SIGTERM, then SIGKILL) on the way out."""
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", module, str(spec_path),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
            )  # fmt: skip
        child = cls(proc, error, on_event)
        try:
            yield child
        finally:
            await stop_process(proc)
            child.reader.cancel()
            await asyncio.gather(child.reader, return_exceptions=True)

    async def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        while line := await stdout.readline():
            event = json.loads(line)
            kind = str(event.pop("event"))
            self._record(kind, event)
        self._record("exited", {})

    def _record(self, kind: str, event: dict[str, Any]) -> None:
        self.events[kind] = event
        if self._on_event is not None:
            self._on_event(kind, event)
        self.changed.set()

    def has(self, event: str) -> bool:
        """Whether it has printed ``event``; ``error`` if it exited without."""
        if event in self.events:
            return True
        if "exited" in self.events:
            raise self.error(f"the load generator exited before {event!r} (see logs)")
        return False

    async def wait_for(self, event: str, timeout_s: float) -> dict[str, Any]:
        """Until it prints ``event``; ``error`` if it exits first or ``timeout_s`` passes."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._until(event)
        except TimeoutError:
            raise self.error(f"the load generator did not report {event!r} in time") from None
        return self.events[event]

    async def _until(self, event: str) -> None:
        while not self.has(event):
            self.changed.clear()
            await self.changed.wait()

    def send(self, line: str) -> None:
        """One command line on its stdin (nothing once that is closed)."""
        stdin = self.proc.stdin
        assert stdin is not None
        if not stdin.is_closing():
            stdin.write(f"{line}\n".encode())

    def go(self, t0: float) -> None:
        self.send(f"go {t0!r}")

    async def finish(self, timeout_s: float) -> dict[str, Any]:
        """Its ``done`` event, once it has exited too; ``error`` if it failed, exited without
        ``done`` or took longer than ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._until("done")
                await self.proc.wait()
        except TimeoutError:
            raise self.error("the load generator did not finish in time") from None
        if self.proc.returncode:
            raise self.error(f"the load generator failed ({self.proc.returncode}, see logs)")
        return self.events["done"]
