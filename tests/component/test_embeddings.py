"""Embeddings micro-batching on real sockets: the simulated fleet behind a gateway whose
TrafficPolicy sets ``embeddings`` batching (gateway/embeddings.py, routing/batching.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from gateway.app import RunningGateway
from gateway.embeddings import EmbeddingBatcher
from gateway.upstream import make_session
from loadtests.fleet import (
    DEFAULT_MODEL,
    Fault,
    FaultMode,
    Fleet,
    FleetSpec,
    ReplicaSpec,
    embedding_vector,
    tokenize,
)
from routing.backends import Endpoint
from routing.model import EmbeddingBatching
from tests.component.harness import (
    Backend,
    Handler,
    backend,
    free_port,
    gateway_on,
    pool_yaml,
    wait_scraped,
)

MODEL = DEFAULT_MODEL
PATH = "/v1/embeddings"


def _policy(**embeddings: object) -> str:
    spelled = ", ".join(f"{k}: {v}" for k, v in embeddings.items())
    return f"""
---
apiVersion: sluice.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: llama-traffic, namespace: default}}
spec:
  targetRefs: [{{group: inference.networking.k8s.io, kind: InferencePool, name: llama}}]
  embeddings: {{{spelled}}}
"""


@contextlib.asynccontextmanager
async def _stack(
    tmp_path: Path, replicas: int, **embeddings: object
) -> AsyncIterator[tuple[Fleet, RunningGateway, httpx.AsyncClient, str]]:
    port = free_port()
    spec = FleetSpec(replicas=tuple(ReplicaSpec() for _ in range(replicas)), time_scale=0.05)
    async with Fleet(spec) as fleet:
        slices = fleet.endpoint_slices_yaml({"app": "llama"})
        config = pool_yaml(port, slices, extra=_policy(**embeddings))
        async with (
            gateway_on(tmp_path, config) as gw,
            httpx.AsyncClient(limits=httpx.Limits(max_connections=200), timeout=30) as client,
        ):
            await wait_scraped(gw, replicas)
            yield fleet, gw, client, f"http://127.0.0.1:{port}{PATH}"


def _upstream_calls(fleet: Fleet) -> int:
    return sum(1 for r in fleet.replicas for rec in r.requests if rec.path == PATH)


def _vector(fleet: Fleet, text: str) -> list[float]:
    return list(embedding_vector(MODEL, text, fleet.replicas[0].spec.profile.embedding_dim))


def _tokens(texts: list[str]) -> int:
    return sum(len(tokenize(t)) for t in texts)


async def _wait_waiting(gw: RunningGateway, count: int) -> None:
    """Until ``count`` callers wait in the batcher (a yield per check, no timed sleep)."""
    while gw.ctx.embeddings.waiting != count:  # noqa: ASYNC110 - state of the code under test
        await asyncio.sleep(0)


async def test_64_single_inputs_reach_the_backend_as_at_most_4_calls(tmp_path):
    # maxQueueDelay is generous so the bound does not depend on how fast 64 connections open
    # on a slow CI machine: the batches are sent when full, long before the delay.
    async with _stack(tmp_path, 2, maxBatchSize=32, maxBatchTokens=16384, maxQueueDelay="2s") as (
        fleet,
        _gw,
        client,
        url,
    ):
        texts = [f"document number {i}: the quick brown fox {i * 7}" for i in range(64)]
        async with asyncio.timeout(5):
            responses = await asyncio.gather(
                *(client.post(url, json={"model": MODEL, "input": t}) for t in texts)
            )
        calls = _upstream_calls(fleet)
    assert [r.status_code for r in responses] == [200] * 64
    assert calls <= 4, calls
    endpoints = {f"127.0.0.1:{r.port}" for r in fleet.replicas}
    assert {r.headers["x-gateway-destination-endpoint-served"] for r in responses} <= endpoints
    for text, response in zip(texts, responses, strict=True):
        body = response.json()
        assert [d["index"] for d in body["data"]] == [0]
        assert body["data"][0]["embedding"] == _vector(fleet, text)
        assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"]
    # each batch's usage is shared out exactly, so the callers' shares add up to the fleet's
    assert sum(r.json()["usage"]["prompt_tokens"] for r in responses) == _tokens(texts)


async def test_without_a_traffic_policy_embeddings_are_not_held_to_be_coalesced(tmp_path):
    # batching is a TrafficPolicy feature: without one, each request is proxied on its own
    port = free_port()
    spec = FleetSpec(replicas=(ReplicaSpec(),), time_scale=0.05)
    async with Fleet(spec) as fleet:
        config = pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}))
        async with gateway_on(tmp_path, config) as gw, httpx.AsyncClient(timeout=30) as client:
            await wait_scraped(gw, 1)
            url = f"http://127.0.0.1:{port}{PATH}"
            texts = [f"text {i}" for i in range(8)]
            responses = await asyncio.gather(
                *(client.post(url, json={"model": MODEL, "input": t}) for t in texts)
            )
            calls = _upstream_calls(fleet)
    assert [r.status_code for r in responses] == [200] * 8
    assert calls == 8
    assert gw.ctx.embeddings.waiting == 0
    assert all("x-gateway-destination-endpoint-served" in r.headers for r in responses)


async def test_list_inputs_are_split_back_in_order_with_their_own_indices(tmp_path):
    async with _stack(tmp_path, 1, maxBatchSize=6, maxQueueDelay="5s") as (fleet, _gw, client, url):
        lists = [["a b c", "d e", "f"], ["g h i j"], ["k", "l m"]]  # 6 inputs: sent when full
        async with asyncio.timeout(5):
            responses = await asyncio.gather(
                *(client.post(url, json={"model": MODEL, "input": x}) for x in lists)
            )
        calls = _upstream_calls(fleet)
    assert calls == 1
    for texts, response in zip(lists, responses, strict=True):
        data = response.json()["data"]
        assert [d["index"] for d in data] == list(range(len(texts)))
        assert [d["embedding"] for d in data] == [_vector(fleet, t) for t in texts]
    shares = [r.json()["usage"]["prompt_tokens"] for r in responses]
    assert sum(shares) == _tokens([t for texts in lists for t in texts])


async def test_a_list_longer_than_max_batch_size_is_sent_alone_and_unsplit(tmp_path):
    async with _stack(tmp_path, 1, maxBatchSize=4, maxQueueDelay="5s") as (fleet, _gw, client, url):
        texts = [f"item {i}" for i in range(10)]
        async with asyncio.timeout(5):
            response = await client.post(url, json={"model": MODEL, "input": texts})
        calls = _upstream_calls(fleet)
    assert response.status_code == 200
    assert calls == 1
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(10))
    assert [d["embedding"] for d in data] == [_vector(fleet, t) for t in texts]
    assert response.json()["usage"]["prompt_tokens"] == _tokens(texts)


async def test_callers_that_differ_in_other_fields_are_not_merged(tmp_path):
    # Two callers in each of four groups, maxBatchSize 8: merged they would fill one batch
    # and go at once as one call; kept apart they are four calls, each after the delay.
    variants: list[dict[str, object]] = [
        {},
        {"encoding_format": "float"},
        {"dimensions": 16},
        {"user": "someone"},
    ]
    async with _stack(tmp_path, 1, maxBatchSize=8, maxQueueDelay="200ms") as (
        fleet, _gw, client, url,
    ):  # fmt: skip
        requests = [
            (f"text {n} of variant {i}", variant)
            for i, variant in enumerate(variants)
            for n in range(2)
        ]
        async with asyncio.timeout(5):
            responses = await asyncio.gather(
                *(client.post(url, json={"model": MODEL, "input": t, **v}) for t, v in requests)
            )
        calls = _upstream_calls(fleet)
    assert [r.status_code for r in responses] == [200] * len(requests)
    assert calls == len(variants)
    for (text, _), response in zip(requests, responses, strict=True):
        assert response.json()["data"] == [
            {"index": 0, "object": "embedding", "embedding": _vector(fleet, text)}
        ]


async def test_an_upstream_error_reaches_every_caller_of_the_batch(tmp_path):
    async with _stack(tmp_path, 1, maxBatchSize=5, maxQueueDelay="5s") as (fleet, _gw, client, url):
        replica = fleet.replicas[0]
        await replica.set_fault(Fault(mode=FaultMode.ERROR_RATE, rate=1.0, statuses=(503,)))
        async with asyncio.timeout(5):
            responses = await asyncio.gather(
                *(client.post(url, json={"model": MODEL, "input": f"t{i}"}) for i in range(5))
            )
        calls = _upstream_calls(fleet)
    assert calls == 1
    assert [r.status_code for r in responses] == [503] * 5
    bodies = [r.json() for r in responses]
    assert all(b == bodies[0] for b in bodies)
    assert f"Injected fault: 503 from {replica.name}" in bodies[0]["error"]["message"]


@pytest.mark.parametrize(
    ("mode", "status"),
    [(FaultMode.HANG, 504), (FaultMode.RESET_MIDSTREAM, 503)],
    ids=["timeout", "reset"],
)
async def test_connection_errors_map_to_the_status_table(tmp_path, mode, status):
    async with _stack(tmp_path, 1, maxBatchSize=3, maxQueueDelay="5s") as (fleet, gw, client, url):
        gw.ctx.embeddings = EmbeddingBatcher(gw.ctx.session, timeout_s=0.2)
        await fleet.replicas[0].set_fault(Fault(mode=mode))
        async with asyncio.timeout(5):
            responses = await asyncio.gather(
                *(client.post(url, json={"model": MODEL, "input": f"t{i}"}) for i in range(3))
            )
    assert [r.status_code for r in responses] == [status] * 3
    assert {r.json()["error"]["type"] for r in responses} == {"server_error"}


async def test_a_caller_that_leaves_is_taken_out_of_its_batch(tmp_path):
    async with _stack(tmp_path, 1, maxBatchSize=2, maxQueueDelay="30s") as (
        fleet, gw, client, url,
    ):  # fmt: skip
        async with asyncio.timeout(5):
            leaver = asyncio.create_task(client.post(url, json={"model": MODEL, "input": "gone"}))
            await _wait_waiting(gw, 1)
            leaver.cancel()
            await _wait_waiting(gw, 0)
            # Had "gone" stayed, it would fill the batch with "b" and leave "c" waiting 30 s.
            b, c = await asyncio.gather(
                client.post(url, json={"model": MODEL, "input": "b"}),
                client.post(url, json={"model": MODEL, "input": "c"}),
            )
        calls = _upstream_calls(fleet)
    assert leaver.cancelled()
    assert calls == 1
    assert b.json()["data"][0]["embedding"] == _vector(fleet, "b")
    assert c.json()["data"][0]["embedding"] == _vector(fleet, "c")


async def test_close_answers_waiting_callers_503(tmp_path):
    async with _stack(tmp_path, 1, maxBatchSize=8, maxQueueDelay="30s") as (
        fleet, gw, client, url,
    ):  # fmt: skip
        async with asyncio.timeout(5):
            waiting = asyncio.create_task(client.post(url, json={"model": MODEL, "input": "x"}))
            await _wait_waiting(gw, 1)
            await gw.ctx.embeddings.close()
            response = await waiting
        calls = _upstream_calls(fleet)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "shutting_down"
    assert calls == 0


async def test_beyond_the_waiting_cap_callers_get_503(tmp_path):
    # maxBatchSize 1... would send every caller at once; use distinct users (never merged) so
    # each waits in its own batch: the cap is 4 x maxBatchSize = 8 waiting callers.
    async with _stack(tmp_path, 1, maxBatchSize=2, maxQueueDelay="30s") as (
        fleet, gw, client, url,
    ):  # fmt: skip
        async with asyncio.timeout(5):
            tasks = [
                asyncio.create_task(
                    client.post(url, json={"model": MODEL, "input": "x", "user": f"u{i}"})
                )
                for i in range(8)
            ]
            await _wait_waiting(gw, 8)
            over = await client.post(url, json={"model": MODEL, "input": "x", "user": "u8"})
            await gw.ctx.embeddings.close()
            answers = await asyncio.gather(*tasks)
    assert over.status_code == 503
    assert over.json()["error"]["code"] == "embedding_queue_full"
    assert over.json()["error"]["retry_after_s"] >= 1
    assert [a.status_code for a in answers] == [503] * 8
    assert _upstream_calls(fleet) == 0


# ---------------------------------------------------------------------------------------------
# the batcher alone, against a scripted upstream on 127.0.0.1

SETTINGS = EmbeddingBatching(max_batch_size=2, max_batch_tokens=1000, max_queue_delay_s=30)


@dataclass
class _Picks:
    """Stands in for the pool's pick/release pair and counts the calls."""

    endpoint: Endpoint
    picked: int = 0
    released: int = 0

    def pick(self) -> Endpoint:
        self.picked += 1
        return self.endpoint

    def release(self, endpoint: Endpoint) -> None:
        assert endpoint == self.endpoint
        self.released += 1


