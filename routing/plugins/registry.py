"""Names of every filter, scorer and picker, and the built-in profiles.

An explicit literal, so nothing registers itself at import time. Each factory takes the
plugin's parameters (a mapping from config) and raises ``ValueError`` on a bad one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from routing.pipeline import Filter, Picker, Profile, Scorer, WeightedScorer
from routing.plugins import filters as f
from routing.plugins import pickers as p
from routing.plugins import scorers as s

__all__ = ["BUILTIN_PROFILES", "FILTERS", "PICKERS", "SCORERS", "builtin_profile"]

Params = Mapping[str, object]
T = TypeVar("T")


def _no_params(cls: Callable[[], T]) -> Callable[[Params], T]:
    def make(params: Params) -> T:
        if params:
            raise ValueError(f"takes no parameters, got {sorted(params)}")
        return cls()

    return make


def _hot_spot(params: Params) -> Filter:
    ratio = _float(params, "ratio", 1.25)
    slack = _float(params, "slack", 8.0)
    mean_slack = _float(params, "meanSlack", -1.0) if "meanSlack" in params else None
    if ratio < 1.0 or slack < 0 or (mean_slack is not None and mean_slack < 0):
        raise ValueError("ratio must be >= 1, slack and meanSlack >= 0")
    return f.HotSpotFilter(ratio=ratio, slack=slack, mean_slack=mean_slack)


def _packing(params: Params) -> Filter:
    unknown = set(params) - {"batchTarget"}
    target = params.get("batchTarget", 32)
    if unknown or not isinstance(target, int) or isinstance(target, bool) or target < 1:
        raise ValueError("takes batchTarget, an integer >= 1")
    return f.PackingFilter(batch_target=target)


def _token_load(params: Params) -> Scorer:
    threshold = int(_float(params, "thresholdTokens", 131_072))
    if threshold <= 0:
        raise ValueError("thresholdTokens must be > 0")
    return s.TokenLoadScorer(threshold_tokens=threshold)


def _long_run_load(params: Params) -> Scorer:
    tolerance = _float(params, "tolerance", 0.1)
    slack = _float(params, "slack", 0.0)
    if tolerance <= 0 or slack < 0:
        raise ValueError("tolerance must be > 0 and slack >= 0")
    return s.LongRunLoadScorer(tolerance=tolerance, slack=slack)


def _float(params: Params, key: str, default: float) -> float:
    unknown = set(params) - {"ratio", "slack", "meanSlack", "thresholdTokens", "tolerance"}
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)}")
    value = params.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{key} must be a number")
    return float(value)


FILTERS: Mapping[str, Callable[[Params], Filter]] = {
    "healthy": _no_params(f.HealthyFilter),
    "leader": _no_params(f.LeaderFilter),
    "subset": _no_params(f.SubsetFilter),
    "model": _no_params(f.ModelFilter),
    "hot-spot": _hot_spot,
    "packing": _packing,
}

SCORERS: Mapping[str, Callable[[Params], Scorer]] = {
    "queue": _no_params(s.QueueScorer),
    "running": _no_params(s.RunningScorer),
    "kv-cache": _no_params(s.KVCacheScorer),
    "in-flight": _no_params(s.InFlightScorer),
    "token-load": _token_load,
    "long-run-load": _long_run_load,
    "prefix-cache": _no_params(s.PrefixCacheScorer),
    "lora-affinity": _no_params(s.LoraAffinityScorer),
    "session-affinity": _no_params(s.SessionAffinityScorer),
}

PICKERS: Mapping[str, Callable[[Params], Picker]] = {
    "max-score": _no_params(p.MaxScorePicker),
    "weighted-random": _no_params(p.WeightedRandomPicker),
    "random": _no_params(p.RandomPicker),
    "round-robin": _no_params(p.RoundRobinPicker),
    "least-request": _no_params(p.LeastRequestPicker),
    "power-of-two": _no_params(p.PowerOfTwoPicker),
}

_BASE_FILTERS: tuple[Filter, ...] = (f.HealthyFilter(), f.LeaderFilter(), f.SubsetFilter())


def _plain(name: str, picker: Picker) -> Profile:
    return Profile(name=name, filters=_BASE_FILTERS, scorers=(), picker=picker)


# The default starts from the Inference Extension's (queue 2, KV 2, prefix 3), adds LoRA and
# session affinity, the gateway's own in-flight count and the hot-spot guard filter, and
# weighs the prefix cache 6: with the guard bounding imbalance, a cached prefix is worth more
# than a slightly shorter queue (measured beside prefix weight 3:
# docs/reports/prefix-routing/report-run1.md). The guard bounds imbalance loosely, for
# latency; the prefix-routing scenario also runs a tighter, balanced variant beside it.
DEFAULT_PROFILE = Profile(
    name="default",
    filters=(*_BASE_FILTERS, f.ModelFilter(), f.HotSpotFilter()),
    scorers=(
        WeightedScorer(scorer=s.QueueScorer(), weight=2.0),
        WeightedScorer(scorer=s.KVCacheScorer(), weight=2.0),
        WeightedScorer(scorer=s.PrefixCacheScorer(), weight=6.0),
        WeightedScorer(scorer=s.LoraAffinityScorer(), weight=1.0),
        WeightedScorer(scorer=s.SessionAffinityScorer(), weight=2.0),
        WeightedScorer(scorer=s.InFlightScorer(), weight=1.0),
    ),
    picker=p.MaxScorePicker(),
)

# "balanced": the default's scorers, a hot-spot guard that also caps each endpoint near the
# mean (meanSlack 2, ratio 1.1), and the long-run-load scorer (weight 6) that steers marginal
# choices away from endpoints that stay busier than the rest. Load across replicas evens out
# (max/mean of the replicas' mean load 1.003-1.008 in docs/reports/prefix-routing-balance/
# and the prefix-routing report) at the price of a few more prefix-cache misses and a higher
# TTFT tail than the default's.
BALANCED_PROFILE = Profile(
    name="balanced",
    filters=(*_BASE_FILTERS, f.ModelFilter(), f.HotSpotFilter(ratio=1.1, mean_slack=2.0)),
    scorers=(
        *DEFAULT_PROFILE.scorers,
        WeightedScorer(scorer=s.LongRunLoadScorer(), weight=6.0),
    ),
    picker=p.MaxScorePicker(),
)

# "even": balanced with the cap pulled in to half a request above the mean (ratio 1.05), for
# when equal load across replicas matters more than cache hits. At 120 % of the prefix-routing
# scenario's capacity: load max/mean 1.001-1.006 over eight seeds (vllm-router 1.005-1.012),
# prefix hits ~67 % instead of ~90 % and a TTFT p90 about twice balanced's
# (docs/reports/prefix-routing-balance/probe12.md).
EVEN_PROFILE = Profile(
    name="even",
    filters=(*_BASE_FILTERS, f.ModelFilter(), f.HotSpotFilter(ratio=1.05, mean_slack=0.5)),
    scorers=BALANCED_PROFILE.scorers,
    picker=p.MaxScorePicker(),
)

BUILTIN_PROFILES: Mapping[str, Profile] = {
    "default": DEFAULT_PROFILE,
    "balanced": BALANCED_PROFILE,
    "even": EVEN_PROFILE,
    "round-robin": _plain("round-robin", p.RoundRobinPicker()),
    "random": _plain("random", p.RandomPicker()),
    "least-request": _plain("least-request", p.LeastRequestPicker()),
    "power-of-two": _plain("power-of-two", p.PowerOfTwoPicker()),
}


def builtin_profile(name: str) -> Profile:
    return BUILTIN_PROFILES[name]
