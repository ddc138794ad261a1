"""A Kubernetes HorizontalPodAutoscaler on average utilisation, as the baseline policy. Pure.

Follows kube-controller-manager's replica calculator and behaviours closely enough that the
comparison is with the real thing, not a straw man:

- proposal = ceil(readyPods x averageUtilisation / target); no change while
  |average / target - 1| <= tolerance (0.1);
- pods that are not ready yet (starting) are ignored, except on a scale-up, where they count
  as 0 % busy and the proposal is recomputed over all pods (and dropped if that reverses the
  direction or lands within tolerance) — so starting replicas damp further scale-ups;
- it acts once per sync period (15 s), on the utilisation averaged over a window;
- scale-down stabilisation: the highest proposal of the last `stabilization_s` wins (300 s by
  default, "5 minutes");
- the default scale-up policy: at most max(+4 pods, +100 %) per sync; clamped to [min, max].
"""

import dataclasses
import math
from collections import deque
from collections.abc import Mapping

__all__ = ["HpaDecision", "HpaRule", "UtilisationAutoscaler"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HpaRule:
    target: float = 0.6
    tolerance: float = 0.1
    sync_s: float = 15.0
    metric_window_s: float = 15.0
    stabilization_s: float = 300.0
    scale_up_pods: int = 4
    scale_up_percent: float = 100.0
    min_replicas: int = 1
    max_replicas: int = 10


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HpaDecision:
    desired: int
    proposal: int  # before stabilisation and rate limits
    utilisation: float | None  # averaged over the ready replicas
    synced: bool  # False between sync periods: `desired` is the current count


class UtilisationAutoscaler:
    """`observe` utilisation samples per replica (every tick); `decide` once per tick."""

    def __init__(self, rule: HpaRule) -> None:
        self.rule = rule
        self._samples: dict[str, deque[tuple[float, float]]] = {}
        self._proposals: deque[tuple[float, int]] = deque()
        self._next_sync = 0.0

    def observe(self, now: float, utilisation: Mapping[str, float]) -> None:
        """One sample per ready replica; replicas not named are forgotten."""
        horizon = now - self.rule.metric_window_s
        for name in set(self._samples) - set(utilisation):
            del self._samples[name]
        for name, value in utilisation.items():
            samples = self._samples.setdefault(name, deque())
            samples.append((now, value))
            while samples and samples[0][0] < horizon:
                samples.popleft()

    def decide(self, now: float, current: int, starting: int) -> HpaDecision:
        """`current` = the replicas asked for (ready + starting); `starting` = not ready yet."""
        averages = [sum(v for _, v in s) / len(s) for s in self._samples.values() if s]
        utilisation = sum(averages) / len(averages) if averages else None
        if now < self._next_sync:
            return HpaDecision(
                desired=current, proposal=current, utilisation=utilisation, synced=False
            )
        self._next_sync = now + self.rule.sync_s
        proposal = self._proposal(averages, current, starting)
        desired = self._stabilised(now, proposal, current)
        return HpaDecision(desired=desired, proposal=proposal, utilisation=utilisation, synced=True)

    def _proposal(self, averages: list[float], current: int, starting: int) -> int:
        rule = self.rule
        if not averages:
            return current  # no metrics: the HPA leaves the scale alone
        ratio = sum(averages) / len(averages) / rule.target
        if not (starting > 0 and ratio > 1.0):
            if abs(ratio - 1.0) <= rule.tolerance:
                return current
            return math.ceil(ratio * len(averages) - 1e-9)
        # A scale-up while pods are starting: count them as idle and recompute.
        pods = len(averages) + starting
        rebalanced = sum(averages) / (rule.target * pods)
        if abs(rebalanced - 1.0) <= rule.tolerance or rebalanced < 1.0:
            return current
        proposal = math.ceil(rebalanced * pods - 1e-9)
        return current if proposal < current else proposal

    def _stabilised(self, now: float, proposal: int, current: int) -> int:
        rule = self.rule
        self._proposals.append((now, proposal))
        horizon = now - rule.stabilization_s
        while self._proposals and self._proposals[0][0] < horizon:
            self._proposals.popleft()
        desired = proposal
        if proposal < current:  # going down: the highest recent proposal, at most current
            desired = min(current, max(p for _, p in self._proposals))
        elif proposal > current:
            limit = max(
                current + rule.scale_up_pods,
                math.floor(current * (1 + rule.scale_up_percent / 100)),
            )
            desired = min(proposal, limit)
        return min(rule.max_replicas, max(rule.min_replicas, desired))
