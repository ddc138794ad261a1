"""Scorers: each maps candidate endpoints to [0, 1], higher is better.

Unknown signals (stale or never scraped metrics) score 0: an endpoint we know nothing about
is never taken for idle. Min-max scorers give 1.0 to all when every candidate is equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from routing.picking import EndpointSnapshot, PickRequest

__all__ = [
    "InFlightScorer",
    "KVCacheScorer",
    "LoraAffinityScorer",
    "PrefixCacheScorer",
    "QueueScorer",
    "RunningScorer",
    "SessionAffinityScorer",
    "TokenLoadScorer",
]

Endpoints = tuple[EndpointSnapshot, ...]


def _min_max_lower_is_better(
    eps: Endpoints, value: Callable[[EndpointSnapshot], float | None]
) -> dict[str, float]:
    return _normalise([(e.key, value(e)) for e in eps])


def _normalise(values: Sequence[tuple[str, float | None]]) -> dict[str, float]:
    """Min-max, lower is better: the lowest value scores 1, the highest 0, unknown 0."""
    known = [v for _, v in values if v is not None]
    if not known:
        return {k: 0.0 for k, _ in values}
    lo, hi = min(known), max(known)
    if hi == lo:
        return {k: 0.0 if v is None else 1.0 for k, v in values}
    span = hi - lo
    return {k: 0.0 if v is None else (hi - v) / span for k, v in values}


def _smooth(values: Sequence[tuple[str, float | None]], half: float) -> dict[str, float]:
    """``half / (half + v)``: 1 when idle, 0.5 at ``half``, falling smoothly; unknown 0.

    Unlike min-max (the Inference Extension's queue scorer), a difference of one or two
    requests costs a fraction of a point, not the whole weight, so a prefix or adapter
    affinity is not thrown away for a queue one request longer; large imbalances are the
    hot-spot guard's to stop."""
    return {k: 0.0 if v is None else half / (half + max(0.0, v)) for k, v in values}


@dataclass(frozen=True, slots=True)
class QueueScorer:
    """Shorter server queue is better: ``num_requests_waiting``, plus the gateway's own
    in-flight requests beyond what the server already reports running (they are on their way
    into that queue), scored ``half / (half + queue)`` (1 when empty, 0.5 at ``half``)."""

    half: float = 4.0
    name: str = "queue"

    def score(self, req: PickRequest, eps: Endpoints) -> Mapping[str, float]:
        values: list[tuple[str, float | None]] = []
        for e in eps:
            waiting = e.waiting
            if waiting is None:
                values.append((e.key, None))
                continue
            unseen = e.in_flight - waiting - (e.running or 0.0)
            values.append((e.key, waiting + unseen if unseen > 0 else waiting))
        return _smooth(values, self.half)


@dataclass(frozen=True, slots=True)
class RunningScorer:
    """Fewer running requests is better: min-max over ``num_requests_running``."""

    name: str = "running"

    def score(self, req: PickRequest, eps: Endpoints) -> Mapping[str, float]:
        return _min_max_lower_is_better(eps, lambda e: e.running)


@dataclass(frozen=True, slots=True)
class KVCacheScorer:
    """More free KV cache is better: 1 − KV utilisation."""

    name: str = "kv-cache"

    def score(self, req: PickRequest, eps: Endpoints) -> Mapping[str, float]:
        return {e.key: 0.0 if e.kv_usage is None else 1.0 - e.kv_usage for e in eps}


@dataclass(frozen=True, slots=True)
class InFlightScorer:
    """Fewer requests in flight from this gateway is better, scored ``half / (half + n)``.
    Known at pick time, so it separates endpoints that look alike between two scrapes."""

    half: float = 8.0
    name: str = "in-flight"

    def score(self, req: PickRequest, eps: Endpoints) -> Mapping[str, float]:
        return _smooth([(e.key, e.in_flight) for e in eps], self.half)


@dataclass(frozen=True, slots=True)
class TokenLoadScorer:
    """Fewer tokens in flight from this gateway is better: 1 − min(1, tokens / threshold)."""

    threshold_tokens: int = 131_072
    name: str = "token-load"

    def score(self, req: PickRequest, eps: Endpoints) -> Mapping[str, float]:
        return {e.key: 1.0 - min(1.0, e.in_flight_tokens / self.threshold_tokens) for e in eps}


@dataclass(frozen=True, slots=True)
class PrefixCacheScorer:
    """Longer cached prompt prefix is better: matched blocks / prompt blocks, from the
    gateway's approximate block-hash index (``routing.prefix``)."""

    name: str = "prefix-cache"

    def score(self, req: PickRequest, eps: Endpoints) -> Mapping[str, float]:
        total = req.prompt_blocks
        if total <= 0:
            return dict.fromkeys((e.key for e in eps), 0.0)
        return {e.key: e.prefix_blocks / total if e.prefix_blocks < total else 1.0 for e in eps}


@dataclass(frozen=True, slots=True)
class LoraAffinityScorer:
    """Prefer endpoints already running the request's adapter (as the Inference Extension):
    1.0 running; 0.8 a free adapter slot; 0.6 the adapter already waiting there; 0.0 full.
    Requests for a base model score 1.0 everywhere."""

    name: str = "lora-affinity"

    def score(self, req: PickRequest, eps: Endpoints) -> Mapping[str, float]:
        adapter = req.adapter
        if adapter is None:
            return {e.key: 1.0 for e in eps}
        out = {}
        for e in eps:
            if adapter in e.lora_running:
                out[e.key] = 1.0
            elif e.max_lora is None:
                out[e.key] = 0.5  # unknown adapter state
            elif len(e.lora_running) < e.max_lora:
                out[e.key] = 0.8
            elif adapter in e.lora_waiting:
                out[e.key] = 0.6
            else:
                out[e.key] = 0.0
        return out


@dataclass(frozen=True, slots=True)
class SessionAffinityScorer:
    """Requests of one session (``x-session-id``) prefer the endpoint the session hashes to
    on the pool's consistent-hash ring (1.0; others 0.0). Stable across restarts and gateway
    replicas; removing an endpoint moves only its sessions. No session: 0.0 everywhere."""

    name: str = "session-affinity"

    def score(self, req: PickRequest, eps: Endpoints) -> Mapping[str, float]:
        target = req.session_endpoint
        return {e.key: 1.0 if e.key == target else 0.0 for e in eps}
