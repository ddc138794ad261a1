"""Live state of every InferencePool: scraped signals, the gateway's own in-flight tokens,
the approximate prefix index and round-robin counters. Survives reloads (keyed by pool and
endpoint); ``snapshots`` turns it into the immutable values the picker sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from gateway.scraper import EndpointState, Scraper, ScrapeTarget
from routing.backends import ENGINE_LABEL, Endpoint, PoolTarget
from routing.picking import EndpointSnapshot
from routing.pools import PoolSettings
from routing.prefix import PrefixIndex
from routing.presets import Preset
from routing.table import RoutingTable

__all__ = ["GROUP_LABELS", "PoolRuntime"]

DEFAULT_ENGINE = "vllm"
# LeaderWorkerSet labels: a group is (set name, group index); worker 0 is the leader.
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
LWS_GROUP = "leaderworkerset.sigs.k8s.io/group-index"
LWS_WORKER = "leaderworkerset.sigs.k8s.io/worker-index"
GROUP_LABELS = (LWS_NAME, LWS_GROUP, LWS_WORKER)
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"


class PoolRuntime:
    def __init__(self) -> None:
        self.scraper = Scraper()
        self.prefix: dict[str, PrefixIndex] = {}
        self.sequence: dict[str, int] = {}
        self.in_flight_tokens: dict[str, int] = {}

    def apply(self, table: RoutingTable) -> None:
        """Scrape what the new table routes to; drop state of pools and endpoints now gone."""
        targets: set[ScrapeTarget] = set()
        for target in table.pool_targets():
            settings = table.pools.get(target.name)
            if settings is None:
                continue
            for ep in target.endpoints:
                if ep.ready and _is_leader(ep):
                    targets.add(
                        ScrapeTarget(
                            address=ep.address,
                            port=ep.port,
                            preset=preset_for(table.presets, ep),
                            interval_s=settings.scrape_interval_s,
                            timeout_s=settings.scrape_timeout_s,
                        )
                    )
            index = self.prefix.get(target.name)
            if index is not None:
                live = {ep.key for ep in target.endpoints}
                for key in set(index.endpoints()) - live:
                    index.forget(key)
        self.scraper.apply(targets)
        for pool in set(self.prefix) - set(table.pools):
            del self.prefix[pool]

    def index_for(self, settings: PoolSettings) -> PrefixIndex:
        index = self.prefix.get(settings.key)
        if index is None:
            index = self.prefix[settings.key] = PrefixIndex(settings.prefix_capacity_blocks)
        return index

    def next_sequence(self, pool: str) -> int:
        n = self.sequence.get(pool, 0)
        self.sequence[pool] = n + 1
        return n

    def snapshots(
        self,
        target: PoolTarget,
        settings: PoolSettings,
        in_flight: Mapping[str, int],
        prefix_match: Mapping[str, int],
    ) -> tuple[EndpointSnapshot, ...]:
        now = asyncio.get_running_loop().time()
        groups = _group_health(target.endpoints, self.scraper.states)
        out = []
        for ep in target.endpoints:
            if not ep.ready:
                continue
            state = self.scraper.states.get(ep.key)
            fresh = state is not None and now - state.updated_at <= settings.staleness_s
            metrics = state.metrics if fresh and state is not None else None
            group = _group(ep)
            out.append(
                EndpointSnapshot(
                    key=ep.key,
                    engine=ep.label(ENGINE_LABEL, DEFAULT_ENGINE),
                    healthy=state.healthy if state is not None else True,
                    waiting=metrics.waiting if metrics else None,
                    running=metrics.running if metrics else None,
                    kv_usage=metrics.kv_usage if metrics else None,
                    lora_running=metrics.lora_running if metrics else frozenset(),
                    lora_waiting=metrics.lora_waiting if metrics else frozenset(),
                    max_lora=metrics.max_lora if metrics else None,
                    in_flight=in_flight.get(ep.key, 0),
                    in_flight_tokens=self.in_flight_tokens.get(ep.key, 0),
                    prefix_blocks=prefix_match.get(ep.key, 0),
                    group=group,
                    is_leader=_is_leader(ep),
                    group_healthy=groups.get(group, True) if group else True,
                    models=state.models if state is not None else frozenset(),
                    accelerator=ep.label(ACCELERATOR_LABEL) or None,
                )
            )
        return tuple(out)

    def has_fresh_signals(self, target: PoolTarget, settings: PoolSettings) -> bool:
        now = asyncio.get_running_loop().time()
        return any(
            (s := self.scraper.states.get(ep.key)) is not None
            and now - s.updated_at <= settings.staleness_s
            for ep in target.endpoints
        )

    def served_models(self, target: PoolTarget) -> frozenset[str]:
        models: set[str] = set()
        for ep in target.endpoints:
            state = self.scraper.states.get(ep.key)
            if state is not None:
                models |= state.models
        return frozenset(models)

    async def close(self) -> None:
        await self.scraper.close()


def preset_for(presets: Mapping[str, Preset], ep: Endpoint) -> Preset:
    engine = ep.label(ENGINE_LABEL, DEFAULT_ENGINE)
    return presets.get(engine) or presets.get(DEFAULT_ENGINE) or Preset(name=engine)


def _group(ep: Endpoint) -> str | None:
    name, index = ep.label(LWS_NAME), ep.label(LWS_GROUP)
    return f"{name}/{index}" if name and index else None


def _is_leader(ep: Endpoint) -> bool:
    return ep.label(LWS_WORKER, "0") == "0"


def _group_health(
    endpoints: tuple[Endpoint, ...], states: Mapping[str, EndpointState]
) -> dict[str, bool]:
    """A group is healthy only if every member is ready and its leader scrapes healthy."""
    health: dict[str, bool] = {}
    for ep in endpoints:
        group = _group(ep)
        if group is None:
            continue
        ok = ep.ready
        if ok and _is_leader(ep):
            state = states.get(ep.key)
            ok = state.healthy if state is not None else True
        health[group] = health.get(group, True) and ok
    return health
