"""Config errors, the contract of ``routing.parse_config`` (routing/config.py, STYLE.md §B):
every issue is collected, none stops the walk, and each names file, document index and field
path; unknown kinds are ignored; unknown fields of known kinds are errors.
"""

from __future__ import annotations

import pytest

from routing import ConfigError, RawDocument, parse_config
from routing import model as m
from tests.unit.manifests import (
    FILE,
    errors_of,
    gateway_doc,
    issues_of,
    parse,
    pool_doc,
    route_rule,
)

# (id, config, the exact set of (document, path) of its errors); HTTPRoute errors are in
# test_routeconfig_errors.py
INVALID = [
    ("document-not-a-mapping", "[1, 2]", {(0, "")}),
    ("kind-missing", "apiVersion: v1\nmetadata: {name: x}", {(0, "kind")}),
    ("api-version-missing", "kind: Service\nmetadata: {name: x}", {(0, "apiVersion")}),
    (
        "name-missing",
        "apiVersion: v1\nkind: Service\nmetadata: {namespace: a}\nspec: {}",
        {(0, "metadata.name")},
    ),
    (
        "name-not-a-string",
        "apiVersion: v1\nkind: Service\nmetadata: {name: 5}\nspec: {}",
        {(0, "metadata.name")},
    ),
    (
        "metadata-unknown-field",
        "apiVersion: v1\nkind: Service\nmetadata: {name: x, colour: red}\nspec: {}",
        {(0, "metadata.colour")},
    ),
    (
        "labels-not-a-mapping",
        "apiVersion: v1\nkind: Service\nmetadata: {name: x, labels: [a]}\nspec: {}",
        {(0, "metadata.labels")},
    ),
    (
        "label-value-not-scalar",
        "apiVersion: v1\nkind: Service\nmetadata: {name: x, labels: {app: [a]}}\nspec: {}",
        {(0, "metadata.labels.app")},
    ),
    ("gateway-no-listeners", gateway_doc(""), {(0, "spec.listeners")}),
    (
        "gateway-class-name-missing",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\n"
        "spec: {listeners: [{name: a, port: 80, protocol: HTTP}]}",
        {(0, "spec.gatewayClassName")},
    ),
    (
        "listener-name-twice",
        gateway_doc("{name: a, port: 80, protocol: HTTP}, {name: a, port: 81, protocol: HTTP}"),
        {(0, "spec.listeners")},
    ),
    (
        "listener-port",
        gateway_doc("{name: a, port: 0, protocol: HTTP}"),
        {(0, "spec.listeners[0].port")},
    ),
    (
        "listener-protocol-missing",
        gateway_doc("{name: a, port: 80}"),
        {(0, "spec.listeners[0].protocol")},
    ),
    (
        "allowed-routes-from",
        gateway_doc(
            "{name: a, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Any}}}"
        ),
        {(0, "spec.listeners[0].allowedRoutes.namespaces.from")},
    ),
    (
        "allowed-routes-selector-missing",
        gateway_doc(
            "{name: a, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector}}}"
        ),
        {(0, "spec.listeners[0].allowedRoutes.namespaces.selector")},
    ),
    (
        "allowed-routes-selector-operator",
        gateway_doc(
            "{name: a, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, "
            "selector: {matchExpressions: [{key: env, operator: Equals, values: [a]}]}}}}"
        ),
        {(0, "spec.listeners[0].allowedRoutes.namespaces.selector.matchExpressions[0].operator")},
    ),
    (
        "allowed-routes-selector-unknown-field",
        gateway_doc(
            "{name: a, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, "
            "selector: {labels: {a: b}}}}}"
        ),
        {(0, "spec.listeners[0].allowedRoutes.namespaces.selector.labels")},
    ),
    (
        "allowed-routes-kind-missing",
        gateway_doc("{name: a, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{group: g}]}}"),
        {(0, "spec.listeners[0].allowedRoutes.kinds[0].kind")},
    ),
    (
        "gateway-class-controller-missing",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: c}\n"
        "spec: {}",
        {(0, "spec.controllerName")},
    ),
    (
        "reference-grant-from-namespace",
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n"
        "metadata: {name: g}\nspec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute}],"
        " to: [{kind: Service}]}",
        {(0, "spec.from[0].namespace")},
    ),
    (
        "reference-grant-to-kind",
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n"
        "metadata: {name: g}\nspec: {to: [{group: ''}]}",
        {(0, "spec.to[0].kind")},
    ),
    (
        "service-port",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 65536}]}",
        {(0, "spec.ports[0].port")},
    ),
    (
        "service-port-unknown-field",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 1, ip: x}]}",
        {(0, "spec.ports[0].ip")},
    ),
    (
        "endpoint-slice-port",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\n"
        "ports: [{name: a, port: 0}]",
        {(0, "ports[0].port")},
    ),
    (
        "endpoint-slice-endpoint-unknown-field",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\n"
        "endpoints: [{addresses: [10.0.0.1], weight: 2}]",
        {(0, "endpoints[0].weight")},
    ),
    (
        "endpoint-slice-ready-not-bool",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\n"
        "endpoints: [{addresses: [10.0.0.1], conditions: {ready: 'no'}}]",
        {(0, "endpoints[0].conditions.ready")},
    ),
    (
        "endpoint-slice-address-not-string",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\n"
        "endpoints: [{addresses: [[1]]}]",
        {(0, "endpoints[0].addresses[0]")},
    ),
    (
        "pool-no-target-port",
        pool_doc("selector: {matchLabels: {app: a}}"),
        {(0, "spec.targetPorts")},
    ),
    (
        "pool-target-port-number",
        pool_doc("selector: {matchLabels: {app: a}}\ntargetPorts: [{number: 0}]"),
        {(0, "spec.targetPorts[0].number")},
    ),
    (
        "pool-target-port-unknown-field",
        pool_doc("selector: {matchLabels: {app: a}}\ntargetPorts: [{number: 80, name: http}]"),
        {(0, "spec.targetPorts[0].name")},
    ),
    (
        "pool-v1-selector-unknown-field",
        pool_doc("selector: {matchLabels: {app: a}, other: 1}\ntargetPorts: [{number: 80}]"),
        {(0, "spec.selector.other")},
    ),
    (
        "pool-failure-mode",
        pool_doc(
            "selector: {matchLabels: {app: a}}\ntargetPorts: [{number: 80}]\n"
            "endpointPickerRef: {name: epp, failureMode: FailSometimes}"
        ),
        {(0, "spec.endpointPickerRef.failureMode")},
    ),
    (
        "pool-picker-port",
        pool_doc(
            "selector: {matchLabels: {app: a}}\ntargetPorts: [{number: 80}]\n"
            "endpointPickerRef: {name: epp, port: {number: 70000}}"
        ),
        {(0, "spec.endpointPickerRef.port.number")},
    ),
    (
        "pool-picker-name",
        pool_doc(
            "selector: {matchLabels: {app: a}}\ntargetPorts: [{number: 80}]\nendpointPickerRef: {}"
        ),
        {(0, "spec.endpointPickerRef.name")},
    ),
    (
        "pool-v1alpha2-port-number",
        "apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferencePool\n"
        "metadata: {name: p}\nspec: {selector: {app: a}, targetPortNumber: 0}",
        {(0, "spec.targetPortNumber")},
    ),
    (
        "pool-v1alpha2-extension-port",
        "apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferencePool\n"
        "metadata: {name: p}\nspec: {selector: {app: a}, targetPortNumber: 8000, "
        "extensionRef: {name: epp, portNumber: 0}}",
        {(0, "spec.extensionRef.portNumber")},
    ),
    (
        "traffic-policy-sheddable-limit",
        "apiVersion: sluice.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: t}\n"
        "spec: {targetRefs: [{kind: InferencePool, name: p}], "
        "concurrency: {sheddableLimit: 0.5, maxPrefillPerEndpoint: 0}}",
        {(0, "spec.concurrency.sheddableLimit"), (0, "spec.concurrency.maxPrefillPerEndpoint")},
    ),
    (
        "traffic-policy-sheddable-limit-range",
        "apiVersion: sluice.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: t}\n"
        "spec: {targetRefs: [{kind: InferencePool, name: p}], "
        "concurrency: {maxPerEndpoint: 8, sheddableLimit: 1.5}}",
        {(0, "spec.concurrency.sheddableLimit")},
    ),
    (
        "traffic-policy-sheddable-objective",
        "apiVersion: sluice.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: t}\n"
        "spec: {targetRefs: [{kind: InferencePool, name: p}], "
        "concurrency: {sheddableTTFTObjective: 300ms}}",
        {(0, "spec.concurrency.sheddableTTFTObjective")},  # needs maxPerEndpoint
    ),
    (
        "traffic-policy-sheddable-objective-value",
        "apiVersion: sluice.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: t}\n"
        "spec: {targetRefs: [{kind: InferencePool, name: p}], "
        "concurrency: {maxPerEndpoint: 8, sheddableTTFTObjective: soon}}",
        {(0, "spec.concurrency.sheddableTTFTObjective")},
    ),
    (
        "traffic-policy-sheddable-objective-zero",
        "apiVersion: sluice.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: t}\n"
        "spec: {targetRefs: [{kind: InferencePool, name: p}], "
        "concurrency: {maxPerEndpoint: 8, sheddableTTFTObjective: 0s}}",
        {(0, "spec.concurrency.sheddableTTFTObjective")},
    ),
    (
        "pool-unknown-field",
        pool_doc("selector: {matchLabels: {app: a}}\ntargetPorts: [{number: 80}]\nreplicas: 2"),
        {(0, "spec.replicas")},
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_config_names_every_error_path(text: str, expected: set[tuple[int, str]]) -> None:
    assert errors_of(text) == expected


def test_issues_name_file_document_and_path_and_read_well() -> None:
    text = "kind: Namespace\napiVersion: v1\nmetadata: {name: a}\n---\n" + route_rule(
        "matches: [{path: {value: /a}}, {path: {value: rel}}]"
    )
    (issue,) = issues_of(text)
    assert (issue.file, issue.document, issue.path) == (
        FILE,
        1,
        "spec.rules[0].matches[1].path.value",
    )
    assert issue.severity == "error"
    assert str(issue) == (
        f"{FILE}: document 1: spec.rules[0].matches[1].path.value: error: "
        "must be an absolute path starting with '/'"
    )


def test_every_issue_is_collected_across_documents() -> None:
    text = "\n---\n".join(
        [
            gateway_doc("{name: a, port: 0, protocol: HTTP}, {name: a, port: 80}"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\ndata: {any: thing}",
            route_rule(
                "matches: [{path: {value: x}, method: get}]\n"
                "backendRefs: [{name: s, weight: -2, colour: red}]"
            ),
        ]
    )
    with pytest.raises(ConfigError) as caught:
        parse(text)
    found = {(i.document, i.path) for i in caught.value.issues}
    assert found == {
        (0, "spec.listeners[0].port"),
        (0, "spec.listeners[1].protocol"),
        (0, "spec.listeners"),
        (2, "spec.rules[0].matches[0].path.value"),
        (2, "spec.rules[0].matches[0].method"),
        (2, "spec.rules[0].backendRefs[0].weight"),
        (2, "spec.rules[0].backendRefs[0].colour"),
    }
    assert caught.value.message == "7 config error(s)"
    assert caught.value.code == "invalid_config"


def test_error_message_counts_errors_but_issues_keep_warnings() -> None:
    text = gateway_doc("{name: a, port: 80, protocol: TCP}, {name: b, port: 0, protocol: HTTP}")
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert caught.value.message == "1 config error(s)"
    assert sorted((i.severity, i.path) for i in caught.value.issues) == [
        ("error", "spec.listeners[1].port"),
        ("warning", "spec.listeners[0].protocol"),
    ]


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (gateway_doc("{name: tcp, port: 9000, protocol: TCP}"), "spec.listeners[0].protocol"),
    ],
    ids=["listener-protocol-not-served"],
)
def test_warnings_do_not_reject_the_config(text: str, path: str) -> None:
    _, warnings = parse(text)
    assert [(w.severity, w.document, w.path) for w in warnings] == [("warning", 0, path)]


