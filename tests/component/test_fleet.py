"""The simulated fleet's OpenAI surface, records, specs, EndpointSlices and CLI (real sockets).

Engine behaviour is in test_fleet_engine.py, failure injection in test_fleet_faults.py. No
mocks and no sleeps: waits are on the replica's own signals inside `asyncio.timeout(5)`.
"""

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from loadtests.fleet import (
    Engine,
    EngineProfile,
    Fleet,
    FleetSpec,
    Replica,
    ReplicaSpec,
    SpecError,
    embedding_vector,
)
from loadtests.fleet.testing import parse_sse, wait_for

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


@pytest.mark.parametrize(
    ("path", "body", "obj"),
    [
        ("/v1/chat/completions", chat("hello"), "chat.completion.chunk"),
        ("/v1/completions", {"model": MODEL, "prompt": "hello"}, "text_completion"),
    ],
    ids=["chat", "completions"],
)
async def test_sse_framing_matches_vllm(path: str, body: dict[str, Any], obj: str) -> None:
    options = {"include_usage": True}
    request = {
        **body,
        "stream": True,
        "max_tokens": 5,
        "ignore_eos": True,
        "stream_options": options,
    }
    async with running() as fleet, client_for(fleet.replicas[0]) as client:
        response = await client.post(path, json=request)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = parse_sse(response.content)
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk = events[:-1]
    assert {c["object"] for c in events[:-1]} == {obj}
    assert len({c["id"] for c in events[:-1]}) == 1
    if obj == "chat.completion.chunk":
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        chunks = chunks[1:]
        texts = [c["choices"][0]["delta"]["content"] for c in chunks]
    else:
        texts = [c["choices"][0]["text"] for c in chunks]
    assert len(texts) == 5
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 4 + ["length"]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + 5


async def test_without_include_usage_there_is_no_usage_chunk() -> None:
    async with running() as fleet, client_for(fleet.replicas[0]) as client:
        response = await client.post(
            "/v1/chat/completions", json=chat("hi", stream=True, max_tokens=3)
        )
    events = parse_sse(response.content)
    assert events[-1] == "[DONE]"
    assert all(e["choices"] and "usage" not in e for e in events[:-1])


async def test_non_stream_responses_carry_usage_and_are_deterministic() -> None:
    replicas = (ReplicaSpec(), ReplicaSpec())
    async with running(*replicas) as fleet:
        bodies = []
        for replica in fleet.replicas:
            async with client_for(replica) as client:
                response = await client.post(
                    "/v1/chat/completions", json=chat("same", max_tokens=9)
                )
                assert response.status_code == 200
                bodies.append(response.json())
    first, second = bodies
    assert first["object"] == "chat.completion"
    assert first["choices"][0]["message"]["role"] == "assistant"
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    usage = first["usage"]
    assert 1 <= usage["completion_tokens"] <= 9
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    reason = first["choices"][0]["finish_reason"]
    assert reason == ("length" if usage["completion_tokens"] == 9 else "stop")


async def test_ignore_eos_generates_exactly_max_tokens() -> None:
    async with running() as fleet, client_for(fleet.replicas[0]) as client:
        body = {"model": MODEL, "prompt": "x", "max_tokens": 40, "ignore_eos": True}
        response = await client.post("/v1/completions", json=body)
    assert response.json()["usage"]["completion_tokens"] == 40
    assert response.json()["choices"][0]["finish_reason"] == "length"


async def test_unknown_model_is_openai_404_and_malformed_json_is_400() -> None:
    async with running() as fleet, client_for(fleet.replicas[0]) as client:
        missing = await client.post("/v1/chat/completions", json=chat("hi", model="nope"))
        malformed = await client.post("/v1/completions", content=b"{not json")
        too_long = await client.post(
            "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 10**6}
        )
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == 404
    assert error["type"] == "NotFoundError"
    assert "nope" in error["message"]
    assert malformed.status_code == 400
    assert malformed.json()["error"]["type"] == "BadRequestError"
    assert too_long.status_code == 400
    assert "maximum context length" in too_long.json()["error"]["message"]


async def test_models_lists_base_model_and_adapters_with_parent() -> None:
    spec = ReplicaSpec(adapters=("sql-lora", "chat-lora"))
    async with running(spec) as fleet, client_for(fleet.replicas[0]) as client:
        listed = (await client.get("/v1/models")).json()
        adapter_answer = await client.post(
            "/v1/completions", json={"model": "sql-lora", "prompt": "x", "max_tokens": 2}
        )
    assert listed["object"] == "list"
    parents = {m["id"]: m["parent"] for m in listed["data"]}
    assert parents == {MODEL: None, "sql-lora": MODEL, "chat-lora": MODEL}
    assert adapter_answer.json()["model"] == "sql-lora"


