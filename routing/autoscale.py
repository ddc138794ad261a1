"""The desired-replica recommendation for a pool, from true demand.

Demand is what the pool is asked to hold: requests waiting in the gateway's queue, in flight
from the gateway, and waiting inside the model servers. Like Knative's autoscaler, two windows
average it: a stable window (default 60 s) that decides normally, and a panic window (6 s)
that reacts to spikes — panic starts when the panic window asks for ``panic_threshold`` × the
current replicas, and while panicking the recommendation never goes down. The safety margin
is explicit (``headroom``: 0.2 provisions 20 % above demand), not hidden in a target.
Scale-down is delayed (the highest recommendation of the last ``scale_down_delay_s`` wins) and
rate-limited, so steady load does not flap. Pure: the caller passes ``now``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["AutoscaleSpec", "Recommendation", "Recommender"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoscaleSpec:
    target_per_replica: float = 32.0  # concurrent requests one replica should hold
    headroom: float = 0.2
    min_replicas: int = 0
    max_replicas: int = 100
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    scale_down_delay_s: float = 30.0
    max_scale_down_rate: float = 2.0  # at most halve per decision
    max_scale_up_rate: float = 1000.0

    def __post_init__(self) -> None:
        if self.target_per_replica <= 0 or self.headroom < 0:
            raise ValueError("target_per_replica must be > 0 and headroom >= 0")
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 0 <= min_replicas <= max_replicas")
        if not 0 < self.panic_window_s <= self.stable_window_s:
            raise ValueError("need 0 < panic_window_s <= stable_window_s")


@dataclass(frozen=True, slots=True, kw_only=True)
class Recommendation:
    desired: int
    panic: bool
    active: bool  # demand > 0: the activation signal for scale from zero
    stable_demand: float
    panic_demand: float
    current: int


class Recommender:
    """Feed ``observe`` with demand samples; ask ``recommend`` for the desired replicas."""

    def __init__(self, spec: AutoscaleSpec) -> None:
        self.spec = spec
        self._samples: deque[tuple[float, float]] = deque()
        self._recent: deque[tuple[float, int]] = deque()  # recommendations, for the delay
        self._panic_until = float("-inf")
        self._panic_floor = 0

    def observe(self, now: float, demand: float) -> None:
        self._samples.append((now, max(0.0, demand)))
        horizon = now - self.spec.stable_window_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()

    def recommend(self, now: float, current: int) -> Recommendation:
        spec = self.spec
        stable = self._average(now, spec.stable_window_s)
        burst = self._average(now, spec.panic_window_s)
        want_stable = self._replicas(stable)
        want_panic = self._replicas(burst)
        latest = self._samples[-1][1] if self._samples else 0.0
        # as Knative: the panic window's replica count (rounded up, headroom included) against
        # panic_threshold x the current replicas. Rounding up makes panic eager at one or two
        # replicas; the closed-loop scenario meets its SLO with it and misses it without.
        if current > 0 and want_panic >= spec.panic_threshold * current:
            if now >= self._panic_until:
                self._panic_floor = current
            self._panic_until = now + spec.stable_window_s
        panic = now < self._panic_until
        if panic:
            desired = max(want_panic, want_stable, self._panic_floor)
            self._panic_floor = desired  # never down while panicking
        else:
            desired = want_stable
            if current > 0:
                desired = max(desired, math.ceil(current / spec.max_scale_down_rate))
        if current > 0:
            desired = min(desired, math.ceil(current * spec.max_scale_up_rate))
        if latest > 0 and desired == 0:
            desired = 1  # activation: demand at zero replicas needs one
        desired = self._delayed(now, desired)
        desired = min(spec.max_replicas, max(spec.min_replicas, desired))
        return Recommendation(
            desired=desired,
            panic=panic,
            active=latest > 0,
            stable_demand=stable,
            panic_demand=burst,
            current=current,
        )

    def _replicas(self, demand: float) -> int:
        return math.ceil(demand * (1.0 + self.spec.headroom) / self.spec.target_per_replica - 1e-9)

    def _average(self, now: float, window_s: float) -> float:
        horizon = now - window_s
        values = [d for t, d in self._samples if t >= horizon]
        return sum(values) / len(values) if values else 0.0

    def _delayed(self, now: float, desired: int) -> int:
        """The highest recommendation of the last scale_down_delay_s: going up is immediate,
        going down waits until the higher values age out."""
        self._recent.append((now, desired))
        horizon = now - self.spec.scale_down_delay_s
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()
        return max(d for _, d in self._recent)