@contextlib.asynccontextmanager
async def _batcher(handler: Handler) -> AsyncIterator[tuple[EmbeddingBatcher, Backend, _Picks]]:
    async with backend(handler) as be:
        session = make_session()
        batcher = EmbeddingBatcher(session)
        try:
            yield batcher, be, _Picks(Endpoint(address="127.0.0.1", port=be.port))
        finally:
            await batcher.close()
            await session.close()


def _embed(
    batcher: EmbeddingBatcher, picks: _Picks, text: str
) -> asyncio.Task[tuple[int, Any, str]]:
    async def call() -> tuple[int, Any, str]:
        return await batcher.embed(
            key=("default/pool", "m"),
            settings=SETTINGS,
            document={"model": "m", "input": text},
            headers=[
                ("Host", "pool.local"),
                ("Content-Length", "999"),
                ("Accept-Encoding", "gzip"),
            ],
            path=PATH,
            pick=picks.pick,
            release=picks.release,
        )

    return asyncio.create_task(call())


async def _echo(request: web.Request) -> web.Response:
    """Embeds each input as [its length], answering in reverse order."""
    body = await request.json()
    data = [
        {"object": "embedding", "index": i, "embedding": [float(len(text))]}
        for i, text in enumerate(body["input"])
    ]
    return web.json_response(
        {"object": "list", "data": data[::-1], "usage": {"prompt_tokens": 9, "total_tokens": 9}}
    )


