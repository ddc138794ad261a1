"""Failure injection on the simulated fleet: crash, hang, slow, error rate, mid-stream reset,
and the /fleet/fault endpoint (real sockets; hang is observed through a client read timeout)."""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from loadtests.fleet import Fault, FaultMode, Fleet, FleetSpec, Replica, ReplicaSpec
from loadtests.fleet.testing import wait_for

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
FAST = 0.02  # time_scale for tests that are not about time


@asynccontextmanager
async def running(*replicas: ReplicaSpec, time_scale: float = FAST) -> AsyncIterator[Fleet]:
    async with Fleet(FleetSpec(replicas=replicas or (ReplicaSpec(),), time_scale=time_scale)) as f:
        yield f


@asynccontextmanager
async def client_for(replica: Replica, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=replica.url, **kwargs) as client:
        yield client


def chat(content: str, *, model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def read_stream(client: httpx.AsyncClient, body: dict[str, Any], into: bytearray) -> None:
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for chunk in response.aiter_bytes():
            into += chunk


async def test_crash_refuses_connections_and_recovery_listens_on_the_same_port() -> None:
    async with running(time_scale=1.0) as fleet, client_for(fleet.replicas[0]) as client:
        replica = fleet.replicas[0]
        port = replica.port
        body = chat("in flight", stream=True, max_tokens=2000, ignore_eos=True)
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            chunks = response.aiter_bytes()
            await anext(chunks)
            await replica.set_fault(Fault(mode=FaultMode.CRASH))
            with pytest.raises(httpx.TransportError):
                async for _ in chunks:
                    pass
        with pytest.raises(httpx.ConnectError):
            await client.get("/health")
        assert replica.stats.running == 0  # state was lost with the process
        await replica.set_fault(Fault())
        assert replica.port == port
        assert (await client.get("/health")).status_code == 200


async def test_hang_accepts_but_never_answers() -> None:
    async with running() as fleet:
        replica = fleet.replicas[0]
        await replica.set_fault(Fault(mode=FaultMode.HANG))
        async with client_for(replica, timeout=httpx.Timeout(5.0, read=0.2)) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/v1/chat/completions", json=chat("anyone?"))
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/health")
            assert replica.stats.received == 1  # the request arrived
            await replica.set_fault(Fault())
            assert (await client.get("/health")).status_code == 200


async def test_slow_multiplies_step_time() -> None:
    body = {"model": MODEL, "prompt": "x", "max_tokens": 5, "ignore_eos": True}
    async with running(time_scale=1.0) as fleet, client_for(fleet.replicas[0]) as client:
        started = time.monotonic()
        await client.post("/v1/completions", json=body)
        normal = time.monotonic() - started  # 5 steps of ~12.4 ms
        await fleet.replicas[0].set_fault(Fault(mode=FaultMode.SLOW, factor=10.0))
        started = time.monotonic()
        await client.post("/v1/completions", json=body)
        slow = time.monotonic() - started
    assert slow > 4 * normal


async def test_error_rate_fails_that_fraction_of_inference_requests() -> None:
    async with running() as fleet, client_for(fleet.replicas[0]) as client:
        replica = fleet.replicas[0]
        await replica.set_fault(Fault(mode=FaultMode.ERROR_RATE, rate=0.5))
        body = {"model": MODEL, "prompt": "x", "max_tokens": 1}
        statuses = [
            (await client.post("/v1/completions", json=body)).status_code for _ in range(40)
        ]
        health = await client.get("/health")
        await replica.set_fault(Fault(mode=FaultMode.ERROR_RATE, rate=1.0, statuses=(503,)))
        failed = await client.post("/v1/completions", json=body)
    assert set(statuses) == {200, 500, 503}
    assert 8 <= statuses.count(200) <= 32
    assert replica.stats.errors_injected == 40 - statuses.count(200) + 1
    assert health.status_code == 200
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == 503


async def test_reset_midstream_aborts_after_k_chunks() -> None:
    async with running() as fleet, client_for(fleet.replicas[0]) as client:
        replica = fleet.replicas[0]
        await replica.set_fault(Fault(mode=FaultMode.RESET_MIDSTREAM, after_chunks=3))
        received = bytearray()
        body = chat("stream", stream=True, max_tokens=50)
        with pytest.raises(httpx.TransportError):
            await read_stream(client, body, received)
        with pytest.raises(httpx.TransportError):
            await client.post("/v1/chat/completions", json=chat("plain"))
    assert received.count(b"data: ") == 3
    assert b"[DONE]" not in received
    assert replica.stats.resets_injected == 2


async def test_fault_endpoint_switches_modes_and_crash_heals_after_duration() -> None:
    async with running() as fleet, client_for(fleet.replicas[0]) as client:
        replica = fleet.replicas[0]
        bad = await client.post("/fleet/fault", json={"mode": "explode"})
        answer = await client.post("/fleet/fault", json={"mode": "error_rate", "statuses": [502]})
        failed = await client.post("/v1/completions", json={"model": MODEL, "prompt": "x"})
        current = (await client.get("/fleet/fault")).json()
        crash = await client.post("/fleet/fault", json={"mode": "crash", "duration_s": 0.3})
        await wait_for(replica, lambda s: s.fault_mode is FaultMode.CRASH)
        with pytest.raises(httpx.ConnectError):
            await client.get("/health")
        await wait_for(replica, lambda s: s.fault_mode is FaultMode.NONE)
        healed = await client.get("/health")
    assert bad.status_code == 400
    assert answer.status_code == 200
    assert failed.status_code == 502
    assert current["mode"] == "error_rate"
    assert crash.json()["mode"] == "crash"
    assert healed.status_code == 200
