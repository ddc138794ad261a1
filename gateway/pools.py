"""Live state of every InferencePool: scraped signals, the gateway's own in-flight tokens,
the approximate prefix index, session rings and round-robin counters. Survives reloads (keyed
by pool and endpoint); ``snapshots`` turns it into the immutable values the picker sees, for
the candidate endpoints only, so a decision costs the same in a pool of 10 or 1,000.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.scraper import Scraper, ScrapeTarget
from routing.backends import ENGINE_LABEL, Endpoint, PoolTarget
from routing.hashring import HashRing
from routing.picking import EndpointSnapshot, Trace
from routing.pools import PoolSettings
from routing.prefill import PrefillEstimator
from routing.prefix import PrefixIndex, PromptHasher
from routing.presets import Preset, ServerMetrics
from routing.table import RoutingTable

__all__ = ["PickCounts", "PoolRuntime", "preset_for"]

DEFAULT_ENGINE = "vllm"
_EMPTY: frozenset[str] = frozenset()
_new_tuple = tuple.__new__
# A scrape's first fields are a snapshot's signal fields, in order: copied as one slice.
_SIGNALS = 6
_UNKNOWN = ServerMetrics()[:_SIGNALS]  # unknown (stale or never scraped): None, not idle
if ServerMetrics._fields[:_SIGNALS] != EndpointSnapshot._fields[3 : 3 + _SIGNALS]:
    raise ImportError("ServerMetrics and EndpointSnapshot signal fields differ in order")
# LeaderWorkerSet labels: a group is (set name, group index); worker 0 is the leader.
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
LWS_GROUP = "leaderworkerset.sigs.k8s.io/group-index"
LWS_WORKER = "leaderworkerset.sigs.k8s.io/worker-index"
ACCELERATOR_LABEL = "sluice.dev/accelerator"


@dataclass(frozen=True, slots=True, kw_only=True)
class _PoolView:
    """What a table says about one pool, indexed for request time."""

    by_key: Mapping[str, Endpoint]  # ready, pickable endpoints (group leaders)
    keys: tuple[str, ...]
    key_set: frozenset[str]
    info: Mapping[str, tuple[str, str | None, str | None]]  # key → (engine, group, accelerator)
    groups: Mapping[str, tuple[Endpoint, ...]]  # group → every member, ready or not
    ring: HashRing
    target: PoolTarget


@dataclass(slots=True)
class PickCounts:
    """One pool's decisions, counted from their traces as plain integers (no lock or label
    lookup per request) and exported when /metrics is scraped (``gateway.poolmetrics``)."""

    ok: int = 0
    none: int = 0  # no eligible endpoint (503)
    fail_open: int = 0  # picked without fresh signals (FailOpen: least-request)
    prompt_blocks: int = 0  # prompt blocks of the requests picked
    prefix_blocks: int = 0  # ... that the chosen endpoint was predicted to hold
    removed: dict[str, int] = field(default_factory=dict)  # filter → candidates it removed
    endpoints: dict[str, int] = field(default_factory=dict)  # endpoint key → picks

    def record(
        self, trace: Trace, chosen: EndpointSnapshot | None, prompt_blocks: int, fail_open: bool
    ) -> None:
        for name, keys in trace.removed:  # empty unless a filter removed someone
            self.removed[name] = self.removed.get(name, 0) + len(keys)
        if chosen is None:
            self.none += 1
            return
        self.ok += 1
        if fail_open:
            self.fail_open += 1
        self.prompt_blocks += prompt_blocks
        self.prefix_blocks += chosen.prefix_blocks
        key = chosen.key
        self.endpoints[key] = self.endpoints.get(key, 0) + 1


class PoolRuntime:
    def __init__(self) -> None:
        self.scraper = Scraper()
        self.prefix: dict[str, PrefixIndex] = {}
        # prompt hashers by (block characters, max blocks): shared by pools of one shape
        self.hashers: dict[tuple[int, int], PromptHasher] = {}
        self.sequence: dict[str, int] = {}
        self.in_flight_tokens: dict[str, int] = {}
        # paced requests sent to each endpoint that have not had their first token yet
        self.awaiting_first: dict[str, int] = {}
        # prefill time per prompt token, learned from streamed first tokens: per pool, and
        # per endpoint (replicas on different accelerators prefill at different speeds)
        self.prefill: dict[str, PrefillEstimator] = {}
        self.endpoint_prefill: dict[str, PrefillEstimator] = {}
        self.picks: dict[str, PickCounts] = {}  # pool → its decisions, for /metrics
        self._fresh_hint: dict[str, str] = {}  # pool → an endpoint last seen with fresh signals
        self._views: dict[str, _PoolView] = {}

    def apply(self, table: RoutingTable) -> None:
        """Scrape what the new table routes to; drop state of pools and endpoints now gone."""
        targets: set[ScrapeTarget] = set()
        views: dict[str, _PoolView] = {}
        for target in table.pool_targets():
            settings = table.pools.get(target.name)
            if settings is None:
                continue
            views[target.name] = _view(target)
            for ep in views[target.name].by_key.values():
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
                for key in set(index.endpoints()) - set(views[target.name].by_key):
                    index.forget(key)
        self._views = views
        shapes = {(s.prefix_block_chars, s.prefix_max_blocks) for s in table.pools.values()}
        for shape in set(self.hashers) - shapes:  # prefix settings no pool uses any more
            del self.hashers[shape]
        self.scraper.apply(targets)
        for pool in set(self.prefix) - set(views):
            del self.prefix[pool]
        for pool in set(self.picks) - set(views):
            del self.picks[pool]
        for pool in set(self.prefill) - set(views):
            del self.prefill[pool]
        live = set().union(*(view.key_set for view in views.values()))
        for key in set(self.endpoint_prefill) - live:
            del self.endpoint_prefill[key]
        for pool in set(self._fresh_hint) - set(views):
            del self._fresh_hint[pool]
        for pool, counts in self.picks.items():  # endpoints gone: their series go too
            for key in set(counts.endpoints) - views[pool].key_set:
                del counts.endpoints[key]

    def prefill_for(self, pool: str) -> PrefillEstimator:
        estimator = self.prefill.get(pool)
        if estimator is None:
            estimator = self.prefill[pool] = PrefillEstimator()
        return estimator

    def endpoint_prefill_for(self, key: str) -> PrefillEstimator:
        estimator = self.endpoint_prefill.get(key)
        if estimator is None:
            estimator = self.endpoint_prefill[key] = PrefillEstimator()
        return estimator

    def counts(self, pool: str) -> PickCounts:
        counts = self.picks.get(pool)
        if counts is None:
            counts = self.picks[pool] = PickCounts()
        return counts

    def view(self, target: PoolTarget) -> _PoolView:
        view = self._views.get(target.name)
        if view is None:  # a table not applied yet (tests build tables directly)
            view = self._views[target.name] = _view(target)
        return view

    def hasher_for(self, settings: PoolSettings) -> PromptHasher:
        shape = (settings.prefix_block_chars, settings.prefix_max_blocks)
        hasher = self.hashers.get(shape)
        if hasher is None:
            hasher = self.hashers[shape] = PromptHasher(*shape)
        return hasher

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
        keys: Iterable[str],
        in_flight: Mapping[str, int],
        prefix_match: Mapping[str, int],
    ) -> list[EndpointSnapshot]:
        now = asyncio.get_running_loop().time()
        view = self.view(target)
        info = view.info
        states = self.scraper.states
        stale_before = now - settings.staleness_s
        tokens = self.in_flight_tokens
        out = []
        for key in keys:
            engine, group, accelerator = info[key]
            state = states.get(key)
            held = None
            if state is None:
                healthy, models, signals = True, _EMPTY, _UNKNOWN
            else:
                healthy, models, metrics = state.healthy, state.models, state.metrics
                if metrics is not None and state.updated_at >= stale_before:
                    signals = metrics[:_SIGNALS]
                    held = state.held_average
                else:
                    signals = _UNKNOWN
            # tuple.__new__ in EndpointSnapshot._fields order: skips the NamedTuple's Python
            # __new__, the largest part of building a snapshot (one per candidate per request)
            out.append(
                _new_tuple(
                    EndpointSnapshot,
                    (
                        key,
                        engine,
                        healthy,
                        *signals,  # waiting … max_lora, as ServerMetrics starts
                        in_flight.get(key, 0),
                        tokens.get(key, 0),
                        prefix_match.get(key, 0),
                        group,
                        True,  # only leaders are candidates
                        self._group_healthy(view, group) if group else True,
                        models,
                        accelerator,
                        held,
                    ),
                )
            )
        return out

    def _group_healthy(self, view: _PoolView, group: str) -> bool:
        """Every member ready, and every scraped member healthy."""
        for member in view.groups.get(group, ()):
            if not member.ready:
                return False
            state = self.scraper.states.get(member.key)
            if state is not None and not state.healthy:
                return False
        return True

    def capacity_inputs(
        self, settings: PoolSettings
    ) -> tuple[int, list[tuple[float | None, float | None]]]:
        """Ready, healthy endpoints of the pool in force, and their fresh (queue, KV) signals
        ((None, None) when stale): the inputs of admission control."""
        view = self._views.get(settings.key)
        if view is None:
            return 0, []
        stale_before = asyncio.get_running_loop().time() - settings.staleness_s
        ready = 0
        signals: list[tuple[float | None, float | None]] = []
        for key in view.keys:
            state = self.scraper.states.get(key)
            if state is not None and not state.healthy:
                continue
            ready += 1
            if state is not None and state.metrics is not None and state.updated_at >= stale_before:
                signals.append((state.metrics.waiting, state.metrics.kv_usage))
            else:
                signals.append((None, None))
        return ready, signals

    def backend_load(self, settings: PoolSettings) -> tuple[int, float, float]:
        """Ready endpoints, and the requests running and waiting inside them (fresh only)."""
        view = self._views.get(settings.key)
        if view is None:
            return 0, 0.0, 0.0
        stale_before = asyncio.get_running_loop().time() - settings.staleness_s
        ready, running, waiting = 0, 0.0, 0.0
        for key in view.keys:
            state = self.scraper.states.get(key)
            if state is not None and not state.healthy:
                continue
            ready += 1
            if state is not None and state.metrics is not None and state.updated_at >= stale_before:
                running += state.metrics.running or 0.0
                waiting += state.metrics.waiting or 0.0
        return ready, running, waiting

    def current(self, name: str) -> PoolTarget | None:
        """The pool as the table now in force has it (after a reload, new endpoints)."""
        view = self._views.get(name)
        return view.target if view is not None else None

    def has_fresh_signals(self, target: PoolTarget, settings: PoolSettings) -> bool:
        stale_before = asyncio.get_running_loop().time() - settings.staleness_s
        states = self.scraper.states
        view = self.view(target)
        hint_key = self._fresh_hint.get(target.name, "")
        hint = states.get(hint_key) if hint_key in view.key_set else None
        if hint is not None and hint.updated_at >= stale_before:
            return True  # the endpoint found fresh last time still is (the common case)
        for key in view.keys:
            state = states.get(key)
            if state is not None and state.updated_at >= stale_before:
                self._fresh_hint[target.name] = key
                return True
        return False

    def served_models(self, target: PoolTarget) -> frozenset[str]:
        models: set[str] = set()
        for key in self.view(target).keys:
            state = self.scraper.states.get(key)
            if state is not None:
                models |= state.models
        return frozenset(models)

    def is_adapter(self, model: str) -> bool:
        return model in self.scraper.known_adapters

    async def close(self) -> None:
        await self.scraper.close()


def _view(target: PoolTarget) -> _PoolView:
    by_key = {ep.key: ep for ep in target.endpoints if ep.ready and _is_leader(ep)}
    groups: dict[str, list[Endpoint]] = {}
    for ep in target.endpoints:
        group = _group(ep)
        if group is not None:
            groups.setdefault(group, []).append(ep)
    return _PoolView(
        by_key=by_key,
        keys=tuple(by_key),
        key_set=frozenset(by_key),
        info={
            key: (
                ep.label(ENGINE_LABEL, DEFAULT_ENGINE),
                _group(ep),
                ep.label(ACCELERATOR_LABEL) or None,
            )
            for key, ep in by_key.items()
        },
        groups={g: tuple(members) for g, members in groups.items()},
        ring=HashRing(by_key),
        target=target,
    )


def preset_for(presets: Mapping[str, Preset], ep: Endpoint) -> Preset:
    engine = ep.label(ENGINE_LABEL, DEFAULT_ENGINE)
    return presets.get(engine) or presets.get(DEFAULT_ENGINE) or Preset(name=engine)


def _group(ep: Endpoint) -> str | None:
    name, index = ep.label(LWS_NAME), ep.label(LWS_GROUP)
    return f"{name}/{index}" if name and index else None


def _is_leader(ep: Endpoint) -> bool:
    return ep.label(LWS_WORKER, "0") == "0"