async def test_embeddings_are_deterministic_per_input_and_batches_are_cheaper() -> None:
    profile = EngineProfile(embed_overhead_s=0.04, embed_per_token_s=0.0001)
    inputs = [f"input number {i}" for i in range(8)]
    spec = ReplicaSpec(profile=profile)
    async with running(spec, time_scale=1.0) as fleet, client_for(fleet.replicas[0]) as client:
        started = time.monotonic()
        singles = [
            (await client.post("/v1/embeddings", json={"model": MODEL, "input": text})).json()
            for text in inputs
        ]
        single_s = time.monotonic() - started
        started = time.monotonic()
        batch = await client.post("/v1/embeddings", json={"model": MODEL, "input": inputs})
        batch_s = time.monotonic() - started
    vectors = [d["embedding"] for d in batch.json()["data"]]
    assert [s["data"][0]["embedding"] for s in singles] == vectors
    assert vectors == [list(embedding_vector(MODEL, text, 16)) for text in inputs]
    assert len({tuple(v) for v in vectors}) == len(inputs)
    assert [d["index"] for d in batch.json()["data"]] == list(range(8))
    assert batch.json()["usage"]["prompt_tokens"] == 3 * 8
    assert batch_s < single_s / 3  # 8 x 40 ms overhead versus one


async def test_request_log_records_path_model_and_headers() -> None:
    async with running() as fleet, client_for(fleet.replicas[0]) as client:
        replica = fleet.replicas[0]
        replica.request_started.clear()
        headers = {"x-gateway-inference-objective": "critical"}
        task = asyncio.create_task(
            client.post("/v1/chat/completions", json=chat("hi"), headers=headers)
        )
        async with asyncio.timeout(5):
            await replica.request_started.wait()
            await replica.wait_for_requests(1)
        await task
        await client.post("/v1/embeddings", content=b"[broken")
        stats = await wait_for(replica, lambda s: s.received == 2)
    first, second = replica.requests
    assert (first.path, first.model) == ("/v1/chat/completions", MODEL)
    assert first.headers["x-gateway-inference-objective"] == "critical"
    assert (second.path, second.model) == ("/v1/embeddings", None)
    assert stats.served == 1


def test_fleet_spec_from_dict_expands_counts_and_reports_every_issue() -> None:
    spec = FleetSpec.from_dict(
        {
            "seed": 7,
            "time_scale": 0.5,
            "replicas": [
                {"engine": "sglang", "count": 2, "accelerator": "h100"},
                {"adapters": ["a", "b"], "max_loras": 2, "profile": {"max_num_seqs": 8}},
            ],
        }
    )
    assert [r.engine for r in spec.replicas] == [Engine.SGLANG, Engine.SGLANG, Engine.VLLM]
    assert spec.replicas[2].profile.max_num_seqs == 8
    assert spec.replicas[0].effective_speed == 1.8
    assert (spec.seed, spec.time_scale) == (7, 0.5)
    with pytest.raises(SpecError) as caught:
        FleetSpec.from_dict(
            {"replicas": [{"engine": "nope"}, {"profile": {"bogus": 1}, "max_loras": "x"}]}
        )
    issues = caught.value.issues
    assert "replicas[0].engine: one of vllm, sglang, tgi, triton, trtllm-serve, llamacpp" in issues
    assert "replicas[1].profile.bogus: unknown key" in issues
    assert "replicas[1].max_loras: must be int" in issues


async def test_endpoint_slices_list_one_slice_per_replica_port() -> None:
    replicas = (ReplicaSpec(), ReplicaSpec(engine=Engine.SGLANG))
    async with running(*replicas) as fleet:
        slices = fleet.endpoint_slices_yaml(service_or_pool_labels={"app": "llama"})
        ports = [r.port for r in fleet.replicas]
    assert [s["ports"][0]["port"] for s in slices] == ports
    assert {s["kind"] for s in slices} == {"EndpointSlice"}
    assert {s["apiVersion"] for s in slices} == {"discovery.k8s.io/v1"}
    engine_types = [
        s["metadata"]["labels"]["inference.networking.k8s.io/engine-type"] for s in slices
    ]
    assert engine_types == ["vllm", "sglang"]
    assert all(s["metadata"]["labels"]["app"] == "llama" for s in slices)
    assert all(s["endpoints"][0]["addresses"] == ["127.0.0.1"] for s in slices)


async def test_cli_prints_one_url_per_replica_and_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtests.fleet.cli",
        "--replicas",
        "2",
        "--engine",
        "tgi",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(10):
            lines = [(await process.stdout.readline()).decode() for _ in range(2)]
            urls = [line.rstrip("\n").split("\t")[-1] for line in lines]
            async with httpx.AsyncClient() as client:
                answers = [await client.get(f"{url}/metrics") for url in urls]
    finally:
        process.terminate()
        async with asyncio.timeout(10):
            await process.communicate()
    assert all(line.startswith(f"replica-{i}\ttgi") for i, line in enumerate(lines))
    assert all("tgi_queue_size" in answer.text for answer in answers)
    assert process.returncode == 0