UNKNOWN_KINDS = [
    ("config-map", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}"),
    ("deployment", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {x: 1}"),
    (
        "known-kind-of-another-group",
        "apiVersion: example.com/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {what: ever}",
    ),
    (
        "tls-route",
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {name: t}\n"
        "spec: {anything: [1]}",
    ),
    ("empty-document", ""),
]


@pytest.mark.parametrize("text", [t for _, t in UNKNOWN_KINDS], ids=[i for i, _ in UNKNOWN_KINDS])
def test_unknown_kinds_are_ignored(text: str) -> None:
    config, warnings = parse(text + "\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}")
    assert warnings == ()
    assert config == m.Config(namespaces=config.namespaces)
    assert [n.meta.name for n in config.namespaces] == ["a"]


def test_raw_documents_keep_their_own_file_and_index() -> None:
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"x": 1}}
    with pytest.raises(ConfigError) as caught:
        parse_config(
            [
                RawDocument(file="a.yaml", index=3, data=None),
                RawDocument(file="b.yaml", index=5, data=bad),
            ]
        )
    assert [(i.file, i.document, i.path) for i in caught.value.issues] == [("b.yaml", 5, "spec.x")]


def _svc(name: str, port: int, namespace: str = "default") -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"port": port}]}}  # fmt: skip


