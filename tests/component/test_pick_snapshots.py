"""The gateway's endpoint snapshots carry each signal in the field named for it
(``PoolRuntime.snapshots`` builds them positionally, for speed)."""

from __future__ import annotations

import asyncio

from gateway.pools import PoolRuntime
from gateway.scraper import EndpointState
from routing import model as m
from routing.backends import Endpoint, PoolTarget
from routing.plugins.registry import BUILTIN_PROFILES
from routing.pools import PoolSettings
from routing.presets import ServerMetrics

ENGINE_LABEL = "inference.networking.k8s.io/engine-type"


def _target() -> PoolTarget:
    pool = m.InferencePool(
        meta=m.Meta(name="p", namespace="default"),
        selector=m.LabelSelector(match_labels=(("app", "p"),)),
        target_ports=(8000,),
    )
    endpoints = (
        Endpoint(address="10.0.0.1", port=8000, labels=((ENGINE_LABEL, "sglang"),)),
        Endpoint(address="10.0.0.2", port=8000),
        Endpoint(address="10.0.0.3", port=8000),
    )  # fmt: skip
    return PoolTarget(name="default/p", endpoints=endpoints, pool=pool)


async def test_snapshot_fields_hold_their_own_signals():
    target = _target()
    settings = PoolSettings(key=target.name, profile=BUILTIN_PROFILES["default"],
                            failure_mode="FailOpen")  # fmt: skip
    pools = PoolRuntime()
    now = asyncio.get_running_loop().time()
    pools.scraper.states["10.0.0.1:8000"] = EndpointState(
        metrics=ServerMetrics(waiting=3.0, running=7.0, kv_usage=0.25,
                              lora_running=frozenset({"x"}), lora_waiting=frozenset({"y"}),
                              max_lora=4),
        updated_at=now + 60, healthy=True, models=frozenset({"base", "x"}), held_average=6.5,
    )  # fmt: skip
    pools.scraper.states["10.0.0.2:8000"] = EndpointState(
        metrics=ServerMetrics(waiting=9.0, running=1.0, kv_usage=0.5),
        updated_at=now - 3600,  # stale: signals unknown
        healthy=False,
        held_average=2.0,
    )
    pools.in_flight_tokens["10.0.0.1:8000"] = 1234
    snaps = pools.snapshots(
        target, settings, ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"],
        {"10.0.0.1:8000": 5}, {"10.0.0.1:8000": 11},
    )  # fmt: skip
    fresh, stale, never = snaps
    assert fresh._asdict() == {
        "key": "10.0.0.1:8000", "engine": "sglang", "healthy": True, "waiting": 3.0,
        "running": 7.0, "kv_usage": 0.25, "lora_running": frozenset({"x"}),
        "lora_waiting": frozenset({"y"}), "max_lora": 4, "in_flight": 5,
        "in_flight_tokens": 1234, "prefix_blocks": 11, "group": None, "is_leader": True,
        "group_healthy": True, "models": frozenset({"base", "x"}), "accelerator": None,
        "held_average": 6.5,
    }  # fmt: skip
    assert (stale.healthy, stale.waiting, stale.running, stale.kv_usage) == (
        False,
        None,
        None,
        None,
    )
    assert (stale.in_flight, stale.prefix_blocks, stale.engine) == (0, 0, "vllm")
    assert stale.held_average is None  # a stale average is unknown too
    assert never.healthy
    assert never.waiting is None
    assert never.models == frozenset()
