"""Values that cross into the picker pipeline: endpoint snapshots, request facts, decisions.

``gateway/`` builds one immutable ``EndpointSnapshot`` per endpoint for each decision from the
scraper's latest metrics and its own in-flight counts; the pipeline never sees live objects.
Unknown (stale or never scraped) metrics are ``None``: plugins treat them as unknown, never as
idle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

__all__ = [
    "Decision",
    "EndpointSnapshot",
    "NoEligibleEndpoint",
    "PickRequest",
    "Trace",
]

_NO_SCORES: Mapping[str, Sequence[float]] = MappingProxyType({})


class EndpointSnapshot(NamedTuple):
    """One endpoint as a decision sees it. A NamedTuple, not a frozen dataclass (STYLE §B),
    on purpose: one is built per candidate per request, and a frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` per field) costs about 3× as much."""

    key: str  # "address:port", the endpoint's identity
    engine: str = "vllm"
    healthy: bool = True
    # scraped model-server signals; None = unknown (stale, never scraped, or not exported)
    waiting: float | None = None
    running: float | None = None
    kv_usage: float | None = None  # 0..1
    lora_running: frozenset[str] = frozenset()
    lora_waiting: frozenset[str] = frozenset()
    max_lora: int | None = None
    # the gateway's own accounting, updated at pick time
    in_flight: int = 0
    in_flight_tokens: int = 0
    # approximate prefix-cache match: leading prompt blocks this endpoint likely holds
    prefix_blocks: int = 0
    # multi-host replicas (LeaderWorkerSet): group id and whether this is the leader
    group: str | None = None
    is_leader: bool = True
    group_healthy: bool = True
    models: frozenset[str] = frozenset()  # served model names (base and adapters); empty = unknown
    accelerator: str | None = None
    # long-run load: requests held (waiting + running), averaged over about the last ten
    # seconds of scrapes; None = unknown (stale or never scraped)
    held_average: float | None = None

    @property
    def load(self) -> float:
        """Requests this endpoint holds as far as the gateway can tell: its own in-flight
        requests, or the server's queue and batch when those are higher (other clients)."""
        scraped = (self.waiting or 0.0) + (self.running or 0.0)
        return max(float(self.in_flight), scraped)


class PickRequest(NamedTuple):
    """What the pipeline knows about the request. A NamedTuple for the same reason as
    ``EndpointSnapshot``: one is built per request on the hot path. Build it with keywords."""

    model: str
    adapter: str | None = None
    prompt_blocks: int = 0
    prompt_tokens: int = 0
    session_id: str | None = None
    # the endpoint the session hashes to on the pool's ring (see routing.hashring)
    session_endpoint: str | None = None
    priority: int = 0
    # Inference Extension conformance: endpoints the picker must choose from ("ip:port")
    subset: frozenset[str] | None = None
    sequence: int = 0  # a per-pool counter, for round-robin


class Trace(NamedTuple):
    """Why a decision went the way it did: what each filter removed, then each scorer's
    scores and the weighted totals, aligned with ``keys`` (the candidates that were scored)."""

    removed: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (filter, endpoint keys removed)
    keys: tuple[str, ...] = ()
    scores: Mapping[str, Sequence[float]] = _NO_SCORES  # scorer name → score per key
    totals: Sequence[float] = ()

    def table(self) -> dict[str, dict[str, float]]:
        """Per endpoint key, each scorer's score and the total (for logs and tests)."""
        return {
            key: {**{name: s[i] for name, s in self.scores.items()}, "total": self.totals[i]}
            for i, key in enumerate(self.keys)
        }


class Decision(NamedTuple):
    endpoint: EndpointSnapshot
    trace: Trace


@dataclass(frozen=True, slots=True, kw_only=True)
class NoEligibleEndpoint:
    reason: str
    trace: Trace
