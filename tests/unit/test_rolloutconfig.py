"""Parsing the ``Rollout`` kind (routing/rolloutconfig.py): values, defaults, every error with its
field path, and binding a Rollout to the rule it drives.

Documents are read the way ``routing/config.py`` reads a Sluice kind: one ``Reader`` over the
decoded YAML, ``kind``/``apiVersion``/``metadata`` consumed by the caller, ``finish`` after.
"""

from __future__ import annotations

import pytest
import yaml

from routing import model as m
from routing.errors import ConfigIssue
from routing.reader import IssueSink, Reader
from routing.rollout import RolloutPlan, Step, Thresholds
from routing.rolloutconfig import (
    DEFAULT_ANALYSIS_INTERVAL_S,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_SHADOW_MAX_BYTES,
    DEFAULT_SHADOW_MAX_IN_FLIGHT,
    RolloutBinding,
    RolloutSpec,
    Shadow,
    bind_rollout,
    parse_rollout,
)
from routing.sticky import StickySpec
from tests.unit.manifests import config_of

HEAD = """
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: llama-v2, namespace: default}
"""

FULL = (
    HEAD
    + """
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: llm}
  ruleName: chat
  baseline: llama-v1
  candidate: llama-v2
  sticky: {header: X-User-Id, cookie: sluice-variant, apiKey: true}
  override: {header: X-Sluice-Variant}
  steps: [{weight: 10, duration: 2m}, {weight: 50, duration: 5m}, {weight: 100, duration: 0s}]
  analysis:
    interval: 30s
    minSamples: 50
    failureThreshold: 2
    failureWindow: 10m
    maxErrorRateRatio: 2.0
    maxErrorRateIncrease: 0.02
    maxTTFTp95Ratio: 1.5
    maxTPOTp95Ratio: 1.5
  shadow: {percent: 10, target: llama-v2, maxInFlight: 16, maxBytes: 1048576}
"""
)

META = m.Meta(name="llama-v2", namespace="default")
MINIMAL = """
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: llm}
  baseline: llama-v1
  candidate: llama-v2
  steps: [{weight: 100, duration: 0s}]
"""


def parse(text: str) -> tuple[RolloutSpec, list[ConfigIssue]]:
    sink = IssueSink(file="t.yaml", document=0)
    reader = Reader(yaml.safe_load(text), "", sink)
    reader.ignore("kind", "apiVersion", "metadata", "status")
    spec = parse_rollout(reader, META)
    reader.finish()
    return spec, sink.issues


def spec_of(body: str) -> RolloutSpec:
    spec, issues = parse(HEAD + "spec:" + body)
    assert issues == []
    return spec


def errors(body: str) -> set[str]:
    spec, issues = parse(HEAD + "spec:" + body)
    found = {i.path for i in issues if i.severity == "error"}
    assert found, "expected the document to be rejected"
    assert spec.plan.baseline == "-", "a rejected document carries the stand-in plan"
    return found


def test_the_documented_example():
    spec, issues = parse(FULL)
    assert issues == []
    assert spec == RolloutSpec(
        meta=META,
        target=m.ObjectRef(group=m.GATEWAY_GROUP, kind="HTTPRoute", name="llm"),
        rule_name="chat",
        plan=RolloutPlan(
            baseline="llama-v1",
            candidate="llama-v2",
            steps=(
                Step(weight=10, duration_s=120.0),
                Step(weight=50, duration_s=300.0),
                Step(weight=100, duration_s=0.0),
            ),
            analysis=Thresholds(
                interval_s=30.0,
                min_samples=50,
                failure_threshold=2,
                failure_window_s=600.0,
                max_error_rate_ratio=2.0,
                max_error_rate_increase=0.02,
                max_ttft_p95_ratio=1.5,
                max_tpot_p95_ratio=1.5,
            ),
        ),
        sticky=StickySpec(header="x-user-id", cookie="sluice-variant", api_key=True),
        override_header="x-sluice-variant",
        shadow=Shadow(target="llama-v2", percent=10, max_in_flight=16, max_bytes=1048576),
    )
    assert spec.salt == "default/llama-v2"


