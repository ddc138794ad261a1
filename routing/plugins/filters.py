"""Filters: each narrows the candidate endpoints, never widens them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter, contains

from routing.picking import EndpointSnapshot, PickRequest

__all__ = [
    "HealthyFilter",
    "HotSpotFilter",
    "LeaderFilter",
    "ModelFilter",
    "PackingFilter",
    "SubsetFilter",
]

Endpoints = Sequence[EndpointSnapshot]
_HEALTHY = attrgetter("healthy")
_GROUP = attrgetter("group")
_MODELS = attrgetter("models")


@dataclass(frozen=True, slots=True)
class HealthyFilter:
    """Drops endpoints that failed health checks or are ejected. No parameters."""

    name: str = "healthy"

    def filter(self, req: PickRequest, eps: Endpoints) -> Endpoints:
        if all(map(_HEALTHY, eps)):  # the common case, checked in C
            return eps
        return [e for e in eps if e.healthy]


@dataclass(frozen=True, slots=True)
class LeaderFilter:
    """Multi-host replicas (LeaderWorkerSet): keeps only group leaders whose whole group is
    healthy, so traffic never reaches a worker or a group missing a member. Endpoints without
    a group pass."""

    name: str = "leader"

    def filter(self, req: PickRequest, eps: Endpoints) -> Endpoints:
        if not any(map(_GROUP, eps)):  # no multi-host replicas here (checked in C)
            return eps
        return [e for e in eps if e.group is None or (e.is_leader and e.group_healthy)]


@dataclass(frozen=True, slots=True)
class SubsetFilter:
    """Honours an explicit endpoint subset (the Inference Extension's
    ``test-epp-endpoint-selection`` header, or a subset hint). No subset: all pass."""

    name: str = "subset"

    def filter(self, req: PickRequest, eps: Endpoints) -> Endpoints:
        subset = req.subset
        if subset is None:
            return eps
        return [e for e in eps if e.key in subset]


@dataclass(frozen=True, slots=True)
class ModelFilter:
    """Keeps endpoints known to serve the requested model (base model or adapter). Endpoints
    whose model list is unknown pass, and if nobody is known to serve it, all pass: a model
    list is a hint, not a gate."""

    name: str = "model"

    def filter(self, req: PickRequest, eps: Endpoints) -> Endpoints:
        model = req.model
        if all(map(contains, map(_MODELS, eps), repeat(model))):  # the common case, in C
            return eps
        serving = [e for e in eps if not e.models or model in e.models]
        return serving or eps


@dataclass(frozen=True, slots=True)
class HotSpotFilter:
    """Keeps endpoints whose load is within ``ratio`` × or ``slack`` requests of the least
    loaded one (whichever allows more).

    The hot-spot guard: affinity scorers (prefix, LoRA, session) would otherwise send a burst
    of similar requests to one endpoint while others idle. Like SGLang's cache-aware balance
    thresholds (absolute and relative), affinity may cost at most this much imbalance. Load
    counts the gateway's own in-flight requests, updated at pick time, so a burst arriving
    between two scrapes is spread too. The least loaded endpoint always passes.

    The default slack is 8 requests: in a continuous-batching server a few more requests in
    the batch cost a fraction of a millisecond per step, while a prefix-cache miss costs a
    whole prefill; with slack 2 the prefix-routing scenario at 90% load had 85% cache hits
    and p90 TTFT 191 ms, with slack 8 97% and 39 ms (docs/reports/prefix-routing/). SGLang's
    and vllm-router's cache-aware thresholds are looser still (32 and 64 requests)."""

    ratio: float = 1.25
    slack: float = 8.0
    # optional bounded load around the mean: at most max(ratio × mean, mean + mean_slack)
    mean_slack: float | None = None
    name: str = "hot-spot"

    def filter(self, req: PickRequest, eps: Endpoints) -> Endpoints:
        if len(eps) < 2:
            return eps
        # EndpointSnapshot.load, inlined: this runs for every candidate of every request
        loads = [
            e.in_flight if e.in_flight > (s := (e.waiting or 0.0) + (e.running or 0.0)) else s
            for e in eps
        ]
        least = min(loads)
        limit = max(least * self.ratio, least + self.slack)
        if self.mean_slack is not None:  # never below the least loaded: mean >= least
            mean = sum(loads) / len(loads)
            limit = min(limit, max(mean * self.ratio, mean + self.mean_slack))
        if max(loads) <= limit:
            return eps
        return [e for e, load in zip(eps, loads, strict=True) if load <= limit]


@dataclass(frozen=True, slots=True)
class PackingFilter:
    """Batching-friendly packing: while some endpoint that already holds the request's prefix
    or runs its LoRA adapter is below ``batch_target`` requests, keep only those endpoints,
    so continuous batches fill with compatible work; once they reach the target, everyone
    is eligible again (no hot-spotting). Without affinity anywhere, all pass."""

    batch_target: int = 32
    name: str = "packing"

    def filter(self, req: PickRequest, eps: Endpoints) -> Endpoints:
        adapter = req.adapter
        target = self.batch_target
        packed = [
            e
            for e in eps
            if (e.prefix_blocks > 0 or (adapter is not None and adapter in e.lora_running))
            and max(e.in_flight, (e.waiting or 0.0) + (e.running or 0.0)) < target
        ]
        return packed or eps
