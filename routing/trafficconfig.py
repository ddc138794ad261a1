"""Parse ``TrafficPolicy`` (``sluice.dev/v1alpha1``): caps, queue, saturation, fairness and
batching for the InferencePools it targets, with per-model overrides.

```yaml
spec:
  targetRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: llama}]
  concurrency: {maxPerEndpoint: 36, maxPerModel: 200, maxPrefillPerEndpoint: 2,
                sheddableLimit: 0.5,            # fixed, or where the adaptive limit starts
                sheddableTTFTObjective: 300ms}  # adapt it: non-sheddable TTFT p90 under this
  queue: {maxRequests: 1000, maxBytes: 268435456, ttl: 30s}
  saturation: {queueDepthThreshold: 5, kvCacheThreshold: 0.8, headroom: 0.1}
  packing: {batchTarget: 32}
  fairness: {header: x-gateway-inference-fairness-id}
  embeddings: {maxBatchSize: 32, maxBatchTokens: 16384, maxQueueDelay: 5ms}
  autoscaling: {targetPerReplica: 32, headroom: 0.2, minReplicas: 0, maxReplicas: 10,
                stableWindow: 60s, panicWindow: 6s, panicThreshold: 2, scaleDownDelay: 30s}
  overrides:
  - model: sql-lora
    concurrency: {maxPerModel: 50}
```
"""

from __future__ import annotations

import dataclasses

from routing import model as m
from routing.autoscale import AutoscaleSpec
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
        autoscaling=_autoscaling(spec.opt_mapping("autoscaling"), limits),
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
        max_prefill_per_endpoint=conc.number(
            "maxPrefillPerEndpoint", base.max_prefill_per_endpoint, lo=1
        ),
        sheddable_limit=_fraction(conc, "sheddableLimit", base.sheddable_limit),
        sheddable_ttft_objective_s=conc.duration(
            "sheddableTTFTObjective", base.sheddable_ttft_objective_s, positive=True
        ),
        queue_max_requests=queue.number("maxRequests", base.queue_max_requests, lo=0) or 0,
        queue_max_bytes=queue.number("maxBytes", base.queue_max_bytes, lo=0) or 0,
        queue_ttl_s=queue.duration("ttl", base.queue_ttl_s),
        queue_depth_threshold=_number(sat, "queueDepthThreshold", base.queue_depth_threshold),
        kv_cache_threshold=_number(sat, "kvCacheThreshold", base.kv_cache_threshold),
        headroom=_number(sat, "headroom", base.headroom),
        batch_target=pack.number("batchTarget", base.batch_target, lo=1),
    )
    if out.sheddable_limit is not None and out.max_per_endpoint is None:
        conc.sink.error(
            conc.sub("sheddableLimit"), "needs maxPerEndpoint: it is a fraction of the slots"
        )
    if out.sheddable_ttft_objective_s is not None and out.max_per_endpoint is None:
        conc.sink.error(
            conc.sub("sheddableTTFTObjective"),
            "needs maxPerEndpoint: it adapts a fraction of the slots",
        )
    if not 0 < out.kv_cache_threshold <= 1:
        sat.sink.error(sat.sub("kvCacheThreshold"), "must be in (0, 1]")
    for reader in (conc, queue, sat, pack):
        reader.finish()
    return out


def _fraction(r: Reader, key: str, default: float | None) -> float | None:
    value = r.raw(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        r.sink.error(r.sub(key), "must be a number in (0, 1]")
        return default
    return float(value)


def _number(r: Reader, key: str, default: float) -> float:
    value = r.raw(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        r.sink.error(r.sub(key), "must be a number >= 0")
        return default
    return float(value)


def _embeddings(r: Reader) -> m.EmbeddingBatching:
    base = m.EmbeddingBatching()
    out = m.EmbeddingBatching(
        enabled=r.flag("enabled", base.enabled),
        max_batch_size=r.number("maxBatchSize", base.max_batch_size, lo=1) or 1,
        max_batch_tokens=r.number("maxBatchTokens", base.max_batch_tokens, lo=1) or 1,
        max_queue_delay_s=r.duration("maxQueueDelay", base.max_queue_delay_s),
    )
    r.finish()
    return out


def _autoscaling(r: Reader | None, limits: m.TrafficLimits) -> AutoscaleSpec | None:
    if r is None:
        return None
    base = AutoscaleSpec(target_per_replica=float(limits.max_per_endpoint or 32))
    target = _number(r, "targetPerReplica", base.target_per_replica)
    min_replicas = r.number("minReplicas", base.min_replicas, lo=0) or 0
    max_replicas = r.number("maxReplicas", base.max_replicas, lo=1) or base.max_replicas
    windows = (
        r.duration("stableWindow", base.stable_window_s),
        r.duration("panicWindow", base.panic_window_s),
        r.duration("scaleDownDelay", base.scale_down_delay_s),
    )
    headroom = _number(r, "headroom", base.headroom)
    threshold = _number(r, "panicThreshold", base.panic_threshold)
    r.finish()
    try:
        return AutoscaleSpec(
            target_per_replica=target if target > 0 else base.target_per_replica,
            headroom=headroom,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            stable_window_s=windows[0],
            panic_window_s=windows[1],
            scale_down_delay_s=windows[2],
            panic_threshold=threshold,
        )
    except ValueError as exc:
        r.sink.error(r.path, str(exc))
        return None
