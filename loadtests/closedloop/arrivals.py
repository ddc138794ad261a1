"""The offered load over time: a piecewise-linear request rate and its open-loop Poisson arrivals.

Pure: no I/O, no clock. The same profile and seed give the same arrival times, so every
compared policy sees the same trace. Arrivals are drawn by thinning (Lewis and Shedler): a
homogeneous Poisson stream at the peak rate, each point kept with probability rate(t) / peak,
which is exactly a non-homogeneous Poisson process with intensity rate(t).
"""

import bisect
import dataclasses
import itertools
import random

__all__ = ["RateProfile", "arrival_times"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RateProfile:
    """Corners `(t_s, req/s)`, times strictly increasing from 0; linear in between."""

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        times = [t for t, _ in self.points]
        if len(self.points) < 2 or times[0] != 0.0:
            raise ValueError("at least two corners, the first at t = 0")
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError("corner times must increase strictly")
        if any(rate < 0 for _, rate in self.points) or self.peak_rps <= 0:
            raise ValueError("rates must be >= 0, and one > 0")

    @property
    def end_s(self) -> float:
        return self.points[-1][0]

    @property
    def peak_rps(self) -> float:
        return max(rate for _, rate in self.points)

    def rate(self, t: float) -> float:
        """The rate at `t` seconds (0 outside the profile)."""
        if t < 0 or t > self.end_s:
            return 0.0
        times = [p[0] for p in self.points]
        i = min(bisect.bisect_right(times, t), len(times) - 1)
        (t0, r0), (t1, r1) = self.points[i - 1], self.points[i]
        return r0 + (r1 - r0) * (t - t0) / (t1 - t0)

    def expected_requests(self) -> float:
        """The integral of the rate: how many requests the trace holds on average."""
        return sum(
            (t1 - t0) * (r0 + r1) / 2 for (t0, r0), (t1, r1) in itertools.pairwise(self.points)
        )


def arrival_times(profile: RateProfile, seed: int) -> tuple[float, ...]:
    """Arrival offsets in seconds from the start, sorted; bounded by the profile's end."""
    rng = random.Random(f"closed-loop-arrivals/{seed}")
    peak = profile.peak_rps
    out: list[float] = []
    t = rng.expovariate(peak)
    while t < profile.end_s:
        if rng.random() * peak < profile.rate(t):
            out.append(t)
        t += rng.expovariate(peak)
    return tuple(out)