def test_defaults():
    spec = spec_of(MINIMAL)
    assert spec.rule_name is None
    assert spec.plan.analysis is None
    assert (spec.sticky, spec.override_header, spec.shadow) == (None, None, None)


def test_analysis_and_shadow_defaults():
    spec = spec_of(MINIMAL + "  analysis: {maxTTFTp95Ratio: 2}\n  shadow: {}\n")
    assert spec.plan.analysis == Thresholds(
        interval_s=DEFAULT_ANALYSIS_INTERVAL_S,
        min_samples=DEFAULT_MIN_SAMPLES,
        max_ttft_p95_ratio=2.0,
    )
    assert spec.shadow == Shadow(
        target="llama-v2",
        percent=100,
        max_in_flight=DEFAULT_SHADOW_MAX_IN_FLIGHT,
        max_bytes=DEFAULT_SHADOW_MAX_BYTES,
    )


@pytest.mark.parametrize("group", [m.INFERENCE_X_GROUP, m.INFERENCE_GROUP], ids=["x-k8s", "k8s"])
def test_a_model_rewrite_target(group):
    spec = spec_of(
        MINIMAL.replace(
            "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: llm}",
            f"{{group: {group}, kind: InferenceModelRewrite, name: sql}}",
        )
    )
    assert spec.target == m.ObjectRef(group=group, kind="InferenceModelRewrite", name="sql")


def test_sticky_api_key_alone():
    assert spec_of(MINIMAL + "  sticky: {apiKey: true}\n").sticky == StickySpec(api_key=True)


def test_decreasing_weights_are_allowed_with_a_warning():
    body = MINIMAL.replace(
        "[{weight: 100, duration: 0s}]", "[{weight: 50, duration: 1m}, {weight: 20, duration: 1m}]"
    )
    spec, issues = parse(HEAD + "spec:" + body)
    assert [(i.severity, i.path) for i in issues] == [("warning", "spec.steps[1].weight")]
    assert [s.weight for s in spec.plan.steps] == [50, 20]


TARGET = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: llm}"
ON_ROUTE = TARGET
ON_REWRITE = "{group: inference.networking.x-k8s.io, kind: InferenceModelRewrite, name: sql}"
ONE_STEP = "[{weight: 100, duration: 0s}]"


def body(**fields: str) -> str:
    """A spec from MINIMAL's fields with some replaced (value None: removed) or added."""
    base = {"targetRef": TARGET, "baseline": "llama-v1", "candidate": "llama-v2"}
    base["steps"] = ONE_STEP
    base.update(fields)
    return "\n" + "".join(f"  {k}: {v}\n" for k, v in base.items() if v != "-")