def test_a_later_object_of_the_same_kind_and_name_replaces_the_earlier_with_a_warning() -> None:
    cls = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
           "metadata": {"name": "c"},
           "spec": {"controllerName": "sluice.dev/gateway-controller"}}  # fmt: skip
    config, warnings = parse_config(
        [
            RawDocument(file="a.yaml", index=0, data=_svc("s", 80)),
            RawDocument(file="a.yaml", index=1, data=_svc("s", 80, namespace="other")),
            RawDocument(file="a.yaml", index=2, data=cls),
            RawDocument(file="b.yaml", index=4, data=_svc("s", 9000)),
            RawDocument(file="b.yaml", index=5, data=cls),
        ]
    )
    by_ns = {s.meta.namespace: s for s in config.services}
    assert len(config.services) == 2  # one per namespace: other/s is a different object
    assert by_ns["default"].meta.source == "b.yaml"  # the later one, as kubectl apply leaves it
    assert len(config.gateway_classes) == 1
    assert [(w.file, w.document, w.path, w.severity) for w in warnings] == [
        ("b.yaml", 4, "metadata.name", "warning"),
        ("b.yaml", 5, "metadata.name", "warning"),
    ]
    assert warnings[0].message == (
        "Service default/s is also defined in a.yaml document 0: this one is used"
    )
    assert warnings[1].message.startswith("GatewayClass c is also defined in a.yaml document 2")


def test_table_warnings_name_the_file_and_document_of_their_object() -> None:
    from routing.table import build_table

    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "r"}, "spec": {"parentRefs": [{"name": "nowhere"}]}}  # fmt: skip
    config, _ = parse_config(
        [
            RawDocument(file="a.yaml", index=0, data=None),
            RawDocument(file="b.yaml", index=7, data=route),
        ]
    )
    issues = build_table(config).issues
    assert [(i.file, i.document, i.severity) for i in issues] == [("b.yaml", 7, "warning")]
    assert "HTTPRoute default/r is not attached" in issues[0].message
