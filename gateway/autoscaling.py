"""Per-pool demand sampling and the desired-replica recommendation (``routing.autoscale``),
shared by /metrics, the admin metrics-api endpoint and the KEDA external scaler.

Demand = requests in the gateway's queue + max(requests in flight from the gateway, requests
running and waiting inside the model servers). Counting the servers' own numbers catches
traffic that bypasses this gateway; taking the max avoids counting ours twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from gateway.admission import Admissions
from gateway.pools import PoolRuntime
from routing.autoscale import Recommendation, Recommender
from routing.pools import PoolSettings
from routing.table import RoutingTable

__all__ = ["Autoscaling", "PoolDemand"]

SAMPLE_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolDemand:
    queued: int
    in_flight: int
    backend_running: float
    backend_waiting: float
    ready: int

    @property
    def demand(self) -> float:
        return self.queued + max(self.in_flight, self.backend_running + self.backend_waiting)


class Autoscaling:
    def __init__(
        self, pools: PoolRuntime, admission: Admissions, table: Callable[[], RoutingTable]
    ) -> None:
        self._pools = pools
        self._admission = admission
        self._table = table
        self._recommenders: dict[str, Recommender] = {}
        self.latest: dict[str, tuple[PoolDemand, Recommendation]] = {}
        self.listeners: list[Callable[[str, Recommendation], None]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self._task = asyncio.create_task(self._loop(interval_s))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def demand(self, settings: PoolSettings) -> PoolDemand:
        state = self._admission.pool(settings)
        ready, running, waiting = self._pools.backend_load(settings)
        return PoolDemand(
            queued=state.queue.queued,
            in_flight=state.queue.in_flight,
            backend_running=running,
            backend_waiting=waiting,
            ready=ready,
        )

    def sample(self) -> None:
        """One observation and recommendation per pool, now."""
        now = asyncio.get_running_loop().time()
        pools = self._table().pools
        for key, settings in pools.items():
            rec = self._recommenders.get(key)
            if rec is None or rec.spec != settings.autoscaling:
                rec = self._recommenders[key] = Recommender(settings.autoscaling)
            demand = self.demand(settings)
            rec.observe(now, demand.demand)
            result = rec.recommend(now, demand.ready)
            previous = self.latest.get(key)
            self.latest[key] = (demand, result)
            if previous is None or previous[1].active != result.active:
                for listener in self.listeners:
                    listener(key, result)
        for key in set(self.latest) - set(pools):
            del self.latest[key]
            self._recommenders.pop(key, None)

    async def _loop(self, interval_s: float) -> None:
        while True:
            self.sample()
            await asyncio.sleep(interval_s)
