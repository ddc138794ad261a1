"""Parse the Inference Extension's model resources and Sluice's own inference kinds.

- InferenceObjective (``inference.networking.x-k8s.io/v1alpha2``): priority for requests that
  name it in ``x-gateway-inference-objective``.
- InferenceModelRewrite: the ``model`` a client sends → weighted target models.
- InferenceModel (older v1alpha2): modelName, criticality, targetModels.
- ModelServerPreset (``sluice.dev/v1alpha1``): metric names per engine.
- InferencePoolPolicy (``sluice.dev/v1alpha1``): the picker profile, scraping and failure mode
  of the InferencePools it targets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from routing import model as m
from routing.model import (
    InferenceModelRule,
    InferenceObjective,
    InferencePoolPolicy,
    ModelRewrite,
    PresetDoc,
    RewriteRule,
)
from routing.pipeline import Profile, WeightedScorer
from routing.plugins.registry import BUILTIN_PROFILES, FILTERS, PICKERS, SCORERS, Params
from routing.presets import CacheInfoSpec, LoraSpec, Preset
from routing.promtext import Selector
from routing.reader import Reader

__all__ = [
    "CRITICALITY_PRIORITY",
    "parse_inference_model",
    "parse_objective",
    "parse_pool_policy",
    "parse_preset",
    "parse_rewrite",
]

T = TypeVar("T")
CRITICALITY_PRIORITY = {"Critical": 100, "Standard": 0, "Sheddable": -1}


def _pool_ref(r: Reader) -> str:
    ref = r.mapping("poolRef")
    ref.ignore("group", "kind")
    name = ref.req_str("name")
    ref.finish()
    return name


def parse_objective(r: Reader, meta: m.Meta) -> InferenceObjective:
    spec = r.mapping("spec")
    objective = InferenceObjective(
        meta=meta, priority=spec.number("priority", 0) or 0, pool=_pool_ref(spec)
    )
    spec.finish()
    return objective


def _targets(r: Reader, key: str, name_key: str) -> tuple[tuple[str, int], ...]:
    def target(e: Reader) -> tuple[str, int]:
        return (e.req_str(name_key), e.number("weight", 1, lo=0, hi=1_000_000) or 0)

    return r.list_of(key, target)


def parse_rewrite(r: Reader, meta: m.Meta) -> ModelRewrite:
    spec = r.mapping("spec")

    def rule(e: Reader) -> RewriteRule:
        def match(mr: Reader) -> str:
            model = mr.mapping("model")
            kind = model.string("type", "Exact")
            if kind != "Exact":
                model.sink.error(model.sub("type"), "only Exact model matches are supported")
            value = model.req_str("value")
            model.finish()
            return value

        targets = _targets(e, "targets", "modelRewrite")
        if not targets:
            e.sink.error(e.sub("targets"), "a rule needs at least one target")
        return RewriteRule(models=e.list_of("matches", match), targets=targets)

    rules = spec.list_of("rules", rule)
    rules = tuple(
        RewriteRule(models=r.models, targets=r.targets, source=(meta.key, i))
        for i, r in enumerate(rules)
    )
    rewrite = ModelRewrite(meta=meta, pool=_pool_ref(spec), rules=rules)
    spec.finish()
    return rewrite


def parse_inference_model(r: Reader, meta: m.Meta) -> InferenceModelRule:
    spec = r.mapping("spec")
    criticality = spec.string("criticality", "Standard") or "Standard"
    if criticality not in CRITICALITY_PRIORITY:
        spec.sink.error(spec.sub("criticality"), "must be Critical, Standard or Sheddable")
    rule = InferenceModelRule(
        meta=meta,
        model_name=spec.req_str("modelName"),
        priority=CRITICALITY_PRIORITY.get(criticality, 0),
        targets=_targets(spec, "targetModels", "name"),
        pool=_pool_ref(spec),
    )
    spec.finish()
    return rule


def _selector(r: Reader | None) -> Selector | None:
    if r is None:
        return None
    selector = Selector(name=r.req_str("name"), labels=r.str_map("labels"))
    r.ignore(
        "runningLabel", "waitingLabel", "maxLabel", "blockSizeLabel", "numBlocksLabel", "scale"
    )
    return selector


def parse_preset(r: Reader, meta: m.Meta) -> PresetDoc:
    spec = r.mapping("spec")
    metrics = spec.mapping("metrics")
    kv = metrics.opt_mapping("kvUsage")
    lora_r, cache_r = metrics.opt_mapping("lora"), metrics.opt_mapping("cacheInfo")
    lora = cache = None
    if lora_r is not None:
        lora_sel = _selector(lora_r)
        lora = LoraSpec(
            selector=lora_sel or Selector(name=""),
            running_label=lora_r.string("runningLabel", "running_lora_adapters") or "",
            waiting_label=lora_r.string("waitingLabel", "waiting_lora_adapters") or "",
            max_label=lora_r.string("maxLabel", "max_lora") or "",
        )
        lora_r.finish()
    if cache_r is not None:
        cache = CacheInfoSpec(
            selector=_selector(cache_r) or Selector(name=""),
            block_size_label=cache_r.string("blockSizeLabel", "block_size") or "",
            num_blocks_label=cache_r.string("numBlocksLabel", "num_gpu_blocks") or "",
        )
        cache_r.finish()
    kv_scale = 1.0
    if kv is not None:
        scale = kv.raw("scale")
        kv_scale = float(scale) if isinstance(scale, int | float) else 1.0
    paths = spec.mapping("paths")
    preset = Preset(
        name=meta.name,
        queue=_selector(metrics.opt_mapping("queue")),
        running=_selector(metrics.opt_mapping("running")),
        kv_usage=_selector(kv),
        kv_scale=kv_scale,
        lora=lora,
        cache_info=cache,
        metrics_path=paths.string("metrics", "/metrics") or "/metrics",
        health_path=paths.string("health", "/health") or "/health",
        models_path=paths.string("models", "/v1/models") or "/v1/models",
    )
    if kv is not None:
        kv.finish()
    paths.finish()
    metrics.finish()
    doc = PresetDoc(meta=meta, preset=preset, aliases=spec.str_list("aliases"))
    spec.finish()
    return doc


def parse_pool_policy(r: Reader, meta: m.Meta) -> InferencePoolPolicy:
    spec = r.mapping("spec")

    def target(e: Reader) -> str:
        kind = e.req_str("kind")
        if kind != "InferencePool":
            e.sink.error(e.sub("kind"), "an InferencePoolPolicy targets InferencePools")
        e.ignore("group")
        return e.req_str("name")

    pools = spec.list_of("targetRefs", target)
    profile = _profile(spec)
    scrape = spec.mapping("scrape")
    prefix = spec.mapping("prefixCache")
    failure = spec.string("failureMode")
    if failure not in (None, "FailOpen", "FailClose"):
        spec.sink.error(spec.sub("failureMode"), "must be FailOpen or FailClose")
    policy = InferencePoolPolicy(
        meta=meta,
        pools=pools,
        profile=profile,
        scrape_interval_s=scrape.duration("interval", 0.05, positive=True),
        scrape_timeout_s=scrape.duration("timeout", 1.0, positive=True),
        staleness_s=scrape.duration("staleness", 0.5, positive=True),
        failure_mode=failure,
        prefix_block_chars=prefix.number("blockChars", 64, lo=1) or 64,
        prefix_max_blocks=prefix.number("maxBlocks", 256, lo=1) or 256,
        prefix_capacity_blocks=prefix.number("capacityBlocksPerEndpoint", 31_250, lo=1) or 1,
        max_candidates=spec.number("maxCandidates", 16, lo=2) or 16,
    )
    scrape.finish()
    prefix.finish()
    spec.finish()
    return policy


def _profile(spec: Reader) -> Profile:
    """A built-in profile by name, or filters/scorers/picker spelled out with registry names."""
    raw = spec.raw("profile")
    if raw is None:
        return BUILTIN_PROFILES["default"]
    if isinstance(raw, str):
        if raw not in BUILTIN_PROFILES:
            known = ", ".join(sorted(BUILTIN_PROFILES))
            spec.sink.error(spec.sub("profile"), f"unknown profile {raw!r} (known: {known})")
            return BUILTIN_PROFILES["default"]
        return BUILTIN_PROFILES[raw]
    r = spec.mapping("profile")
    filters = [f for f in r.list_of("filters", lambda e: _plugin(e, FILTERS)) if f is not None]
    scorers = [s for s in r.list_of("scorers", _scorer) if s is not None]
    picker_name = r.string("picker", "max-score") or "max-score"
    picker = _make(r, "picker", picker_name, PICKERS, {})
    r.finish()
    return Profile(
        name=f"{spec.path or 'custom'}",
        filters=tuple(filters),
        scorers=tuple(scorers),
        picker=picker if picker is not None else BUILTIN_PROFILES["default"].picker,
    )


def _plugin(e: Reader, registry: Mapping[str, Callable[[Params], T]]) -> T | None:
    params = e.raw("parameters")
    return _make(e, "name", e.req_str("name"), registry, params if isinstance(params, dict) else {})


def _scorer(e: Reader) -> WeightedScorer | None:
    weight = e.raw("weight")
    if weight is not None and (
        not isinstance(weight, int | float) or isinstance(weight, bool) or weight < 0
    ):
        e.sink.error(e.sub("weight"), "must be a number >= 0")
        return None
    scorer = _plugin(e, SCORERS)
    if scorer is None:
        return None
    return WeightedScorer(scorer=scorer, weight=float(weight) if weight is not None else 1.0)


def _make(
    r: Reader, key: str, name: str, registry: Mapping[str, Callable[[Params], T]], params: Params
) -> T | None:
    factory = registry.get(name)
    if factory is None:
        r.sink.error(r.sub(key), f"unknown plugin {name!r} (known: {', '.join(sorted(registry))})")
        return None
    try:
        return factory(params)
    except ValueError as exc:
        r.sink.error(r.sub("parameters"), str(exc))
        return None