INVALID = [
    ("spec-missing", "\n  {}\n", None),
    (
        "target-missing",
        body(targetRef="-"),
        {"spec.targetRef.group", "spec.targetRef.kind", "spec.targetRef.name"},
    ),
    (
        "target-kind",
        body(targetRef="{group: '', kind: Service, name: llm}"),
        {"spec.targetRef.kind"},
    ),
    (
        "target-group",
        body(targetRef="{group: inference.networking.x-k8s.io, kind: HTTPRoute, name: llm}"),
        {"spec.targetRef.group"},
    ),
    (
        "target-unknown-field",
        body(targetRef="{group: gateway.networking.k8s.io, kind: HTTPRoute, name: a, port: 1}"),
        {"spec.targetRef.port"},
    ),
    ("target-name-missing", body(targetRef="{group: g, kind: HTTPRoute}"), None),
    (
        "rule-name-on-rewrite",
        body(
            targetRef=ON_REWRITE,
            ruleName="chat",
        ),
        {"spec.ruleName"},
    ),
    ("rule-name-empty", body(ruleName="''"), {"spec.ruleName"}),
    ("baseline-missing", body(baseline="-"), {"spec.baseline"}),
    ("candidate-not-a-string", body(candidate="[a]"), {"spec.candidate"}),
    ("same-variants", body(candidate="llama-v1"), {"spec.candidate"}),
    ("steps-missing", body(steps="-"), {"spec.steps"}),
    ("steps-empty", body(steps="[]"), {"spec.steps"}),
    ("steps-too-many", body(steps="[" + ", ".join(["{weight: 1, duration: 1s}"] * 33) + "]"), None),
    ("step-weight-missing", body(steps="[{duration: 1m}]"), {"spec.steps[0].weight"}),
    ("step-weight-high", body(steps="[{weight: 101, duration: 1m}]"), {"spec.steps[0].weight"}),
    ("step-weight-float", body(steps="[{weight: 0.5, duration: 1m}]"), {"spec.steps[0].weight"}),
    ("step-duration-missing", body(steps="[{weight: 10}]"), {"spec.steps[0].duration"}),
    (
        "step-duration-form",
        body(steps="[{weight: 10, duration: 2 minutes}]"),
        {"spec.steps[0].duration"},
    ),
    ("step-unknown-field", body(steps="[{weight: 10, duration: 1m, pause: true}]"), None),
    ("analysis-no-threshold", body(analysis="{interval: 30s}"), {"spec.analysis"}),
    (
        "analysis-interval-zero",
        body(analysis="{interval: 0s, maxErrorRateRatio: 2}"),
        {"spec.analysis.interval"},
    ),
    (
        "analysis-min-samples",
        body(analysis="{minSamples: 0, maxErrorRateRatio: 2}"),
        {"spec.analysis.minSamples"},
    ),
    (
        "analysis-failure-threshold",
        body(analysis="{failureThreshold: 0, maxErrorRateRatio: 2}"),
        {"spec.analysis.failureThreshold"},
    ),
    (
        "failure-window-too-short",  # under 2 × failureThreshold × interval
        body(
            analysis="{interval: 30s, failureThreshold: 2, failureWindow: 119s, "
            "maxErrorRateRatio: 2}"
        ),
        {"spec.analysis.failureWindow"},
    ),
    (
        "failure-window-form",
        body(analysis="{failureWindow: ten minutes, maxErrorRateRatio: 2}"),
        {"spec.analysis.failureWindow"},
    ),
    ("ratio-zero", body(analysis="{maxErrorRateRatio: 0}"), {"spec.analysis.maxErrorRateRatio"}),
    ("ratio-bool", body(analysis="{maxTTFTp95Ratio: true}"), {"spec.analysis.maxTTFTp95Ratio"}),
    ("ratio-text", body(analysis="{maxTPOTp95Ratio: fast}"), {"spec.analysis.maxTPOTp95Ratio"}),
    ("ratio-nan", body(analysis="{maxTPOTp95Ratio: .nan}"), {"spec.analysis.maxTPOTp95Ratio"}),
    (
        "increase-above-1",
        body(analysis="{maxErrorRateIncrease: 2}"),
        {"spec.analysis.maxErrorRateIncrease"},
    ),
    (
        "analysis-unknown-field",
        body(analysis="{maxErrorRateRatio: 2, successCondition: x}"),
        {"spec.analysis.successCondition"},
    ),
    ("sticky-empty", body(sticky="{}"), {"spec.sticky"}),
    ("sticky-api-key-false", body(sticky="{apiKey: false}"), {"spec.sticky"}),
    ("sticky-bad-header", body(sticky="{header: 'x user'}"), {"spec.sticky.header"}),
    ("sticky-empty-cookie", body(sticky="{cookie: ''}"), {"spec.sticky.cookie"}),
    ("sticky-api-key-text", body(sticky="{apiKey: yes please}"), {"spec.sticky.apiKey"}),
    ("sticky-unknown-field", body(sticky="{header: a, query: b}"), {"spec.sticky.query"}),
    ("override-empty", body(override="{}"), {"spec.override.header"}),
    ("override-bad-header", body(override="{header: 'a:b'}"), {"spec.override.header"}),
    ("shadow-percent", body(shadow="{percent: 150}"), {"spec.shadow.percent"}),
    ("shadow-in-flight", body(shadow="{maxInFlight: 0}"), {"spec.shadow.maxInFlight"}),
    ("shadow-bytes", body(shadow="{maxBytes: -1}"), {"spec.shadow.maxBytes"}),
    ("shadow-to-baseline", body(shadow="{target: llama-v1}"), {"spec.shadow.target"}),
    ("spec-unknown-field", body(canaryService="x"), {"spec.canaryService"}),
]