async def test_the_combined_request_is_clean_json_sent_once():
    async with _batcher(_echo) as (batcher, be, picks):
        async with asyncio.timeout(5):
            a, b = await asyncio.gather(_embed(batcher, picks, "a"), _embed(batcher, picks, "bbb"))
        request = be.seen[0]
    assert (a[0], b[0]) == (200, 200)
    assert a[1]["data"] == [{"object": "embedding", "index": 0, "embedding": [1.0]}]
    assert b[1]["data"] == [{"object": "embedding", "index": 0, "embedding": [3.0]}]
    assert a[1]["usage"]["prompt_tokens"] + b[1]["usage"]["prompt_tokens"] == 9
    assert len(be.seen) == 1
    assert (picks.picked, picks.released) == (1, 1)
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Content-Length"] != "999"
    assert "Accept-Encoding" not in request.headers
    assert request.headers["Host"] == "pool.local"


def _answer_with(status: int, body: bytes) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, body=body)

    return handler


@pytest.mark.parametrize(
    ("status", "body", "want_status", "want_code"),
    [
        (200, b"not json", 502, "upstream_malformed_response"),
        (200, b'{"data": [{"index": 0}]}', 502, "upstream_malformed_response"),
        (200, b"[1, 2]", 502, "upstream_malformed_response"),
        (500, b"plain text oops", 500, "upstream_error"),
        (400, b"<html>bad</html>", 400, "upstream_error"),
        (429, b'{"error": {"code": "rate_limited", "message": "slow down"}}', 429, "rate_limited"),
    ],
    ids=["not-json", "too-few-embeddings", "not-an-object", "500-text", "400-html", "429-json"],
)
async def test_unusable_answers_reach_every_caller(status, body, want_status, want_code):
    async with _batcher(_answer_with(status, body)) as (batcher, _be, picks):
        async with asyncio.timeout(5):
            answers = await asyncio.gather(_embed(batcher, picks, "a"), _embed(batcher, picks, "b"))
    assert [s for s, _, _ in answers] == [want_status] * 2
    assert {p["error"]["code"] for _, p, _ in answers} == {want_code}
    assert (picks.picked, picks.released) == (1, 1)


