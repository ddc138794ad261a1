"""Parse ``TrafficPolicy`` (``sluice.dev/v1alpha1``): caps, queue, saturation, fairness and
batching for the InferencePools it targets, with per-model overrides.

```yaml
spec:
  targetRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: llama}]
  concurrency: {maxPerEndpoint: 36, maxPerModel: 200}
  queue: {maxRequests: 1000, maxBytes: 268435456, ttl: 30s}
  saturation: {queueDepthThreshold: 5, kvCacheThreshold: 0.8, headroom: 0.1}
  packing: {batchTarget: 32}
  fairness: {header: x-gateway-inference-fairness-id}
  embeddings: {maxBatchSize: 32, maxBatchTokens: 16384, maxQueueDelay: 5ms}
  overrides:
  - model: sql-lora
    concurrency: {maxPerModel: 50}
```
"""

from __future__ import annotations

import dataclasses

from routing import model as m
from routing.durations import parse_duration
from routing.reader import Reader

__all__ = ["parse_traffic_policy"]


def parse_traffic_policy(r: Reader, meta: m.Meta) -> m.TrafficPolicy:
    spec = r.mapping("spec")

    def target(e: Reader) -> str:
        if e.req_str("kind") != "InferencePool":
            e.sink.error(e.sub("kind"), "a TrafficPolicy targets InferencePools")
        e.ignore("group")
        return e.req_str("name")

    pools = spec.list_of("targetRefs", target)
    limits = _limits(spec, m.TrafficLimits())

    def override(e: Reader) -> tuple[str, m.TrafficLimits]:
        return (e.req_str("model"), _limits(e, limits))

    overrides = spec.list_of("overrides", override)
    fairness = spec.mapping("fairness")
    header = fairness.string("header", "x-gateway-inference-fairness-id") or ""
    fairness.finish()
    policy = m.TrafficPolicy(
        meta=meta,
        pools=pools,
        limits=limits,
        model_limits=overrides,
        fairness_header=header.lower(),
        embeddings=_embeddings(spec.mapping("embeddings")),
    )
    spec.finish()
    return policy


def _limits(r: Reader, base: m.TrafficLimits) -> m.TrafficLimits:
    conc, queue = r.mapping("concurrency"), r.mapping("queue")
    sat, pack = r.mapping("saturation"), r.mapping("packing")
    out = dataclasses.replace(
        base,
        max_per_endpoint=conc.number("maxPerEndpoint", base.max_per_endpoint, lo=1),
        max_per_model=conc.number("maxPerModel", base.max_per_model, lo=1),
        queue_max_requests=queue.number("maxRequests", base.queue_max_requests, lo=0) or 0,
        queue_max_bytes=queue.number("maxBytes", base.queue_max_bytes, lo=0) or 0,
        queue_ttl_s=_seconds(queue, "ttl", base.queue_ttl_s),
        queue_depth_threshold=_number(sat, "queueDepthThreshold", base.queue_depth_threshold),
        kv_cache_threshold=_number(sat, "kvCacheThreshold", base.kv_cache_threshold),
        headroom=_number(sat, "headroom", base.headroom),
        batch_target=pack.number("batchTarget", base.batch_target, lo=1),
    )
    if not 0 < out.kv_cache_threshold <= 1:
        sat.sink.error(sat.sub("kvCacheThreshold"), "must be in (0, 1]")
    for reader in (conc, queue, sat, pack):
        reader.finish()
    return out


def _number(r: Reader, key: str, default: float) -> float:
    value = r.raw(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        r.sink.error(r.sub(key), "must be a number >= 0")
        return default
    return float(value)


def _seconds(r: Reader, key: str, default: float) -> float:
    text = r.string(key)
    if text is None:
        return default
    try:
        return parse_duration(text)
    except ValueError as exc:
        r.sink.error(r.sub(key), str(exc))
        return default


def _embeddings(r: Reader) -> m.EmbeddingBatching:
    base = m.EmbeddingBatching()
    out = m.EmbeddingBatching(
        enabled=r.flag("enabled", base.enabled),
        max_batch_size=r.number("maxBatchSize", base.max_batch_size, lo=1) or 1,
        max_batch_tokens=r.number("maxBatchTokens", base.max_batch_tokens, lo=1) or 1,
        max_queue_delay_s=_seconds(r, "maxQueueDelay", base.max_queue_delay_s),
    )
    r.finish()
    return out
