"""Pool gauges and pick counters, computed when /metrics is scraped (no per-request cost
beyond plain integer counts): the Inference Extension's ``inference_pool_*`` names,
``sluice_pool_*`` for demand and the replica recommendation that autoscalers read, and what
each decision's trace says (``sluice_picks_total`` and ``sluice_pick_*``). Labels are pool and
endpoint names from the config, and filter names from the pool's profile."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.context import ProxyContext

__all__ = ["PoolCollector"]


class PoolCollector(Collector):
    def __init__(self, ctx: ProxyContext) -> None:
        self._ctx = ctx

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        ctx = self._ctx
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:
            return
        f = {
            "queue": GaugeMetricFamily(
                "inference_pool_average_queue_size",
                "Average number of requests waiting in the pool's model servers.",
                labels=["name"],
            ),
            "kv": GaugeMetricFamily(
                "inference_pool_average_kv_cache_utilization",
                "Average KV-cache utilisation of the pool's model servers (0..1).",
                labels=["name"],
            ),
            "ready": GaugeMetricFamily(
                "inference_pool_ready_pods", "Ready endpoints of the pool.", labels=["name"]
            ),
            "per_pod": GaugeMetricFamily(
                "inference_pool_per_pod_queue_size",
                "Requests waiting in each model server of the pool.",
                labels=["name", "model_server_pod"],
            ),
            "demand": GaugeMetricFamily(
                "sluice_pool_demand",
                "Requests the pool is asked to hold: gateway queue + in flight or waiting.",
                labels=["pool"],
            ),
            "desired": GaugeMetricFamily(
                "sluice_pool_desired_replicas",
                "Recommended replicas, safety margin (headroom) included.",
                labels=["pool"],
            ),
            "panic": GaugeMetricFamily(
                "sluice_pool_autoscale_panic", "1 while the recommendation is in panic mode.",
                labels=["pool"],
            ),
            "in_flight": GaugeMetricFamily(
                "sluice_pool_in_flight_requests", "Requests in flight from this gateway.",
                labels=["pool"],
            ),
            "in_flight_tokens": GaugeMetricFamily(
                "sluice_pool_in_flight_tokens", "Estimated tokens in flight from this gateway.",
                labels=["pool"],
            ),
            "backend_waiting": GaugeMetricFamily(
                "sluice_pool_backend_waiting", "Requests waiting inside the model servers.",
                labels=["pool"],
            ),
            "backend_running": GaugeMetricFamily(
                "sluice_pool_backend_running", "Requests running inside the model servers.",
                labels=["pool"],
            ),
        }  # fmt: skip
        table = ctx.holder.table
        for name, settings in table.pools.items():
            target = ctx.pools.current(name)
            keys = ctx.pools.view(target).keys if target is not None else ()
            queues, kvs = [], []
            for key in keys:
                state = ctx.pools.scraper.states.get(key)
                fresh = state is not None and now - state.updated_at <= settings.staleness_s
                if fresh and state is not None and state.metrics is not None:
                    if state.metrics.waiting is not None:
                        queues.append(state.metrics.waiting)
                        f["per_pod"].add_metric([name, key], state.metrics.waiting)
                    if state.metrics.kv_usage is not None:
                        kvs.append(state.metrics.kv_usage)
            f["queue"].add_metric([name], sum(queues) / len(queues) if queues else 0.0)
            f["kv"].add_metric([name], sum(kvs) / len(kvs) if kvs else 0.0)
            demand = ctx.autoscaling.demand(settings)
            f["ready"].add_metric([name], demand.ready)
            f["demand"].add_metric([name], demand.demand)
            f["in_flight"].add_metric([name], demand.in_flight)
            f["backend_waiting"].add_metric([name], demand.backend_waiting)
            f["backend_running"].add_metric([name], demand.backend_running)
            tokens = sum(ctx.pools.in_flight_tokens.get(k, 0) for k in keys)
            f["in_flight_tokens"].add_metric([name], tokens)
            latest = ctx.autoscaling.latest.get(name)
            if latest is not None:
                f["desired"].add_metric([name], latest[1].desired)
                f["panic"].add_metric([name], 1.0 if latest[1].panic else 0.0)
        yield from f.values()
        yield from _pick_counters(ctx)


def _pick_counters(ctx: ProxyContext) -> Iterator[CounterMetricFamily]:
    picks = CounterMetricFamily(
        "sluice_picks", "Endpoint picks for InferencePools, by pool and result (ok, none).",
        labels=["pool", "result"],
    )  # fmt: skip
    fail_open = CounterMetricFamily(
        "sluice_pick_fail_open",
        "Picks made without fresh model-server signals (FailOpen: least-request), by pool.",
        labels=["pool"],
    )
    removed = CounterMetricFamily(
        "sluice_pick_filtered_endpoints",
        "Candidate endpoints removed by each filter of the pool's profile (hot-spot: affinity "
        "overridden to bound imbalance; healthy: failing endpoints; ...).",
        labels=["pool", "filter"],
    )
    prompt = CounterMetricFamily(
        "sluice_pick_prompt_blocks",
        "Prompt blocks (prefix-hash blocks) of the requests picked, by pool.",
        labels=["pool"],
    )
    prefix = CounterMetricFamily(
        "sluice_pick_prefix_blocks",
        "Prompt blocks the chosen endpoint was predicted to hold in its prefix cache, by pool "
        "(divided by sluice_pick_prompt_blocks_total: the predicted prefix-cache hit rate).",
        labels=["pool"],
    )
    endpoints = CounterMetricFamily(
        "sluice_endpoint_picks", "Picks per endpoint (how evenly a pool is used).",
        labels=["pool", "endpoint"],
    )  # fmt: skip
    for pool, counts in ctx.pools.picks.items():
        picks.add_metric([pool, "ok"], counts.ok)
        picks.add_metric([pool, "none"], counts.none)
        fail_open.add_metric([pool], counts.fail_open)
        prompt.add_metric([pool], counts.prompt_blocks)
        prefix.add_metric([pool], counts.prefix_blocks)
        for name, n in counts.removed.items():
            removed.add_metric([pool, name], n)
        for key, n in counts.endpoints.items():
            endpoints.add_metric([pool, key], n)
    yield from (picks, fail_open, removed, prompt, prefix, endpoints)