@pytest.mark.parametrize(
    ("body_", "expected"), [x[1:] for x in INVALID], ids=[x[0] for x in INVALID]
)
def test_invalid(body_, expected):
    found = errors(body_)
    if expected is not None:
        assert found == expected


def test_every_error_is_collected():
    found = errors(
        body(candidate="llama-v1", steps="[{weight: 200, duration: x}]", shadow="{percent: -1}")
    )
    assert found == {
        "spec.candidate",
        "spec.steps[0].weight",
        "spec.steps[0].duration",
        "spec.shadow.percent",
    }


ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: llm, namespace: default}
spec:
  rules:
  - name: embed
    backendRefs: [{name: embedder}]
  - name: other
    backendRefs: [{name: llama-v1, weight: 3}, {name: mistral, weight: 1}]
  - name: chat
    backendRefs: [{name: llama-v1, weight: 1}, {name: llama-v2, weight: 0}, {name: x, weight: 1}]
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: sql, namespace: default}
spec:
  poolRef: {name: llama}
  rules:
  - matches: [{model: {type: Exact, value: sql}}]
    targets: [{modelRewrite: sql-lora, weight: 90}, {modelRewrite: chat-lora, weight: 10}]
  - targets: [{modelRewrite: llama-v1, weight: 1}, {modelRewrite: llama-v2, weight: 0}]
"""


def _rollout(target: str, rule: str = "") -> RolloutSpec:
    return spec_of(body(targetRef=target, **({"ruleName": rule} if rule else {})))


@pytest.mark.parametrize(
    ("target", "rule", "expected"),
    [
        (
            ON_ROUTE,
            "",
            RolloutBinding(
                kind="HTTPRoute",
                key="default/llm",
                rule=2,
                variants=(("llama-v1", 1), ("llama-v2", 0), ("x", 1)),
            ),
        ),
        (ON_ROUTE, "chat", 2),
        (ON_ROUTE, "other", "HTTPRoute default/llm: rule 'other' does not name both"),
        (ON_ROUTE, "nope", "HTTPRoute default/llm has no rule named 'nope'"),
        (
            ON_REWRITE,
            "",
            RolloutBinding(
                kind="InferenceModelRewrite",
                key="default/sql",
                rule=1,
                variants=(("llama-v1", 1), ("llama-v2", 0)),
            ),
        ),
        (ON_ROUTE.replace("llm", "gone"), "", "HTTPRoute default/gone not found"),
        (ON_REWRITE.replace("sql", "gone"), "", "InferenceModelRewrite default/gone not found"),
    ],
    ids=[
        "route-default-rule",
        "route-named",
        "rule-lacks",
        "no-such-rule",
        "rewrite",
        "gone",
        "gone-rw",
    ],
)
def test_bind_rollout(target, rule, expected):
    config = config_of(ROUTE)
    bound = bind_rollout(_rollout(target, rule), config)
    if isinstance(expected, int):
        assert isinstance(bound, RolloutBinding)
        assert bound.rule == expected
    elif isinstance(expected, str):
        assert isinstance(bound, str)
        assert bound.startswith(expected)
    else:
        assert bound == expected


def test_no_rule_names_both():
    config = config_of(ROUTE)
    spec = spec_of(body(targetRef=ON_ROUTE, candidate="llama-v9"))
    assert bind_rollout(spec, config) == (
        "HTTPRoute default/llm: no rule names both 'llama-v1' and 'llama-v9'"
    )
