"""The adaptive sheddable limit: how much of a pool's slots sheddable work may hold, steered
by what non-sheddable requests experience.

A static ``sheddableLimit`` keeps a fixed share of the slots free for critical arrivals. Too
high and critical time to first token suffers; too low and sheddable work is refused while the
fleet could have served it at no cost to anyone. With a TTFT objective the share adapts, AIMD
style (as TCP, or Envoy's and Netflix's adaptive concurrency limits): each update looks at the
non-sheddable requests' TTFTs since the last one. More than a tenth of them over the objective
(their p90 above it, from at least ``MIN_SAMPLES``): the share shrinks multiplicatively, so
critical traffic gets room back within a few updates. None over it (or at most a tenth, from
enough samples) while sheddable requests were being refused for the limit: it grows by
``STEP``, probing for spare capacity. Otherwise it holds. The share stays within
``[lo, hi]``: a floor keeps some sheddable work flowing, so the probe never stops.

Rules: pure and bounded (two counters per pool, no samples kept); no clock: the gateway calls
``update`` once per interval. Never reads anything but what it is given.
"""

from __future__ import annotations

__all__ = ["DECREASE", "MIN_FRACTION", "MIN_SAMPLES", "STEP", "SheddableLimit"]

MIN_SAMPLES = 5  # non-sheddable TTFTs needed to judge a p90 over the objective
DECREASE = 0.75  # multiplicative back-off when critical TTFT is over the objective
STEP = 0.05  # additive probe, as a fraction of the slots, per update
MIN_FRACTION = 0.05
OVER_SHARE = 0.1  # "p90 over the objective": more than this share of TTFTs over it


class SheddableLimit:
    """The share of slots sheddable requests may fill now (``fraction``)."""

    __slots__ = ("_over", "_refused", "_samples", "fraction", "hi", "lo", "objective_s")

    def __init__(
        self, start: float, objective_s: float, lo: float = MIN_FRACTION, hi: float = 1.0
    ) -> None:
        if not 0 < lo <= hi <= 1 or not objective_s > 0:
            raise ValueError("need 0 < lo <= hi <= 1 and a TTFT objective > 0")
        self.objective_s, self.lo, self.hi = objective_s, lo, hi
        self.fraction = min(hi, max(lo, start))
        self._samples = self._over = self._refused = 0

    def observe(self, ttft_s: float) -> None:
        """A non-sheddable request's time to first token (from its arrival at the gateway)."""
        self._samples += 1
        if ttft_s > self.objective_s:
            self._over += 1

    def refused(self) -> None:
        """A sheddable request was refused because of the limit."""
        self._refused += 1

    def update(self) -> float:
        """Decide from what was seen since the last update, forget it, return the share."""
        n, over, refused = self._samples, self._over, self._refused
        self._samples = self._over = self._refused = 0
        if n >= MIN_SAMPLES and over > OVER_SHARE * n:
            self.fraction = max(self.lo, self.fraction * DECREASE)
        elif refused and (over == 0 or (n >= MIN_SAMPLES and over <= OVER_SHARE * n)):
            self.fraction = min(self.hi, self.fraction + STEP)
        return self.fraction
