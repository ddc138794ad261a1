"""What Sluice knows about each InferencePool beyond its endpoints: the picker profile,
scraping and failure mode (from an InferencePoolPolicy, else defaults), the model rewrites and
objectives that apply to it, and the presets by engine name.

Also the per-request model decisions: which target model a request's ``model`` becomes
(InferenceModelRewrite, or the older InferenceModel's targetModels) and its priority.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from routing import model as m
from routing.autoscale import AutoscaleSpec
from routing.candidates import DEFAULT_MAX_CANDIDATES
from routing.pipeline import Profile
from routing.plugins.filters import PackingFilter
from routing.plugins.registry import BUILTIN_PROFILES
from routing.presets import Preset
from routing.splits import choose_weighted

__all__ = [
    "ModelChoice",
    "PoolSettings",
    "build_pool_settings",
    "choose_model",
    "presets_by_engine",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolSettings:
    key: str
    profile: Profile
    failure_mode: str
    scrape_interval_s: float = 0.05
    scrape_timeout_s: float = 1.0
    staleness_s: float = 0.5
    prefix_block_chars: int = 64
    prefix_max_blocks: int = 256
    prefix_capacity_blocks: int = 31_250
    max_candidates: int = DEFAULT_MAX_CANDIDATES
    objectives: Mapping[str, int] = field(default_factory=dict)
    rewrites: tuple[m.RewriteRule, ...] = ()
    model_rules: Mapping[str, m.InferenceModelRule] = field(default_factory=dict)
    traffic: m.TrafficLimits = field(default_factory=m.TrafficLimits)
    model_traffic: Mapping[str, m.TrafficLimits] = field(default_factory=dict)
    fairness_header: str = "x-gateway-inference-fairness-id"
    embeddings: m.EmbeddingBatching = field(default_factory=m.EmbeddingBatching)
    has_traffic_policy: bool = False
    autoscaling: AutoscaleSpec = field(default_factory=AutoscaleSpec)

    def limits_for(self, model: str) -> m.TrafficLimits:
        return self.model_traffic.get(model, self.traffic)

    def rewritten_names(self) -> tuple[str, ...]:
        """Every model name a client may send that this pool rewrites."""
        names = [name for rule in self.rewrites for name in rule.models]
        return tuple(dict.fromkeys([*names, *self.model_rules]))


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelChoice:
    requested: str
    target: str
    priority: int
    rewritten: bool


def build_pool_settings(config: m.Config) -> Mapping[str, PoolSettings]:
    policies = {f"{p.meta.namespace}/{name}": p for p in config.pool_policies for name in p.pools}
    traffic = {f"{t.meta.namespace}/{name}": t for t in config.traffic_policies for name in t.pools}
    out = {}
    for pool in config.pools:
        key = pool.meta.key
        ns = pool.meta.namespace
        policy = policies.get(key)
        rewrites = sorted(
            (r for r in config.rewrites if r.meta.namespace == ns and r.pool == pool.meta.name),
            key=lambda r: (r.meta.creation, r.meta.key),
        )
        # Exact matches beat match-all rules; then the oldest resource; then list order.
        rules = [rule for r in rewrites for rule in r.rules if rule.models] + [
            rule for r in rewrites for rule in r.rules if not rule.models
        ]
        objectives = {
            o.meta.name: o.priority
            for o in config.objectives
            if o.meta.namespace == ns and o.pool == pool.meta.name
        }
        model_rules = {
            im.model_name: im
            for im in config.inference_models
            if im.meta.namespace == ns and im.pool == pool.meta.name
        }
        tp = traffic.get(key)
        profile = policy.profile if policy else BUILTIN_PROFILES["default"]
        if tp is not None and tp.limits.batch_target is not None and profile.scorers:
            packing = PackingFilter(batch_target=tp.limits.batch_target)
            profile = dataclasses.replace(profile, filters=(packing, *profile.filters))
        out[key] = PoolSettings(
            key=key,
            profile=profile,
            failure_mode=(policy.failure_mode if policy and policy.failure_mode else None)
            or pool.failure_mode,
            scrape_interval_s=policy.scrape_interval_s if policy else 0.05,
            scrape_timeout_s=policy.scrape_timeout_s if policy else 1.0,
            staleness_s=policy.staleness_s if policy else 0.5,
            prefix_block_chars=policy.prefix_block_chars if policy else 64,
            prefix_max_blocks=policy.prefix_max_blocks if policy else 256,
            prefix_capacity_blocks=policy.prefix_capacity_blocks if policy else 31_250,
            max_candidates=policy.max_candidates if policy else DEFAULT_MAX_CANDIDATES,
            objectives=objectives,
            rewrites=tuple(rules),
            model_rules=model_rules,
            traffic=tp.limits if tp else m.TrafficLimits(),
            model_traffic=dict(tp.model_limits) if tp else {},
            fairness_header=tp.fairness_header if tp else "x-gateway-inference-fairness-id",
            # a TrafficPolicy's feature: without one, requests are not held to be coalesced
            embeddings=tp.embeddings if tp else m.EmbeddingBatching(enabled=False),
            has_traffic_policy=tp is not None,
            autoscaling=_autoscaling(tp),
        )
    return out


def _autoscaling(tp: m.TrafficPolicy | None) -> AutoscaleSpec:
    if tp is not None and tp.autoscaling is not None:
        return tp.autoscaling
    per_replica = tp.limits.max_per_endpoint if tp is not None else None
    return AutoscaleSpec(target_per_replica=float(per_replica or 32))


def choose_model(
    settings: PoolSettings,
    requested: str,
    objective: str | None,
    rng: random.Random,
    chooser: Callable[[m.RewriteRule], str | None] | None = None,
) -> ModelChoice:
    """The target model for ``requested`` and the request's priority.

    Priority: the named InferenceObjective's, else the InferenceModel's criticality, else 0.
    Target: the first InferenceModelRewrite rule matching the model (weighted), else the
    InferenceModel's targetModels (weighted), else the model itself. ``chooser`` may pick a
    rewrite rule's target instead (sticky A/B assignment under a Rollout)."""
    priority = 0
    rule = settings.model_rules.get(requested)
    if rule is not None:
        priority = rule.priority
    if objective is not None and objective in settings.objectives:
        priority = settings.objectives[objective]
    for rw in settings.rewrites:
        if not rw.models or requested in rw.models:
            # a Rollout on this rule assigns by sticky key; otherwise weighted at random
            target = chooser(rw) if chooser is not None else None
            target = target or _weighted(rw.targets, rng)
            if target is not None:
                return ModelChoice(
                    requested=requested, target=target, priority=priority, rewritten=True
                )
    if rule is not None and rule.targets:
        target = _weighted(rule.targets, rng)
        if target is not None:
            return ModelChoice(
                requested=requested, target=target, priority=priority, rewritten=True
            )
    return ModelChoice(requested=requested, target=requested, priority=priority, rewritten=False)


def _weighted(targets: tuple[tuple[str, int], ...], rng: random.Random) -> str | None:
    cumulative, total = [], 0
    for _, weight in targets:
        total += weight
        cumulative.append(total)
    return choose_weighted([name for name, _ in targets], cumulative, rng)


def presets_by_engine(docs: Iterable[m.PresetDoc]) -> Mapping[str, Preset]:
    """Engine name (and aliases) → preset; a later document overrides an earlier one."""
    out: dict[str, Preset] = {}
    for doc in docs:
        for name in (doc.preset.name, *doc.aliases):
            out[name] = doc.preset
    return out
