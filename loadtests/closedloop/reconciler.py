"""The control loop of one policy: every tick, look (the gateway's recommendation and the
replicas' utilisation), let the policy's rule decide, and scale the fleet.

`sluice`: apply `desiredReplicas` from `GET /autoscaling/{ns}/{pool}` each tick (or once per
`sync_s`, as the HPA that KEDA or prometheus-adapter feed with an AverageValue target of 1
would).
`utilisation`: the HPA algorithm of `hpa.py` on the replicas' busy fraction (running sequences
/ max_num_seqs) or KV-cache usage. Both read the same gateway JSON, so the timeline also shows
what Sluice would have recommended for the utilisation-scaled fleet.
"""

import asyncio
import dataclasses
from collections.abc import Iterable
from typing import Any

import aiohttp

from .elastic import ElasticFleet, Phase
from .hpa import HpaRule, UtilisationAutoscaler
from .scenario import ClosedLoopScenario, Policy, RuleKind, UtilisationMetric


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TimelineRow:
    t_s: float
    target: int  # replicas asked for after this tick (starting + serving)
    serving: int
    starting: int
    draining: int
    decided: int | None  # what the rule asked for at this tick (None: no decision)
    busy: float | None  # mean running / max_num_seqs over serving replicas, now
    kv: float | None  # mean KV-cache usage over serving replicas, now
    sluice_desired: int | None  # the gateway's recommendation (also for the baseline)
    demand: float | None
    panic: bool | None


class Reconciler:
    def __init__(self, scenario: ClosedLoopScenario, policy: Policy, fleet: ElasticFleet) -> None:
        self.scenario, self.policy, self.fleet = scenario, policy, fleet
        self.timeline: list[TimelineRow] = []
        self.read_failures = 0
        self._hpa: UtilisationAutoscaler | None = None
        self._next_apply = 0.0  # sluice with sync_s: when the recommendation is next applied
        if policy.kind is RuleKind.UTILISATION:
            s = scenario.scaling
            self._hpa = UtilisationAutoscaler(
                HpaRule(
                    target=policy.target, tolerance=policy.tolerance, sync_s=policy.sync_s,
                    metric_window_s=policy.metric_window_s,
                    stabilization_s=policy.stabilization_s, scale_up_pods=policy.scale_up_pods,
                    scale_up_percent=policy.scale_up_percent, min_replicas=s.min_replicas,
                    max_replicas=s.max_replicas,
                )
            )  # fmt: skip

    async def run(self, end_s: float) -> None:
        """Tick at 0, tick_s, 2 x tick_s, ... on the run's clock, up to `end_s`."""
        tick_s = self.scenario.scaling.tick_s
        clock = self.fleet.clock
        for k in range(int(end_s / tick_s) + 1):
            await asyncio.sleep(max(0.0, k * tick_s - clock.now()))
            await self.tick()

    async def tick(self) -> None:
        fleet = self.fleet
        now = fleet.clock.now()
        view = await self._recommendation()
        serving = fleet.serving()
        max_seqs = self.scenario.replica.profile.max_num_seqs
        busy = {r.name: r.stats.running / max_seqs for r in serving}
        kv = {r.name: r.stats.kv_usage for r in serving}
        decided: int | None = None
        if self._hpa is not None:
            metric = busy if self.policy.metric is UtilisationMetric.BUSY else kv
            self._hpa.observe(now, metric)
            decision = self._hpa.decide(now, fleet.target, fleet.count(Phase.STARTING))
            decided = decision.desired if decision.synced else None
        elif view.get("desiredReplicas") is not None and now >= self._next_apply:
            decided = int(view["desiredReplicas"])
            self._next_apply = now + self.policy.sync_s
        if decided is not None:
            await fleet.scale_to(decided)
        self.timeline.append(
            TimelineRow(
                t_s=round(now, 3),
                target=fleet.target,
                serving=fleet.count(Phase.SERVING),
                starting=fleet.count(Phase.STARTING),
                draining=fleet.count(Phase.DRAINING),
                decided=decided,
                busy=_mean(busy.values()),
                kv=_mean(kv.values()),
                sluice_desired=view.get("desiredReplicas"),
                demand=view.get("demand"),
                panic=view.get("panic"),
            )
        )

    async def _recommendation(self) -> dict[str, Any]:
        try:
            return await self.fleet.link.autoscaling()
        except (aiohttp.ClientError, TimeoutError):
            self.read_failures += 1
            return {}


def _mean(values: Iterable[float]) -> float | None:
    items = list(values)
    return round(sum(items) / len(items), 4) if items else None
