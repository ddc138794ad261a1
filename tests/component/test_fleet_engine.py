"""The simulated engine seen through /metrics and stats: batching, KV cache, prefix cache,
preemption, LoRA slots, aborts, and each engine's metric names (real sockets, no sleeps)."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from loadtests.fleet import Engine, EngineProfile, Fleet, FleetSpec, Replica, ReplicaSpec
from loadtests.fleet.testing import Samples, parse_metrics, wait_for
from loadtests.fleet.testing import sample_value as value

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


def words(n: int, seed: str = "w") -> str:
    return " ".join(f"{seed}{i}" for i in range(n))


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_metrics(response.text)


@asynccontextmanager
async def background_streams(
    client: httpx.AsyncClient, bodies: list[dict[str, Any]]
) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Keep streaming requests open in tasks; cancel them on exit (the client disconnects)."""

    async def consume(body: dict[str, Any]) -> None:
        path = "/v1/chat/completions"
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


async def test_queue_grows_under_overload_and_metrics_track_it() -> None:
    spec = ReplicaSpec(profile=EngineProfile(max_num_seqs=2))
    bodies = [chat(f"request {i}", max_tokens=2000, ignore_eos=True) for i in range(6)]
    async with running(spec, time_scale=1.0) as fleet, client_for(fleet.replicas[0]) as client:
        replica = fleet.replicas[0]
        async with background_streams(client, bodies):
            await wait_for(replica, lambda s: s.running == 2 and s.waiting == 4)
            samples = await scrape(client)
            assert value(samples, "vllm:num_requests_running") == 2
            assert value(samples, "vllm:num_requests_waiting") == 4
        stats = await wait_for(replica, lambda s: s.in_flight == 0 and s.running == 0)
    assert stats.max_running == 2
    assert stats.waiting == 0  # departed clients' requests were aborted, not left queued


async def test_kv_cache_usage_rises_with_context_length() -> None:
    spec = ReplicaSpec(profile=EngineProfile(num_blocks=1024))
    short, long = chat(words(50), max_tokens=2000), chat(words(4000, "v"), max_tokens=2000)
    async with running(spec, time_scale=1.0) as fleet, client_for(fleet.replicas[0]) as client:
        replica = fleet.replicas[0]
        async with background_streams(client, [{**short, "ignore_eos": True}]):
            await wait_for(replica, lambda s: s.running == 1 and s.generation_tokens > 0)
            short_usage = value(await scrape(client), "vllm:kv_cache_usage_perc")
            async with background_streams(client, [{**long, "ignore_eos": True}]):
                await wait_for(replica, lambda s: s.running == 2 and s.kv_usage > short_usage)
                long_usage = value(await scrape(client), "vllm:kv_cache_usage_perc")
    assert 0 < short_usage < 0.01
    assert long_usage > 0.2  # 4,000 prompt tokens in 250 of 1,024 blocks
    assert long_usage <= 1.0


async def test_prefix_cache_hit_skips_prefill_time() -> None:
    prompt = chat(words(3000), max_tokens=1, ignore_eos=True, stream=True)

    async def ttft(client: httpx.AsyncClient) -> tuple[float, dict[str, Any]]:
        started = time.monotonic()
        async with client.stream(
            "POST",
            "/v1/chat/completions",
            json={**prompt, "stream_options": {"include_usage": True}},
        ) as response:
            first = None
            async for line in response.aiter_lines():
                if first is None and '"content":"' in line and '"content":""' not in line:
                    first = time.monotonic() - started
                if '"usage"' in line:
                    usage = json.loads(line.removeprefix("data: "))["usage"]
        assert first is not None
        return first, usage

    async with running(time_scale=1.0) as fleet, client_for(fleet.replicas[0]) as client:
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
            answers = await asyncio.gather(
                *(client.post("/v1/completions", json=b) for b in bodies)
            )
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
            await wait_for(replica, lambda s: s.running_adapters == ("sql-lora",))
            async with background_streams(client, [chat("q", model="chat-lora", **long)]):
                await wait_for(replica, lambda s: s.waiting_adapters == ("chat-lora",))
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
        stats = await wait_for(replica, lambda s: s.in_flight == 0 and s.running == 0)
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
        blocks = {
            lb["kv_cache_block_type"] for lb, _ in samples["nv_trt_llm_kv_cache_block_metrics"]
        }
        assert {"fraction", "tokens_per", "max"} <= blocks
    if engine is Engine.SGLANG:
        ((labels, _),) = samples["sglang:cache_config_info"]
        assert labels["page_size"] == "16"
    if engine is Engine.VLLM:
        ((labels, _),) = samples["vllm:cache_config_info"]
        assert (labels["block_size"], labels["num_gpu_blocks"]) == ("16", "4096")