def _gated(gate: asyncio.Event) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        await gate.wait()
        return await _echo(request)

    return handler


async def test_a_caller_leaving_a_batch_in_flight_does_not_cancel_it_for_the_others():
    gate = asyncio.Event()
    async with _batcher(_gated(gate)) as (batcher, be, picks):
        async with asyncio.timeout(5):
            leaver, stayer = _embed(batcher, picks, "a"), _embed(batcher, picks, "bb")
            await be.arrived.wait()
            leaver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await leaver
            gate.set()
            status, payload, _ = await stayer
    assert status == 200
    assert payload["data"][0]["embedding"] == [2.0]
    assert not be.disconnected.is_set()
    assert (picks.picked, picks.released) == (1, 1)


async def test_when_every_caller_leaves_the_upstream_call_is_cancelled():
    async with _batcher(_gated(asyncio.Event())) as (batcher, be, picks):
        async with asyncio.timeout(5):
            callers = [_embed(batcher, picks, "a"), _embed(batcher, picks, "b")]
            await be.arrived.wait()
            for task in callers:
                task.cancel()
            await be.disconnected.wait()
            while batcher.in_flight:  # noqa: ASYNC110 - the flight ends on its next step
                await asyncio.sleep(0)
    assert all(t.cancelled() for t in callers)
    assert (picks.picked, picks.released) == (1, 1)


async def test_close_fails_a_batch_in_flight_with_503_and_releases_its_endpoint():
    async with _batcher(_gated(asyncio.Event())) as (batcher, be, picks):
        async with asyncio.timeout(5):
            callers = [_embed(batcher, picks, "a"), _embed(batcher, picks, "b")]
            await be.arrived.wait()
            await batcher.close()
            answers = await asyncio.gather(*callers)
            late = await _embed(batcher, picks, "c")
    assert [s for s, _, _ in answers] == [503, 503]
    assert late[0] == 503
    assert {p["error"]["code"] for _, p, _ in [*answers, late]} == {"shutting_down"}
    assert (picks.picked, picks.released) == (1, 1)
