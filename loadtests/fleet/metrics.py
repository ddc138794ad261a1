"""`/metrics` text for each imitated engine, written by hand in Prometheus exposition format.

Names follow the model-server protocol table (reference/anchors.md §1.5) and each engine's own
documentation: vLLM `vllm:*`, SGLang `sglang:*`, TGI `tgi_*`, Triton TensorRT-LLM `nv_trt_llm_*`
and `nv_inference_*`, trtllm-serve `trtllm_*`, llama.cpp `llamacpp:*`. Reads engine state only;
never changes it.
"""

import time
from collections.abc import Iterable, Mapping
from typing import assert_never

from .engine import Engine, Histogram
from .spec import Engine as EngineKind
from .spec import ReplicaSpec

Labels = Mapping[str, str]

_HELP: Mapping[str, str] = {
    "vllm:num_requests_running": "Number of requests in model execution batches.",
    "vllm:num_requests_waiting": "Number of requests waiting to be processed.",
    "vllm:kv_cache_usage_perc": "KV-cache usage. 1 means 100 percent usage.",
    "vllm:lora_requests_info": "Running stats on lora requests.",
    "vllm:cache_config_info": "Information of the LLMEngine CacheConfig",
    "vllm:prefix_cache_queries_total": "Prefix cache queries, in terms of number of queried "
    "tokens.",
    "vllm:prefix_cache_hits_total": "Prefix cache hits, in terms of number of cached tokens.",
    "vllm:num_preemptions_total": "Cumulative number of preemption from the engine.",
    "vllm:prompt_tokens_total": "Number of prefill tokens processed.",
    "vllm:generation_tokens_total": "Number of generation tokens processed.",
    "vllm:request_success_total": "Count of successfully processed requests.",
    "vllm:time_to_first_token_seconds": "Histogram of time to first token in seconds.",
    "vllm:e2e_request_latency_seconds": "Histogram of e2e request latency in seconds.",
    "sglang:num_running_reqs": "The number of running requests.",
    "sglang:num_queue_reqs": "The number of requests in the waiting queue.",
    "sglang:token_usage": "The token usage.",
    "sglang:num_used_tokens": "The number of used tokens.",
    "sglang:max_total_num_tokens": "Maximum total number of tokens in the KV cache pool.",
    "sglang:cache_hit_rate": "The prefix cache hit rate.",
    "sglang:cache_config_info": "Cache configuration.",
    "sglang:prompt_tokens_total": "Number of prefill tokens processed.",
    "sglang:generation_tokens_total": "Number of generation tokens processed.",
    "sglang:num_requests_total": "Number of requests processed.",
    "sglang:num_retracted_requests_total": "Total number of retracted requests.",
    "sglang:time_to_first_token_seconds": "Histogram of time to first token in seconds.",
    "sglang:e2e_request_latency_seconds": "Histogram of End-to-end request latency in seconds",
    "tgi_queue_size": "Current queue size",
    "tgi_batch_current_size": "Current batch size",
    "tgi_batch_current_max_tokens": "Maximum tokens for the current batch",
    "tgi_request_count": "Total number of requests",
    "tgi_request_success": "Number of successful requests",
    "tgi_request_duration": "Request duration",
    "nv_trt_llm_request_metrics": "TRT LLM request metrics",
    "nv_trt_llm_kv_cache_block_metrics": "TRT LLM KV cache block metrics",
    "nv_inference_pending_request_count": "Instantaneous number of pending requests awaiting "
    "execution per-model.",
    "nv_inference_request_success": "Number of successful inference requests, all batch sizes",
    "trtllm_num_requests_waiting": "Number of requests waiting.",
    "trtllm_num_requests_running": "Number of requests running.",
    "trtllm_kv_cache_utilization": "KV cache utilization.",
    "trtllm_kv_cache_tokens_per_block": "Tokens per KV cache block.",
    "trtllm_kv_cache_max_blocks": "Maximum number of KV cache blocks.",
    "trtllm_kv_cache_hit_rate": "KV cache reuse hit rate.",
    "trtllm_time_to_first_token_seconds": "Histogram of time to first token in seconds.",
    "llamacpp:prompt_tokens_total": "Number of prompt tokens processed.",
    "llamacpp:tokens_predicted_total": "Number of generation tokens processed.",
    "llamacpp:n_decode_total": "Total number of llama_decode() calls",
    "llamacpp:prompt_tokens_seconds": "Average prompt throughput in tokens/s.",
    "llamacpp:predicted_tokens_seconds": "Average generation throughput in tokens/s.",
    "llamacpp:n_busy_slots_per_decode": "Average number of busy slots per llama_decode() call",
    "llamacpp:requests_processing": "Number of requests processing.",
    "llamacpp:requests_deferred": "Number of requests deferred.",
}


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, samples: Iterable[tuple[Labels, float]]) -> None:
        self.lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} {kind}"]
        self.lines += [f"{name}{_labels(labels)} {_number(v)}" for labels, v in samples]

    def gauge(self, name: str, labels: Labels, value: float) -> None:
        self.family(name, "gauge", [(labels, value)])

    def counter(self, name: str, labels: Labels, value: float) -> None:
        self.family(name, "counter", [(labels, value)])

    def histogram(self, name: str, labels: Labels, hist: Histogram) -> None:
        self.lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, count in zip(hist.buckets, hist.counts, strict=True):
            cumulative += count
            le = {**labels, "le": _number(bound)}
            self.lines.append(f"{name}_bucket{_labels(le)} {_number(cumulative)}")
        inf = {**labels, "le": "+Inf"}
        self.lines.append(f"{name}_bucket{_labels(inf)} {_number(hist.count)}")
        self.lines.append(f"{name}_sum{_labels(labels)} {_number(hist.total)}")
        self.lines.append(f"{name}_count{_labels(labels)} {_number(hist.count)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value))


def render_metrics(engine: Engine, spec: ReplicaSpec) -> str:
    out = _Exposition()
    match spec.engine:
        case EngineKind.VLLM:
            _vllm(out, engine, spec)
        case EngineKind.SGLANG:
            _sglang(out, engine, spec)
        case EngineKind.TGI:
            _tgi(out, engine)
        case EngineKind.TRITON:
            _triton(out, engine)
        case EngineKind.TRTLLM:
            _trtllm(out, engine, spec)
        case EngineKind.LLAMACPP:
            _llamacpp(out, engine)
        case unreachable:
            assert_never(unreachable)
    return out.text()


def _vllm(out: _Exposition, engine: Engine, spec: ReplicaSpec) -> None:
    c, p = engine.counters, engine.profile
    labels = {"model_name": spec.model, "engine": "0"}
    out.gauge("vllm:num_requests_running", labels, len(engine.running))
    out.gauge("vllm:num_requests_waiting", labels, len(engine.waiting))
    out.gauge("vllm:kv_cache_usage_perc", labels, engine.pool.usage)
    if spec.adapters:
        running, waiting = engine.lora_state()
        info = {
            "max_lora": str(spec.max_loras),
            "running_lora_adapters": ",".join(running),
            "waiting_lora_adapters": ",".join(waiting),
        }
        out.gauge("vllm:lora_requests_info", info, time.time())  # value: last update time
    cache = {
        "block_size": str(p.block_size),
        "cache_dtype": "auto",
        "enable_prefix_caching": "True",
        "gpu_memory_utilization": "0.9",
        "num_gpu_blocks": str(p.num_blocks),
        "engine": "0",
    }
    out.gauge("vllm:cache_config_info", cache, 1.0)
    out.counter("vllm:prefix_cache_queries_total", labels, c.prefix_queries)
    out.counter("vllm:prefix_cache_hits_total", labels, c.prefix_hits)
    out.counter("vllm:num_preemptions_total", labels, c.preemptions)
    out.counter("vllm:prompt_tokens_total", labels, c.prompt_tokens)
    out.counter("vllm:generation_tokens_total", labels, c.generation_tokens)
    reasons = [({**labels, "finished_reason": r}, c.finished[r]) for r in ("stop", "length")]
    out.family("vllm:request_success_total", "counter", reasons)
    out.histogram("vllm:time_to_first_token_seconds", labels, c.ttft)
    out.histogram("vllm:e2e_request_latency_seconds", labels, c.e2e)


def _sglang(out: _Exposition, engine: Engine, spec: ReplicaSpec) -> None:
    c, p = engine.counters, engine.profile
    labels = {"model_name": spec.model}
    out.gauge("sglang:num_running_reqs", labels, len(engine.running))
    out.gauge("sglang:num_queue_reqs", labels, len(engine.waiting))
    out.gauge("sglang:token_usage", labels, engine.pool.usage)
    used_tokens = (p.num_blocks - engine.pool.num_free) * p.block_size
    out.gauge("sglang:num_used_tokens", labels, used_tokens)
    out.gauge("sglang:max_total_num_tokens", labels, p.num_blocks * p.block_size)
    out.gauge("sglang:cache_hit_rate", labels, _ratio(c.prefix_hits, c.prefix_queries))
    cache = {**labels, "page_size": str(p.block_size), "num_pages": str(p.num_blocks)}
    out.gauge("sglang:cache_config_info", cache, 1.0)
    out.counter("sglang:prompt_tokens_total", labels, c.prompt_tokens)
    out.counter("sglang:generation_tokens_total", labels, c.generation_tokens)
    out.counter("sglang:num_requests_total", labels, c.finished.total())
    out.counter("sglang:num_retracted_requests_total", labels, c.preemptions)
    out.histogram("sglang:time_to_first_token_seconds", labels, c.ttft)
    out.histogram("sglang:e2e_request_latency_seconds", labels, c.e2e)


def _tgi(out: _Exposition, engine: Engine) -> None:
    c = engine.counters
    out.gauge("tgi_queue_size", {}, len(engine.waiting))
    out.gauge("tgi_batch_current_size", {}, len(engine.running))
    out.gauge("tgi_batch_current_max_tokens", {}, sum(len(s.tokens) for s in engine.running))
    out.counter("tgi_request_count", {}, c.finished.total())
    out.counter("tgi_request_success", {}, c.finished["stop"] + c.finished["length"])
    out.histogram("tgi_request_duration", {}, c.e2e)


def _triton(out: _Exposition, engine: Engine) -> None:
    p, pool = engine.profile, engine.pool
    base = {"model": "tensorrt_llm", "version": "1"}
    prefilling = sum(1 for s in engine.running if s.first_token_at is None)
    requests = {
        "active": len(engine.running) + len(engine.waiting),
        "max": p.max_num_seqs,
        "scheduled": len(engine.running),
        "context": prefilling,
        "generation": len(engine.running) - prefilling,
        "waiting": len(engine.waiting),
    }
    out.family(
        "nv_trt_llm_request_metrics",
        "gauge",
        [({**base, "request_type": k}, v) for k, v in requests.items()],
    )
    blocks = {
        "max": p.num_blocks,
        "free": pool.num_free,
        "used": p.num_blocks - pool.num_free,
        "tokens_per": p.block_size,
        "fraction": pool.usage,
    }
    out.family(
        "nv_trt_llm_kv_cache_block_metrics",
        "gauge",
        [({**base, "kv_cache_block_type": k}, v) for k, v in blocks.items()],
    )
    out.gauge("nv_inference_pending_request_count", base, len(engine.waiting))
    out.counter("nv_inference_request_success", base, engine.counters.finished.total())


def _trtllm(out: _Exposition, engine: Engine, spec: ReplicaSpec) -> None:
    c, p = engine.counters, engine.profile
    labels = {"model_name": spec.model, "engine_type": "trtllm"}
    out.gauge("trtllm_num_requests_waiting", labels, len(engine.waiting))
    out.gauge("trtllm_num_requests_running", labels, len(engine.running))
    out.gauge("trtllm_kv_cache_utilization", labels, engine.pool.usage)
    out.gauge("trtllm_kv_cache_tokens_per_block", labels, p.block_size)
    out.gauge("trtllm_kv_cache_max_blocks", labels, p.num_blocks)
    out.gauge("trtllm_kv_cache_hit_rate", labels, _ratio(c.prefix_hits, c.prefix_queries))
    out.histogram("trtllm_time_to_first_token_seconds", labels, c.ttft)


def _llamacpp(out: _Exposition, engine: Engine) -> None:
    c = engine.counters
    out.counter("llamacpp:prompt_tokens_total", {}, c.prompt_tokens)
    out.counter("llamacpp:tokens_predicted_total", {}, c.generation_tokens)
    out.counter("llamacpp:n_decode_total", {}, c.steps)
    out.gauge("llamacpp:prompt_tokens_seconds", {}, _ratio(c.prompt_tokens, c.busy_s))
    out.gauge("llamacpp:predicted_tokens_seconds", {}, _ratio(c.generation_tokens, c.busy_s))
    out.gauge("llamacpp:n_busy_slots_per_decode", {}, _ratio(c.scheduled_seqs, c.steps))
    out.gauge("llamacpp:requests_processing", {}, len(engine.running))
    out.gauge("llamacpp:requests_deferred", {}, len(engine.waiting))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0
