"""Parse ``Rollout`` (``sluice.dev/v1alpha1``): a candidate variant's progressive rollout on one
HTTPRoute rule (variants are backendRef names) or InferenceModelRewrite rule (variants are
target model names), with sticky assignment, a tester override and optional shadowing.

```yaml
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: llm}
  ruleName: chat                 # HTTPRoute only; default: the first rule naming both variants
  baseline: llama-v1
  candidate: llama-v2
  sticky: {header: x-user-id, cookie: sluice-session, apiKey: true}   # tried in this order
  override: {header: x-sluice-variant}
  steps: [{weight: 10, duration: 2m}, {weight: 50, duration: 5m}, {weight: 100, duration: 0s}]
  analysis:                      # omitted: steps advance on time alone
    interval: 30s                # default 1m (Flagger's)
    minSamples: 50               # per variant and window
    failureThreshold: 1          # failing windows (not overlapping) before a rollback
    failureWindow: 10m           # optional: only failures judged this recently count
    maxErrorRateRatio: 2.0       # with maxErrorRateIncrease: fail only when both are exceeded
    maxErrorRateIncrease: 0.02
    maxTTFTp95Ratio: 1.5
    maxTPOTp95Ratio: 1.5
  shadow: {percent: 10, target: llama-v2, maxInFlight: 16, maxBytes: 1048576}
```

Checks that need other resources (the target exists, its rule names both variants) are in
``bind_rollout``, for the table builder; parsing sees one document.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from routing import model as m
from routing.reader import Reader
from routing.rollout import RolloutPlan, Step, Thresholds, min_failure_window
from routing.sticky import StickySpec

__all__ = [
    "DEFAULT_ANALYSIS_INTERVAL_S",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_SHADOW_MAX_BYTES",
    "DEFAULT_SHADOW_MAX_IN_FLIGHT",
    "MAX_STEPS",
    "RolloutBinding",
    "RolloutSpec",
    "Shadow",
    "bind_rollout",
    "parse_rollout",
]

DEFAULT_ANALYSIS_INTERVAL_S = 60.0
DEFAULT_MIN_SAMPLES = 50
DEFAULT_SHADOW_MAX_IN_FLIGHT = 16
DEFAULT_SHADOW_MAX_BYTES = 1 << 20
MAX_STEPS = 32
HTTPROUTE = "HTTPRoute"
MODEL_REWRITE = "InferenceModelRewrite"
_TARGET_GROUPS = {
    HTTPROUTE: frozenset({m.GATEWAY_GROUP}),
    MODEL_REWRITE: frozenset({m.INFERENCE_X_GROUP, m.INFERENCE_GROUP}),
}
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")  # RFC 9110 token: header/cookie names
_THRESHOLD_KEYS = (
    "maxErrorRateRatio",
    "maxErrorRateIncrease",
    "maxTTFTp95Ratio",
    "maxTPOTp95Ratio",
)
# stands in for the plan of a document that already has errors (it is rejected as a whole)
_REJECTED_PLAN = RolloutPlan(baseline="-", candidate="+", steps=(Step(weight=0, duration_s=0),))


@dataclass(frozen=True, slots=True, kw_only=True)
class Shadow:
    """Mirror ``percent`` % of the target's requests to ``target`` (default: the candidate),
    responses discarded; at most ``max_in_flight`` mirrors and ``max_bytes`` of body each."""

    target: str
    percent: int = 100
    max_in_flight: int = DEFAULT_SHADOW_MAX_IN_FLIGHT
    max_bytes: int = DEFAULT_SHADOW_MAX_BYTES


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutSpec:
    meta: m.Meta
    target: m.ObjectRef  # an HTTPRoute or InferenceModelRewrite in the Rollout's namespace
    rule_name: str | None = None
    plan: RolloutPlan
    sticky: StickySpec | None = None
    override_header: str | None = None  # lower case
    shadow: Shadow | None = None

    @property
    def salt(self) -> str:
        """The sticky-hash salt: one experiment's assignments are independent of another's."""
        return self.meta.key


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutBinding:
    """The rule a Rollout drives: ``rule`` indexes the HTTPRoute's rules or the rewrite's."""

    kind: str
    key: str  # namespace/name of the target
    rule: int
    variants: tuple[tuple[str, int], ...]  # (name, configured weight), in rule order


def parse_rollout(r: Reader, meta: m.Meta) -> RolloutSpec:
    spec = r.mapping("spec")
    errors_before = _error_count(r)
    target = _target(spec.mapping("targetRef"))
    rule_name = _name(spec, "ruleName")
    if rule_name is not None and target.kind == MODEL_REWRITE:
        spec.sink.error(spec.sub("ruleName"), "an InferenceModelRewrite's rules have no names")
    baseline, candidate = spec.req_str("baseline"), spec.req_str("candidate")
    if baseline and baseline == candidate:
        spec.sink.error(spec.sub("candidate"), "the candidate must differ from the baseline")
    steps = _steps(spec)
    analysis = _analysis(spec.opt_mapping("analysis"))
    sticky = _sticky(spec.opt_mapping("sticky"))
    override = _override(spec.opt_mapping("override"))
    shadow = _shadow(spec.opt_mapping("shadow"), baseline, candidate)
    spec.finish()
    plan = _REJECTED_PLAN
    if _error_count(r) == errors_before:
        # every rule RolloutPlan enforces was checked above, field by field
        plan = RolloutPlan(baseline=baseline, candidate=candidate, steps=steps, analysis=analysis)
    return RolloutSpec(
        meta=meta,
        target=target,
        rule_name=rule_name,
        plan=plan,
        sticky=sticky,
        override_header=override,
        shadow=shadow,
    )


def _error_count(r: Reader) -> int:
    return sum(1 for issue in r.sink.issues if issue.severity == "error")


def _target(r: Reader) -> m.ObjectRef:
    group, kind, name = r.string("group", required=True), r.req_str("kind"), r.req_str("name")
    r.finish()
    groups = _TARGET_GROUPS.get(kind)
    if kind and groups is None:
        r.sink.error(r.sub("kind"), f"a Rollout targets an {HTTPROUTE} or an {MODEL_REWRITE}")
    elif groups is not None and group is not None and group not in groups:
        r.sink.error(r.sub("group"), f"a {kind} is in group {' or '.join(sorted(groups))}")
    return m.ObjectRef(group=group or "", kind=kind, name=name)


def _name(r: Reader, key: str, *, token: bool = False) -> str | None:
    """An optional non-empty name; with ``token``, a valid HTTP header or cookie name."""
    value = r.string(key)
    if value is not None and not value:
        r.sink.error(r.sub(key), "must not be empty")
        return None
    if value is not None and token and not _TOKEN.match(value):
        r.sink.error(r.sub(key), f"{value!r} is not a valid HTTP token")
        return None
    return value


def _steps(spec: Reader) -> tuple[Step, ...]:
    def step(e: Reader) -> Step:
        if not e.has("weight"):
            e.sink.error(e.sub("weight"), "required field is missing")
        weight = _int(e, "weight", 0, lo=0, hi=100)
        return Step(weight=weight, duration_s=e.duration("duration", 0.0, required=True))

    steps = spec.list_of("steps", step)
    if not steps:
        spec.sink.error(spec.sub("steps"), "a Rollout needs at least one step")
    elif len(steps) > MAX_STEPS:
        spec.sink.error(spec.sub("steps"), f"at most {MAX_STEPS} steps")
    for i in range(1, len(steps)):
        if steps[i].weight < steps[i - 1].weight:
            spec.sink.warn(
                f"{spec.sub('steps')}[{i}].weight",
                "the weight goes down: sticky clients move back to the baseline",
            )
    return steps


def _analysis(r: Reader | None) -> Thresholds | None:
    if r is None:
        return None
    interval = r.duration("interval", DEFAULT_ANALYSIS_INTERVAL_S, positive=True)
    threshold = _int(r, "failureThreshold", 1, lo=1)
    window = r.duration("failureWindow", None)
    least = min_failure_window(Thresholds(interval_s=interval, failure_threshold=threshold))
    if window is not None and window < least:
        r.sink.error(
            r.sub("failureWindow"),
            f"must be at least 2 × failureThreshold × interval ({least:g}s): a lasting "
            "regression fails about once per interval and must reach the threshold "
            "before its first failure is forgiven",
        )
        window = None
    out = Thresholds(
        interval_s=interval,
        min_samples=_int(r, "minSamples", DEFAULT_MIN_SAMPLES, lo=1),
        failure_threshold=threshold,
        failure_window_s=window,
        max_error_rate_ratio=_bound(r, "maxErrorRateRatio"),
        max_error_rate_increase=_bound(r, "maxErrorRateIncrease", hi=1.0),
        max_ttft_p95_ratio=_bound(r, "maxTTFTp95Ratio"),
        max_tpot_p95_ratio=_bound(r, "maxTPOTp95Ratio"),
    )
    if not any(r.has(key) for key in _THRESHOLD_KEYS):
        r.sink.error(r.path, f"set at least one of {', '.join(_THRESHOLD_KEYS)}")
    r.finish()
    return out


def _bound(r: Reader, key: str, *, hi: float | None = None) -> float | None:
    """A ratio (> 0) or, with ``hi``, a rate difference in [0, hi]."""
    value = r.raw(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        r.sink.error(r.sub(key), f"expected a number, got {value!r}")
        return None
    if hi is None and value <= 0:
        r.sink.error(r.sub(key), "must be greater than 0")
        return None
    if hi is not None and not 0 <= value <= hi:
        r.sink.error(r.sub(key), f"must lie in [0, {hi:g}]")
        return None
    return float(value)


def _sticky(r: Reader | None) -> StickySpec | None:
    if r is None:
        return None
    header, cookie = _name(r, "header", token=True), _name(r, "cookie", token=True)
    out = StickySpec(
        header=None if header is None else header.lower(),
        cookie=cookie,
        api_key=r.flag("apiKey", False),
    )
    if not r.has("header") and not r.has("cookie") and r.raw("apiKey") in (None, False):
        r.sink.error(r.path, "set at least one of header, cookie or apiKey: true")
    r.finish()
    return out


def _override(r: Reader | None) -> str | None:
    if r is None:
        return None
    if not r.has("header"):
        r.sink.error(r.sub("header"), "required field is missing")
    header = _name(r, "header", token=True)
    r.finish()
    return None if header is None else header.lower()


def _shadow(r: Reader | None, baseline: str, candidate: str) -> Shadow | None:
    if r is None:
        return None
    target = _name(r, "target")
    if target is not None and target == baseline:
        r.sink.error(r.sub("target"), "mirroring to the baseline doubles its load for nothing")
    out = Shadow(
        target=target or candidate,
        percent=_int(r, "percent", 100, lo=0, hi=100),
        max_in_flight=_int(r, "maxInFlight", DEFAULT_SHADOW_MAX_IN_FLIGHT, lo=1),
        max_bytes=_int(r, "maxBytes", DEFAULT_SHADOW_MAX_BYTES, lo=0),
    )
    r.finish()
    return out


def _int(r: Reader, key: str, default: int, *, lo: int, hi: int | None = None) -> int:
    value = r.number(key, default, lo=lo, hi=hi)
    return default if value is None else value


def bind_rollout(spec: RolloutSpec, config: m.Config) -> RolloutBinding | str:
    """The rule ``spec`` drives, or why there is none (a warning: that Rollout stays inert).
    Without ``ruleName``, the first rule that names both the baseline and the candidate."""
    kind, key = spec.target.kind, f"{spec.meta.namespace}/{spec.target.name}"
    rules: list[tuple[str | None, tuple[tuple[str, int], ...]]]
    if kind == HTTPROUTE:
        route = next((o for o in config.routes if o.meta.key == key), None)
        if route is None:
            return f"{kind} {key} not found"
        rules = [
            (rule.name, tuple((b.ref.name, b.weight) for b in rule.backend_refs))
            for rule in route.rules
        ]
    else:
        rewrite = next((o for o in config.rewrites if o.meta.key == key), None)
        if rewrite is None:
            return f"{kind} {key} not found"
        rules = [(None, rule.targets) for rule in rewrite.rules]
    named = [i for i, (name, _) in enumerate(rules) if spec.rule_name in (None, name)]
    if not named:
        return f"{kind} {key} has no rule named {spec.rule_name!r}"
    plan = spec.plan
    for i in named:
        if {plan.baseline, plan.candidate} <= {name for name, _ in rules[i][1]}:
            return RolloutBinding(kind=kind, key=key, rule=i, variants=rules[i][1])
    where = f"rule {spec.rule_name!r} does not name" if spec.rule_name else "no rule names"
    return f"{kind} {key}: {where} both {plan.baseline!r} and {plan.candidate!r}"
