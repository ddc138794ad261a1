"""The load-test harness's process plumbing end to end: real child processes (``python -m
loadtests.rolloutrun.traffic``) driven through ``loadtests.childproc.Child``, sending to a real
aiohttp server on 127.0.0.1, and ``loadtests.targets.running_process``'s failures. Waits are
on the processes' own events and answers, inside timeouts."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from loadtests.childproc import Child
from loadtests.rolloutrun.traffic import TrafficSpec, read_requests
from loadtests.targets import TargetError, running_process

MODULE = "loadtests.rolloutrun.traffic"
WAIT_S = 30.0


class ChildFailedError(Exception):
    pass


def _spec(tmp_path: Path, url: str, **kw: object) -> Path:
    spec = TrafficSpec(
        url=url, qps=200.0, users=4, user_header="x-user", seed=1, max_s=30.0, drain_s=5.0,
        request_timeout_s=5.0, max_in_flight=64, max_requests=kw.pop("max_requests", 20),  # type: ignore[arg-type]
        default_model="m", workload={}, records_path=str(tmp_path / "records.jsonl"),
    )  # fmt: skip
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(dataclasses.asdict(spec)))
    return path


@dataclasses.dataclass
class Server:
    url: str
    seen: list[str]  # the x-user header of every request received


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """A streaming chat endpoint on 127.0.0.1 that records who sent each request."""
    seen: list[str] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("x-user", ""))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n')
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Server(url=f"http://127.0.0.1:{runner.addresses[0][1]}", seen=seen)
    finally:
        await runner.cleanup()


async def test_a_child_sends_after_go_and_reports_done(tmp_path: Path, server: Server) -> None:
    spec = _spec(tmp_path, server.url)
    async with Child.spawn(MODULE, spec, tmp_path / "child.log", ChildFailedError) as child:
        await child.wait_for("ready", WAIT_S)
        assert server.seen == []  # nothing before go
        child.go(0.0)  # T0 in the past: every arrival is due at once
        done = await child.finish(WAIT_S)
    assert done["records"] == 20
    assert done["cpu_s"] >= 0.0
    records = read_requests(tmp_path / "records.jsonl")
    assert len(records) == 20
    assert len(server.seen) == 20
    assert all(r.status == 200 and r.error is None for r in records)


async def test_a_child_told_to_stop_ends_early(tmp_path: Path, server: Server) -> None:
    spec = _spec(tmp_path, server.url, max_requests=100_000)  # 6,000 in max_s (30 s) at 200/s
    async with Child.spawn(MODULE, spec, tmp_path / "child.log", ChildFailedError) as child:
        await child.wait_for("ready", WAIT_S)
        child.go(time.monotonic())
        child.send("stop")
        done = await child.finish(WAIT_S)
    assert done["records"] < 1_000


async def test_a_child_that_exits_before_ready_raises_the_callers_error(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "http://192.0.2.1:80")  # not loopback: the child refuses to start
    async with Child.spawn(MODULE, spec, tmp_path / "child.log", ChildFailedError) as child:
        with pytest.raises(ChildFailedError, match="exited before 'ready'"):
            await child.wait_for("ready", WAIT_S)
    assert "refusing to load a non-loopback URL" in (tmp_path / "child.log").read_text()


async def test_a_child_given_anything_but_go_sends_nothing(tmp_path: Path, server: Server) -> None:
    spec = _spec(tmp_path, server.url)
    async with Child.spawn(MODULE, spec, tmp_path / "child.log", ChildFailedError) as child:
        await child.wait_for("ready", WAIT_S)
        child.send("abort")
        with pytest.raises(ChildFailedError, match="exited before 'done'"):
            await child.finish(WAIT_S)
    assert server.seen == []
    assert not (tmp_path / "records.jsonl").exists()


async def test_a_target_that_exits_before_ready_is_reported_with_its_log(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "import sys; print('bad flag --nope'); sys.exit(3)"]
    with pytest.raises(TargetError, match=r"exited with 3:[\s\S]*bad flag --nope"):
        async with running_process(cmd, tmp_path / "t.log", "http://127.0.0.1:9/readyz", WAIT_S):
            pytest.fail("yielded a process that never got ready")


async def test_a_target_that_never_gets_ready_is_stopped(tmp_path: Path, server: Server) -> None:
    cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
    started = time.monotonic()
    with pytest.raises(TargetError, match="not ready at"):
        # the server answers 405 to a GET on its POST-only route: never ready
        async with running_process(cmd, tmp_path / "t.log", f"{server.url}/v1/completions", 0.5):
            pytest.fail("yielded a process that never got ready")
    assert time.monotonic() - started < WAIT_S  # stopped, not waited out
