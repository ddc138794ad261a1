"""What one gateway process shares across requests, passed explicitly (no globals).

``TableHolder`` holds the routing table in force; a reload swaps ``holder.table`` in one
assignment, and each request reads it once at its start, so it finishes on the table it
started with.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.admission import Admissions
from gateway.autoscaling import Autoscaling
from gateway.embeddings import EmbeddingBatcher
from gateway.metrics import Metrics
from gateway.pools import PoolRuntime
from gateway.rollouts import Rollouts
from routing.table import RoutingTable

__all__ = ["Limits", "ProxyContext", "TableHolder"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Overload- and abuse-relevant defaults; docs/limits.md lists each one."""

    max_body_bytes: int = 16 * 1024 * 1024
    # request bodies held in memory at once, across every connection (a body is held when
    # it may be sent twice or must be read: pools, mirrors, shadows, retries, splits)
    max_buffered_body_bytes: int = 256 * 1024 * 1024
    max_request_line_bytes: int = 8190
    max_header_field_bytes: int = 8190
    max_headers: int = 100
    max_header_bytes: int = 64 * 1024  # a request head's header lines in all (Envoy: 60 KiB)
    max_connections: int = 8192  # open client connections per listener port
    header_read_timeout_s: float = 10.0
    body_read_timeout_s: float = 30.0  # between two reads of a body
    body_total_timeout_s: float = 120.0  # for a whole body (a trickle cannot hold it open)
    keepalive_timeout_s: float = 60.0
    upstream_connect_timeout_s: float = 5.0
    mirror_max_in_flight: int = 64
    mirror_timeout_s: float = 30.0
    retry_backoff_base_s: float = 0.025
    retry_backoff_max_s: float = 0.25
    shutdown_grace_s: float = 30.0


@dataclass(slots=True)
class TableHolder:
    table: RoutingTable
    generation: int = 1


@dataclass(slots=True, kw_only=True)
class ProxyContext:
    """Shared by every request of one gateway process."""

    holder: TableHolder
    session: aiohttp.ClientSession
    metrics: Metrics
    limits: Limits
    rng: random.Random
    pools: PoolRuntime = field(default_factory=PoolRuntime)
    embeddings: EmbeddingBatcher = field(init=False)
    admission: Admissions = field(init=False)
    autoscaling: Autoscaling = field(init=False)
    rollouts: Rollouts = field(init=False)
    # the gateway's own count of requests in flight per endpoint key ("host:port")
    in_flight: dict[str, int] = field(default_factory=dict)
    mirrors_in_flight: int = 0
    buffered_body_bytes: int = 0  # request bodies held in memory now (max_buffered_body_bytes)
    shadows_in_flight: int = 0
    # fire-and-forget tasks (mirrors), referenced so they are not collected mid-flight
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.embeddings = EmbeddingBatcher(self.session)
        self.admission = Admissions(self.metrics, self.pools.capacity_inputs)
        self.autoscaling = Autoscaling(self.pools, self.admission, lambda: self.holder.table)
        self.rollouts = Rollouts(self.metrics)
