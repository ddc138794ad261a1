"""The simulated fleet (loadtests/fleet): real sockets on 127.0.0.1, no mocks, no sleeps.

Synchronisation is on the replica's own signals (`wait_until`, `wait_for_requests`), each inside
`asyncio.timeout(5)`. Where a test is about time (prefix hits skip prefill, slow, batching
embeddings) it compares two measured durations with a wide margin.
"""

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtests.fleet import (
    Engine,
    EngineProfile,
    Fault,
    FaultMode,
    Fleet,
    FleetSpec,
    Replica,
    ReplicaSpec,
    ReplicaStats,
    SpecError,
    embedding_vector,
)

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


async def wait_until(replica: Replica, predicate: Callable[[ReplicaStats], bool]) -> ReplicaStats:
    async with asyncio.timeout(5):
        return await replica.wait_until(predicate)


def chat(content: str, *, model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def words(n: int, seed: str = "w") -> str:
    return " ".join(f"{seed}{i}" for i in range(n))


def sse_events(raw: bytes) -> list[Any]:
    """Split an SSE body the way a strict client would; every event must be `data: ...`."""
    assert raw.endswith(b"\n\n")
    events = []
    for frame in raw[:-2].split(b"\n\n"):
        assert frame.startswith(b"data: "), frame
        data = frame[len(b"data: ") :]
        events.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return events


async def scrape(client: httpx.AsyncClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    ((_, v),) = samples[name]
    return v


@asynccontextmanager
async def background_streams(
    client: httpx.AsyncClient, bodies: list[dict[str, Any]], path: str = "/v1/chat/completions"
) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Keep streaming requests open in tasks; cancel them on exit (the client disconnects)."""

    async def consume(body: dict[str, Any]) -> None:
        async with client.stream("POST", path, json={**body, "stream": True}) as response:
            async for _ in response.aiter_bytes():
                pass

    tasks = [asyncio.create_task(consume(body)) for body in bodies]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- OpenAI surface -----------------------------------------------------------------------------


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
    request = {**body, "stream": True, "max_tokens": 5, "ignore_eos": True, "stream_options": options}
    async with running() as fleet, client_for(fleet.replicas[0]) as client:
        response = await client.post(path, json=request)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = sse_events(response.content)
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
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    assert all(e["choices"] and "usage" not in e for e in events[:-1])


async def test_non_stream_responses_carry_usage_and_are_deterministic() -> None:
    replicas = (ReplicaSpec(), ReplicaSpec())
    async with running(*replicas) as fleet:
        bodies = []
        for replica in fleet.replicas:
            async with client_for(replica) as client:
                response = await client.post("/v1/chat/completions", json=chat("same", max_tokens=9))
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
    async with running(ReplicaSpec(profile=profile), time_scale=1.0) as fleet:
        async with client_for(fleet.replicas[0]) as client:
            started = time.monotonic()
            singles = [
                (await client.post("/v1/embeddings", json={"model": MODEL, "input": text})).json()
                for text in inputs
            ]
            single_s = time.monotonic() - started
            started = time.monotonic()
            batch = (await client.post("/v1/embeddings", json={"model": MODEL, "input": inputs}))
            batch_s = time.monotonic() - started
    vectors = [d["embedding"] for d in batch.json()["data"]]
    assert [s["data"][0]["embedding"] for s in singles] == vectors
    assert vectors == [list(embedding_vector(MODEL, text, 16)) for text in inputs]
    assert len({tuple(v) for v in vectors}) == len(inputs)
    assert [d["index"] for d in batch.json()["data"]] == list(range(8))
    assert batch.json()["usage"]["prompt_tokens"] == 3 * 8
    assert batch_s < single_s / 3  # 8 x 40 ms overhead versus one


# --- engine behaviour seen through /metrics -------------------------------------------------------


async def test_queue_grows_under_overload_and_metrics_track_it() -> None:
    spec = ReplicaSpec(profile=EngineProfile(max_num_seqs=2))
    bodies = [chat(f"request {i}", max_tokens=2000, ignore_eos=True) for i in range(6)]
    async with running(spec, time_scale=1.0) as fleet, client_for(fleet.replicas[0]) as client:
        replica = fleet.replicas[0]
        async with background_streams(client, bodies):
            await wait_until(replica, lambda s: s.running == 2 and s.waiting == 4)
            samples = await scrape(client)
            assert value(samples, "vllm:num_requests_running") == 2
            assert value(samples, "vllm:num_requests_waiting") == 4
        stats = await wait_until(replica, lambda s: s.in_flight == 0 and s.running == 0)
    assert stats.max_running == 2
    assert stats.waiting == 0  # departed clients' requests were aborted, not left queued


async def test_kv_cache_usage_rises_with_context_length() -> None:
    spec = ReplicaSpec(profile=EngineProfile(num_blocks=1024))
    short, long = chat(words(50), max_tokens=2000), chat(words(4000, "v"), max_tokens=2000)
    async with running(spec, time_scale=1.0) as fleet, client_for(fleet.replicas[0]) as client:
        replica = fleet.replicas[0]
        async with background_streams(client, [{**short, "ignore_eos": True}]):
            await wait_until(replica, lambda s: s.running == 1 and s.generation_tokens > 0)
            short_usage = value(await scrape(client), "vllm:kv_cache_usage_perc")
            async with background_streams(client, [{**long, "ignore_eos": True}]):
                await wait_until(replica, lambda s: s.running == 2 and s.kv_usage > short_usage)
                long_usage = value(await scrape(client), "vllm:kv_cache_usage_perc")
    assert 0 < short_usage < 0.01
    assert long_usage > 0.2  # 4,000 prompt tokens in 250 of 1,024 blocks
    assert long_usage <= 1.0


async def test_prefix_cache_hit_skips_prefill_time() -> None:
    prompt = chat(words(3000), max_tokens=1, ignore_eos=True, stream=True)

    async def ttft(client: httpx.AsyncClient) -> tuple[float, dict[str, Any]]:
        started = time.monotonic()
        async with client.stream(
            "POST", "/v1/chat/completions", json={**prompt, "stream_options": {"include_usage": True}}
        ) as response:
            first = None
            async for line in response.aiter_lines():
                if first is None and '"content":"' in line and '"content":""' not in line:
                    first = time.monotonic() - started
                if '"usage"' in line:
                    usage = json.loads(line.removeprefix("data: "))["usage"]
        assert first is not None
        return first, usage

    async with running(time_scale=0.5) as fleet, client_for(fleet.replicas[0]) as client:
        cold, cold_usage = await ttft(client)
        warm, warm_usage = await ttft(client)
        samples = await scrape(client)
    assert warm < cold / 3  # ~3,000 prefill tokens skipped
    assert cold_usage["prompt_tokens_details"]["cached_tokens"] == 0
    cached = warm_usage["prompt_tokens_details"]["cached_tokens"]
    assert cached >= warm_usage["prompt_tokens"] - 16
    assert value(samples, "vllm:prefix_cache_hits_total") == cached
    assert value(samples, "vllm:prefix_cache_queries_total") == 2 * warm_usage["prompt_tokens"]
    assert fleet.replicas[0].stats.prefix_hits == cached


async def test_shared_system_prompt_hits_across_different_questions() -> None:
    system = {"role": "system", "content": words(500)}

    def ask(question: str) -> dict[str, Any]:
        messages = [system, {"role": "user", "content": question}]
        return {"model": MODEL, "messages": messages, "max_tokens": 1}

    async with running() as fleet, client_for(fleet.replicas[0]) as client:
        await client.post("/v1/chat/completions", json=ask("first question"))
        second = await client.post("/v1/chat/completions", json=ask("another one entirely"))
    assert second.json()["usage"]["prompt_tokens_details"]["cached_tokens"] >= 496


async def test_kv_pressure_preempts_and_every_request_still_completes() -> None:
    profile = EngineProfile(num_blocks=64, max_model_len=1024)  # 1,024 tokens of KV
    spec = ReplicaSpec(profile=profile)
    bodies = [
        {"model": MODEL, "prompt": words(300, f"p{i}"), "max_tokens": 250, "ignore_eos": True}
        for i in range(3)
    ]
    async with running(spec) as fleet, client_for(fleet.replicas[0]) as client:
        async with asyncio.timeout(5):
            answers = await asyncio.gather(*(client.post("/v1/completions", json=b) for b in bodies))
        samples = await scrape(client)
    assert [a.json()["usage"]["completion_tokens"] for a in answers] == [250] * 3
    assert value(samples, "vllm:num_preemptions_total") >= 1
    assert fleet.replicas[0].stats.preemptions >= 1


async def test_adapter_beyond_max_loras_waits_while_other_requests_proceed() -> None:
    spec = ReplicaSpec(adapters=("sql-lora", "chat-lora"), max_loras=1)
    long = {"max_tokens": 2000, "ignore_eos": True}
    async with running(spec, time_scale=1.0) as fleet, client_for(fleet.replicas[0]) as client:
        replica = fleet.replicas[0]
        async with background_streams(client, [chat("q", model="sql-lora", **long)]):
            await wait_until(replica, lambda s: s.running_adapters == ("sql-lora",))
            async with background_streams(client, [chat("q", model="chat-lora", **long)]):
                await wait_until(replica, lambda s: s.waiting_adapters == ("chat-lora",))
                # The base model is not held up behind the waiting adapter.
                base = await client.post("/v1/chat/completions", json=chat("q", max_tokens=2))
                samples = await scrape(client)
    assert base.status_code == 200
    ((labels, stamp),) = samples["vllm:lora_requests_info"]
    assert labels["running_lora_adapters"] == "sql-lora"
    assert labels["waiting_lora_adapters"] == "chat-lora"
    assert labels["max_lora"] == "1"
    assert stamp > 1.6e9  # the value is the last-update timestamp


async def test_client_disconnect_aborts_the_sequence() -> None:
    async with running(time_scale=1.0) as fleet, client_for(fleet.replicas[0]) as client:
        replica = fleet.replicas[0]
        body = chat("bye", stream=True, max_tokens=2000, ignore_eos=True)
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            await anext(response.aiter_bytes())
        stats = await wait_until(replica, lambda s: s.in_flight == 0 and s.running == 0)
    assert stats.served == 0
    assert stats.kv_usage == 0.0


EXPECTED_NAMES = {
    Engine.VLLM: {
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:lora_requests_info",
        "vllm:cache_config_info",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:num_preemptions_total",
        "vllm:time_to_first_token_seconds_bucket",
    },
    Engine.SGLANG: {
        "sglang:num_queue_reqs",
        "sglang:num_running_reqs",
        "sglang:token_usage",
        "sglang:cache_config_info",
    },
    Engine.TGI: {"tgi_queue_size", "tgi_batch_current_size", "tgi_batch_current_max_tokens"},
    Engine.TRITON: {"nv_trt_llm_request_metrics", "nv_trt_llm_kv_cache_block_metrics"},
    Engine.TRTLLM: {
        "trtllm_num_requests_waiting",
        "trtllm_num_requests_running",
        "trtllm_kv_cache_utilization",
        "trtllm_kv_cache_tokens_per_block",
        "trtllm_kv_cache_max_blocks",
    },
    Engine.LLAMACPP: {
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
        "llamacpp:predicted_tokens_seconds",
        "llamacpp:n_busy_slots_per_decode",
    },
}


@pytest.mark.parametrize("engine", list(Engine), ids=str)
async def test_each_engine_exposes_its_metric_names(engine: Engine) -> None:
    spec = ReplicaSpec(engine=engine, adapters=("a",))
    async with running(spec) as fleet, client_for(fleet.replicas[0]) as client:
        answer = await client.post("/v1/completions", json={"model": MODEL, "prompt": "x"})
        samples = await scrape(client)
    assert answer.status_code == 200
    assert EXPECTED_NAMES[engine] <= samples.keys()
    if engine is Engine.TRITON:
        kinds = {labels["request_type"] for labels, _ in samples["nv_trt_llm_request_metrics"]}
        assert {"waiting", "scheduled"} <= kinds
        blocks = {lb["kv_cache_block_type"] for lb, _ in samples["nv_trt_llm_kv_cache_block_metrics"]}
        assert {"fraction", "tokens_per", "max"} <= blocks
    if engine is Engine.SGLANG:
        ((labels, _),) = samples["sglang:cache_config_info"]
        assert labels["page_size"] == "16"
    if engine is Engine.VLLM:
        ((labels, _),) = samples["vllm:cache_config_info"]
        assert (labels["block_size"], labels["num_gpu_blocks"]) == ("16", "4096")


# --- failure injection -----------------------------------------------------------------------------


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
    body = {"model": MODEL, "prompt": "x", "max_tokens": 20, "ignore_eos": True}
    async with running(time_scale=0.25) as fleet, client_for(fleet.replicas[0]) as client:
        started = time.monotonic()
        await client.post("/v1/completions", json=body)
        normal = time.monotonic() - started
        await fleet.replicas[0].set_fault(Fault(mode=FaultMode.SLOW, factor=5.0))
        started = time.monotonic()
        await client.post("/v1/completions", json=body)
        slow = time.monotonic() - started
    assert slow > 3 * normal


async def test_error_rate_fails_that_fraction_of_inference_requests() -> None:
    async with running() as fleet, client_for(fleet.replicas[0]) as client:
        replica = fleet.replicas[0]
        await replica.set_fault(Fault(mode=FaultMode.ERROR_RATE, rate=0.5))
        body = {"model": MODEL, "prompt": "x", "max_tokens": 1}
        statuses = [(await client.post("/v1/completions", json=body)).status_code for _ in range(40)]
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
        received = b""
        body = chat("stream", stream=True, max_tokens=50)
        with pytest.raises(httpx.TransportError):
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                async for chunk in response.aiter_bytes():
                    received += chunk
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
        await wait_until(replica, lambda s: s.fault_mode is FaultMode.CRASH)
        with pytest.raises(httpx.ConnectError):
            await client.get("/health")
        await wait_until(replica, lambda s: s.fault_mode is FaultMode.NONE)
        healed = await client.get("/health")
    assert bad.status_code == 400
    assert answer.status_code == 200
    assert failed.status_code == 502
    assert current["mode"] == "error_rate"
    assert crash.json()["mode"] == "crash"
    assert healed.status_code == 200


# --- records, specs, EndpointSlices, CLI ----------------------------------------------------------


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
        stats = await wait_until(replica, lambda s: s.received == 2)
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
    engine_types = [s["metadata"]["labels"]["inference.networking.k8s.io/engine-type"] for s in slices]
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
