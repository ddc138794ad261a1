"""Scorers: each maps candidate endpoints to [0, 1], higher is better.

Unknown signals (stale or never scraped metrics) score 0: an endpoint we know nothing about
is never taken for idle. Min-max scorers give 1.0 to all when every candidate is equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

from routing.picking import EndpointSnapshot, PickRequest

__all__ = [
    "InFlightScorer",
    "KVCacheScorer",
    "LongRunLoadScorer",
    "LoraAffinityScorer",
    "PrefixCacheScorer",
    "QueueScorer",
    "RunningScorer",
    "SessionAffinityScorer",
    "TokenLoadScorer",
]

Endpoints = Sequence[EndpointSnapshot]
Scores = list[float]  # one per candidate, in the candidates' order
_PREFIX_BLOCKS = attrgetter("prefix_blocks")


def _min_max_lower_is_better(values: Sequence[float | None]) -> Scores:
    """Min-max, lower is better: the lowest value scores 1, the highest 0, unknown 0."""
    known = [v for v in values if v is not None]
    if not known:
        return [0.0] * len(values)
    lo, hi = min(known), max(known)
    if hi == lo:
        return [0.0 if v is None else 1.0 for v in values]
    span = hi - lo
    return [0.0 if v is None else (hi - v) / span for v in values]


# Smooth scorers use ``half / (half + v)``: 1 when idle, 0.5 at ``half``, falling smoothly.
# Unlike min-max (the Inference Extension's queue scorer), a difference of one or two requests
# costs a fraction of a point, not the whole weight, so a prefix or adapter affinity is not
# thrown away for a queue one request longer; large imbalances are the hot-spot guard's to stop.


@dataclass(frozen=True, slots=True)
class QueueScorer:
    """Shorter server queue is better: ``num_requests_waiting``, or the gateway's own
    in-flight requests beyond what the server reports running when that is more (they are on
    their way into that queue), scored ``half / (half + queue)``; unknown 0."""

    half: float = 4.0
    name: str = "queue"

    def score(self, req: PickRequest, eps: Endpoints) -> Scores:
        half = self.half
        out = []
        for e in eps:
            waiting = e.waiting
            if waiting is None:
                out.append(0.0)
                continue
            queue = e.in_flight - (e.running or 0.0)  # waiting + requests not yet seen there
            if queue < waiting:
                queue = waiting
            out.append(half / (half + queue) if queue > 0.0 else 1.0)
        return out


@dataclass(frozen=True, slots=True)
class RunningScorer:
    """Fewer running requests is better: min-max over ``num_requests_running``."""

    name: str = "running"

    def score(self, req: PickRequest, eps: Endpoints) -> Scores:
        return _min_max_lower_is_better([e.running for e in eps])


@dataclass(frozen=True, slots=True)
class KVCacheScorer:
    """More free KV cache is better: 1 − KV utilisation (unknown 0)."""

    name: str = "kv-cache"

    def score(self, req: PickRequest, eps: Endpoints) -> Scores:
        return [
            0.0 if (kv := e.kv_usage) is None else 1.0 - kv if 0.0 <= kv <= 1.0 else float(kv < 0)
            for e in eps
        ]


@dataclass(frozen=True, slots=True)
class InFlightScorer:
    """Fewer requests in flight from this gateway is better, scored ``half / (half + n)``.
    Known at pick time, so it separates endpoints that look alike between two scrapes."""

    half: float = 8.0
    name: str = "in-flight"

    def score(self, req: PickRequest, eps: Endpoints) -> Scores:
        half = self.half
        return [half / (half + e.in_flight) if e.in_flight > 0 else 1.0 for e in eps]


@dataclass(frozen=True, slots=True)
class LongRunLoadScorer:
    """Endpoints that do not stay busier than the others are better: each endpoint's
    long-run load (requests held, averaged over about ten seconds of scrapes) against the
    candidates' mean — 1 at or below the mean, falling to 0 at ``tolerance`` (a fraction of
    the mean, at least of one request) or ``slack`` requests above it, whichever is more;
    unknown 0. ``slack`` keeps the band from shrinking to a fraction of a request at low
    load, where a prefix holder is always a little busier than the mean and imbalance costs
    nothing (docs/reports/prefix-routing-balance/probe9.md).

    A slow counterweight to affinity. The hot-spot guard bounds momentary imbalance; this
    tilts the marginal choices (between two holders of a prefix, where a new prompt group
    starts) away from endpoints whose share of prompt groups keeps them busier, so load
    evens out over time without throwing cached prefixes away on every burst."""

    tolerance: float = 0.1
    slack: float = 0.0
    name: str = "long-run-load"

    def score(self, req: PickRequest, eps: Endpoints) -> Scores:
        known = [v for e in eps if (v := e.held_average) is not None]
        if not known:
            return [0.0] * len(eps)
        mean = sum(known) / len(known)
        scale = max(max(mean, 1.0) * self.tolerance, self.slack)
        return [
            0.0
            if (v := e.held_average) is None
            else 1.0
            if v <= mean
            else max(0.0, 1.0 - (v - mean) / scale)
            for e in eps
        ]


@dataclass(frozen=True, slots=True)
class TokenLoadScorer:
    """Fewer tokens in flight from this gateway is better: 1 − min(1, tokens / threshold)."""

    threshold_tokens: int = 131_072
    name: str = "token-load"

    def score(self, req: PickRequest, eps: Endpoints) -> Scores:
        threshold = self.threshold_tokens
        return [
            1.0 - e.in_flight_tokens / threshold if e.in_flight_tokens < threshold else 0.0
            for e in eps
        ]


@dataclass(frozen=True, slots=True)
class PrefixCacheScorer:
    """Longer cached prompt prefix is better: matched blocks / prompt blocks, from the
    gateway's approximate block-hash index (``routing.prefix``)."""

    name: str = "prefix-cache"

    def score(self, req: PickRequest, eps: Endpoints) -> Scores:
        total = req.prompt_blocks
        if total <= 0 or not any(map(_PREFIX_BLOCKS, eps)):
            return [0.0] * len(eps)
        return [e.prefix_blocks / total if e.prefix_blocks < total else 1.0 for e in eps]


@dataclass(frozen=True, slots=True)
class LoraAffinityScorer:
    """Prefer endpoints already running the request's adapter (as the Inference Extension):
    1.0 running; 0.8 a free adapter slot; 0.6 the adapter already waiting there; 0.0 full.
    Requests for a base model score 1.0 everywhere."""

    name: str = "lora-affinity"

    def score(self, req: PickRequest, eps: Endpoints) -> Scores:
        adapter = req.adapter
        if adapter is None:
            return [1.0] * len(eps)
        out = []
        for e in eps:
            if adapter in e.lora_running:
                out.append(1.0)
            elif e.max_lora is None:
                out.append(0.5)  # unknown adapter state
            elif len(e.lora_running) < e.max_lora:
                out.append(0.8)
            elif adapter in e.lora_waiting:
                out.append(0.6)
            else:
                out.append(0.0)
        return out


@dataclass(frozen=True, slots=True)
class SessionAffinityScorer:
    """Requests of one session (``x-session-id``) prefer the endpoint the session hashes to
    on the pool's consistent-hash ring (1.0; others 0.0). Stable across restarts and gateway
    replicas; removing an endpoint moves only its sessions. No session: 0.0 everywhere."""

    name: str = "session-affinity"

    def score(self, req: PickRequest, eps: Endpoints) -> Scores:
        target = req.session_endpoint
        if target is None:
            return [0.0] * len(eps)
        return [1.0 if e.key == target else 0.0 for e in eps]
