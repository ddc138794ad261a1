"""backendRefs resolved to endpoints (routing/backends.py) and compiled into rules (table.py).

Service: backendRef port -> Service port (its name) -> EndpointSlices labelled
kubernetes.io/service-name -> the slice port of that name -> ready addresses. InferencePool:
slices whose labels match the pool selector, on the slice ports or else the pool's targetPorts.
Cross-namespace references need a ReferenceGrant ("ReferenceGrant ... in the target namespace").
"""

from __future__ import annotations

import dataclasses

import pytest

from routing import CompiledRule, InvalidTarget, PoolTarget, ServiceTarget, Target, build_table
from routing import model as m
from routing.backends import Endpoint, Resolver, reads_object, referenced_objects
from tests.unit.manifests import GATEWAY, config_of, request, route, table_of, winner

SERVICE = """
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: backends}
spec:
  ports:
  - {name: http, port: 8080, targetPort: 9000, appProtocol: kubernetes.io/h2c}
  - {name: metrics, port: 9090}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-1, namespace: backends, labels: {kubernetes.io/service-name: svc}}
endpoints:
- {addresses: [10.0.0.1], conditions: {ready: true}}
- {addresses: [10.0.0.2], conditions: {ready: false}}
- {addresses: [10.0.0.3, 10.0.0.4]}
ports: [{name: http, port: 9001}, {name: metrics, port: 9091}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-2, namespace: backends, labels: {kubernetes.io/service-name: svc}}
endpoints: [{addresses: [10.0.0.1, 10.0.0.5]}]
ports: [{name: http, port: 9001}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-3, namespace: backends, labels: {kubernetes.io/service-name: svc}}
endpoints: [{addresses: [10.0.0.6]}]
ports: [{name: grpc, port: 7000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other, namespace: backends, labels: {kubernetes.io/service-name: other}}
endpoints: [{addresses: [10.9.9.9]}]
ports: [{name: http, port: 9001}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc, namespace: elsewhere, labels: {kubernetes.io/service-name: svc}}
endpoints: [{addresses: [10.8.8.8]}]
ports: [{name: http, port: 9001}]
"""

POOL = """
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: pool, namespace: backends}
spec:
  selector: {matchLabels: {app: vllm}}
  targetPorts: [{number: 8000}, {number: 8001}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: pods, namespace: backends, labels: {app: vllm, zone: a}}
endpoints:
- {addresses: [10.1.0.1], labels: {zone: b, gpu: h100}}
- {addresses: [10.1.0.2], conditions: {ready: false}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: pods-with-ports, namespace: backends, labels: {app: vllm}}
endpoints: [{addresses: [10.1.0.3]}]
ports: [{name: http, port: 9500}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: not-vllm, namespace: backends, labels: {app: sglang}}
endpoints: [{addresses: [10.1.0.9]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: far, namespace: elsewhere, labels: {app: vllm}}
endpoints: [{addresses: [10.1.0.8]}]
"""


PODS = """
---
apiVersion: v1
kind: Pod
metadata: {name: vllm-evicted, namespace: backends, labels: {app: vllm}}
status: {phase: Failed, podIP: 10.2.0.1, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: vllm-0, namespace: backends, labels: {app: vllm, zone: a}}
spec: {containers: [{name: vllm, image: vllm/vllm-openai, ports: [{containerPort: 8000}]}]}
status:
  phase: Running
  podIP: 10.2.0.1
  podIPs: [{ip: 10.2.0.1}, {ip: "fd00::1"}]
  conditions: [{type: Ready, status: "True"}, {type: PodScheduled, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata: {name: vllm-1, namespace: backends, labels: {app: vllm}}
status: {podIP: 10.2.0.2, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: vllm-2
  namespace: backends
  labels: {app: vllm}
  deletionTimestamp: "2026-12-01T00:00:00Z"
status: {podIP: 10.2.0.3, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: vllm-pending, namespace: backends, labels: {app: vllm}}
status: {phase: Pending}
---
apiVersion: v1
kind: Pod
metadata: {name: vllm-new, namespace: backends, labels: {app: vllm}}
---
apiVersion: v1
kind: Pod
metadata: {name: sglang-0, namespace: backends, labels: {app: sglang}}
status: {podIP: 10.2.0.9, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: vllm-far, namespace: elsewhere, labels: {app: vllm}}
status: {podIP: 10.2.0.8, conditions: [{type: Ready, status: "True"}]}
"""


def _resolve(ref: str, *, extra: str = "", from_ns: str = "backends") -> Target:
    """Resolve the backendRef ``ref`` (a YAML flow mapping) written in namespace ``from_ns``."""
    config = config_of(
        GATEWAY
        + SERVICE
        + POOL
        + extra
        + route("r", f"rules: [{{backendRefs: [{ref}]}}]", namespace=from_ns)
    )
    (rule,) = config.routes[0].rules
    resolver = Resolver(config)
    return resolver.resolve(rule.backend_refs[0].ref, from_kind="HTTPRoute", from_ns=from_ns)


def _keys(endpoints: tuple[Endpoint, ...]) -> list[str]:
    return [e.key for e in endpoints]


def test_service_port_name_selects_the_slice_port() -> None:
    target = _resolve("{name: svc, port: 8080}")
    assert isinstance(target, ServiceTarget)
    assert target.name == "backends/svc:8080"
    # not 9000 (targetPort): the slice port named like the Service port is where pods listen
    assert _keys(target.ready_endpoints) == [
        "10.0.0.1:9001",
        "10.0.0.3:9001",
        "10.0.0.4:9001",
        "10.0.0.5:9001",
    ]
    assert target.app_protocol == "kubernetes.io/h2c"


def test_another_service_port_uses_its_own_slice_port() -> None:
    target = _resolve("{name: svc, port: 9090}")
    assert isinstance(target, ServiceTarget)
    assert _keys(target.ready_endpoints) == ["10.0.0.1:9091", "10.0.0.3:9091", "10.0.0.4:9091"]
    assert target.app_protocol is None


def test_service_without_slices_has_no_endpoints() -> None:
    extra = (
        "\n---\napiVersion: v1\nkind: Service\nmetadata: {name: lonely, namespace: backends}\n"
        "spec: {ports: [{port: 80}]}"
    )
    target = _resolve("{name: lonely, port: 80}", extra=extra)
    assert isinstance(target, ServiceTarget)
    assert target.endpoints == ()


INVALID_REFS = [
    ("service-missing", "{name: nope, port: 80}", "Service backends/nope not found"),
    ("service-port-missing", "{name: svc}", "a Service backendRef needs a port"),
    ("service-port-unknown", "{name: svc, port: 1234}", "Service backends/svc has no port 1234"),
    (
        "pool-missing",
        "{group: inference.networking.k8s.io, kind: InferencePool, name: nope}",
        "InferencePool backends/nope not found",
    ),
    (
        "kind-unsupported",
        "{group: example.com, kind: Bucket, name: b}",
        "unsupported backend kind example.com/Bucket",
    ),
    (
        "pool-kind-in-core-group",
        "{kind: InferencePool, name: pool}",
        "unsupported backend kind /InferencePool",
    ),
    (
        "service-in-other-group",
        "{group: example.com, kind: Service, name: svc, port: 8080}",
        "unsupported backend kind example.com/Service",
    ),
]


@pytest.mark.parametrize(
    ("ref", "reason"), [c[1:] for c in INVALID_REFS], ids=[c[0] for c in INVALID_REFS]
)
def test_unresolvable_refs_are_invalid_targets(ref: str, reason: str) -> None:
    target = _resolve(ref)
    assert isinstance(target, InvalidTarget)
    assert target.reason == reason


def _grant(
    *, namespace: str = "backends", from_ns: str = "web", kind: str = "HTTPRoute", to: str
) -> str:
    return (
        "\n---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n"
        f"metadata: {{name: g, namespace: {namespace}}}\n"
        f"spec: {{from: [{{group: gateway.networking.k8s.io, kind: {kind}, namespace: {from_ns}}}],"
        f" to: [{to}]}}"
    )


CROSS_NAMESPACE = [
    ("no-grant", "", False),
    ("grant-for-the-service", _grant(to="{group: '', kind: Service, name: svc}"), True),
    ("grant-for-every-service", _grant(to="{group: '', kind: Service}"), True),
    ("grant-for-another-name", _grant(to="{group: '', kind: Service, name: other}"), False),
    ("grant-for-another-kind", _grant(to="{group: '', kind: Secret}"), False),
    ("grant-from-another-namespace", _grant(from_ns="ops", to="{kind: Service}"), False),
    ("grant-from-another-kind", _grant(kind="GRPCRoute", to="{kind: Service}"), False),
    ("grant-in-the-wrong-namespace", _grant(namespace="web", to="{kind: Service}"), False),
    (
        "grant-several-entries",
        _grant(to="{kind: Secret}, {group: '', kind: Service, name: svc}"),
        True,
    ),
]


@pytest.mark.parametrize(
    ("grant", "allowed"), [c[1:] for c in CROSS_NAMESPACE], ids=[c[0] for c in CROSS_NAMESPACE]
)
def test_cross_namespace_service_needs_a_reference_grant(grant: str, allowed: bool) -> None:
    target = _resolve("{name: svc, namespace: backends, port: 8080}", extra=grant, from_ns="web")
    assert isinstance(target, ServiceTarget) is allowed
    if not allowed:
        assert target == InvalidTarget(
            name="backends/svc",
            reason="no ReferenceGrant in backends allows backends/svc",
            code="RefNotPermitted",
        )


def test_cross_namespace_pool_needs_a_reference_grant() -> None:
    ref = (
        "{group: inference.networking.k8s.io, kind: InferencePool, name: pool, namespace: backends}"
    )
    assert isinstance(_resolve(ref, from_ns="web"), InvalidTarget)
    grant = _grant(to="{group: inference.networking.k8s.io, kind: InferencePool}")
    assert isinstance(_resolve(ref, extra=grant, from_ns="web"), PoolTarget)


def test_same_namespace_named_explicitly_needs_no_grant() -> None:
    assert isinstance(_resolve("{name: svc, namespace: backends, port: 8080}"), ServiceTarget)


@pytest.mark.parametrize(
    "group", ["inference.networking.k8s.io", "inference.networking.x-k8s.io"], ids=["v1", "x-k8s"]
)
def test_pool_endpoints_come_from_slices_matching_its_selector(group: str) -> None:
    target = _resolve(f"{{group: {group}, kind: InferencePool, name: pool}}")
    assert isinstance(target, PoolTarget)
    assert target.name == "backends/pool"
    assert target.pool.meta.key == "backends/pool"
    # a slice without ports: one endpoint per targetPort; a slice with ports: its ports
    assert _keys(target.ready_endpoints) == ["10.1.0.1:8000", "10.1.0.1:8001", "10.1.0.3:9500"]
    # labels: the slice's, overridden by the endpoint's
    first = target.ready_endpoints[0]
    assert first.labels == (("app", "vllm"), ("gpu", "h100"), ("zone", "b"))


def test_pool_not_ready_endpoints_are_never_ready() -> None:
    target = _resolve("{group: inference.networking.k8s.io, kind: InferencePool, name: pool}")
    assert isinstance(target, PoolTarget)
    assert "10.1.0.2:8000" not in _keys(target.ready_endpoints)
    assert all(e.ready for e in target.ready_endpoints)
    assert {e.key for e in target.endpoints if not e.ready} <= {"10.1.0.2:8000", "10.1.0.2:8001"}


@pytest.mark.parametrize("pods", ["", PODS], ids=["slices", "pods"])
def test_pool_with_an_empty_selector_selects_nothing(pods: str) -> None:
    extra = pods + (
        "\n---\napiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferencePool\n"
        "metadata: {name: empty, namespace: backends}\nspec: {selector: {}, targetPortNumber: 80}"
    )
    target = _resolve(
        "{group: inference.networking.x-k8s.io, kind: InferencePool, name: empty}", extra=extra
    )
    assert isinstance(target, PoolTarget)
    assert target.endpoints == ()


def test_resolution_is_cached_per_source() -> None:
    config = config_of(GATEWAY + SERVICE)
    resolver = Resolver(config)
    ref = m.ObjectRef(name="svc", namespace="backends", port=8080)
    first = resolver.resolve(ref, from_kind="HTTPRoute", from_ns="backends")
    assert resolver.resolve(ref, from_kind="HTTPRoute", from_ns="backends") is first
    assert isinstance(resolver.resolve(ref, from_kind="HTTPRoute", from_ns="web"), InvalidTarget)


# --- what build_table compiles from a rule ---

RULES = (
    GATEWAY
    + SERVICE
    + route(
        "r",
        """
parentRefs: [{name: gw, namespace: default}]
rules:
- name: split
  matches: [{path: {value: /split}}]
  backendRefs:
  - {name: svc, port: 8080, weight: 3}
  - {name: svc, port: 9090, weight: 0}
  - {name: svc, port: 8080, weight: 2, filters: [{type: RequestHeaderModifier,
      requestHeaderModifier: {set: [{name: x-b, value: '1'}]}}]}
  timeouts: {request: 10s}
  retry: {attempts: 2, codes: [503]}
- name: filtered
  matches: [{path: {value: /f}}]
  filters:
  - {type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: a, value: '1'}]}}
  - {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [server]}}
  - {type: URLRewrite, urlRewrite: {hostname: h.example}}
  - {type: CORS, cors: {allowOrigins: ['*']}}
  - {type: RequestMirror, requestMirror: {backendRef: {name: svc, port: 9090}, percent: 10}}
  - {type: RequestMirror, requestMirror: {backendRef: {name: missing, port: 1}}}
  backendRefs: [{name: svc, port: 8080}]
- name: redirect
  matches: [{path: {value: /r}}]
  filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]
- name: extension
  matches: [{path: {value: /x}}]
  filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: a}}]
  backendRefs:
  - {name: svc, port: 8080, filters: [{type: ExtensionRef,
      extensionRef: {group: example.com, kind: Quota, name: q}}]}
""",
        namespace="backends",
    )
)


def _compiled(name: str) -> CompiledRule:
    (rule,) = [r for r in table_of(RULES).rules if r.name == name]
    return rule


def test_weights_compile_to_a_running_sum() -> None:
    rule = _compiled("split")
    assert [b.weight for b in rule.backends] == [3, 0, 2]
    assert rule.cumulative == (3, 3, 5)
    assert rule.total_weight == 5
    assert rule.route == "backends/r"
    assert rule.index == 0
    assert rule.timeouts == m.Timeouts(request_s=10.0)
    assert rule.retry == m.RetryPolicy(attempts=2, codes=(503,))
    assert rule.backends[2].filters.request_headers == m.HeaderModifier(set=(("x-b", "1"),))
    assert rule.backends[0].filters.request_headers is None


def test_rule_without_backends_has_no_weight() -> None:
    rule = _compiled("redirect")
    assert rule.backends == ()
    assert rule.total_weight == 0
    assert rule.filters.redirect == m.RequestRedirect(scheme="https", status_code=301)


def test_rule_filters_compile_into_one_filter_set() -> None:
    filters = _compiled("filtered").filters
    assert filters.request_headers == m.HeaderModifier(add=(("a", "1"),))
    assert filters.response_headers == m.HeaderModifier(remove=("server",))
    assert filters.rewrite == m.URLRewrite(hostname="h.example")
    assert filters.cors == m.CorsPolicy(allow_origins=("*",))
    assert filters.redirect is None
    assert filters.unsupported is None
    # the unresolvable mirror is dropped: a mirror never fails the request
    (mirror,) = filters.mirrors
    assert (mirror.target.name, mirror.numerator, mirror.denominator) == (
        "backends/svc:9090",
        10,
        100,
    )


def test_extension_ref_filters_are_unsupported() -> None:
    rule = _compiled("extension")
    assert rule.filters.unsupported == "ExtensionRef Auth/a is not supported"
    assert rule.backends[0].filters.unsupported == "ExtensionRef Quota/q is not supported"


def test_table_lists_every_compiled_rule() -> None:
    table = table_of(RULES)
    assert [r.name for r in table.rules] == ["split", "filtered", "redirect", "extension"]
    assert winner(table, request("/split/x")) == "backends/r:split"


def test_pool_targets_lists_each_routed_pool_once() -> None:
    pool_ref = "{group: inference.networking.k8s.io, kind: InferencePool, name: pool}"
    table = table_of(
        GATEWAY
        + SERVICE
        + POOL
        + route(
            "r",
            f"parentRefs: [{{name: gw, namespace: default}}]\nrules:\n"
            f"- {{backendRefs: [{pool_ref}, {{name: svc, port: 8080}}]}}\n"
            f"- {{backendRefs: [{pool_ref}]}}",
            namespace="backends",
        )
    )
    assert [t.name for t in table.pool_targets()] == ["backends/pool"]
    assert table_of(RULES).pool_targets() == ()


def test_with_pods_a_pool_selects_pods_not_slices() -> None:
    """InferencePool's selector selects Pods: each pod IP on each targetPort; ready only with
    condition Ready True and not terminating; a finished pod (Failed, Succeeded) is none,
    though its IP stays in its status (and may be a new pod's); the slices are Services'
    business then."""
    target = _resolve("{group: inference.networking.k8s.io, kind: InferencePool, name: pool}",
                      extra=PODS)  # fmt: skip
    assert isinstance(target, PoolTarget)
    assert _keys(target.ready_endpoints) == ["10.2.0.1:8000", "10.2.0.1:8001"]
    assert {e.key for e in target.endpoints if not e.ready} == {
        "10.2.0.2:8000", "10.2.0.2:8001", "10.2.0.3:8000", "10.2.0.3:8001"}  # fmt: skip
    assert target.ready_endpoints[0].labels == (("app", "vllm"), ("zone", "a"))


def test_a_config_from_a_cluster_selects_pods_even_when_there_are_none() -> None:
    """At zero pods (scaled to zero), slices with the pool's labels (a Service's, which the
    cluster copies onto its slices) must not stand in for pods."""
    config = dataclasses.replace(config_of(GATEWAY + POOL), from_cluster=True)
    pool = next(p for p in config.pools if p.meta.name == "pool")
    assert Resolver(config).pool_endpoints(pool) == ()


def test_in_a_cluster_a_gateway_needs_its_class_to_be_served() -> None:
    orphan = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: orphan, namespace: default}
spec:
  gatewayClassName: nobody
  listeners: [{name: http, port: 8081, protocol: HTTP}]
"""
    config = config_of(GATEWAY + orphan)
    assert 8081 in build_table(config).ports  # files: a missing class is no reason to refuse
    in_cluster = build_table(dataclasses.replace(config, from_cluster=True))
    assert 8081 not in in_cluster.ports
    assert any("no GatewayClass nobody" in i.message for i in in_cluster.issues)


def test_the_services_a_table_reads_are_those_routes_and_pools_name() -> None:
    mirror = (
        "rules: [{backendRefs: [{name: svc, port: 8080, filters: [{type: RequestMirror, "
        "requestMirror: {backendRef: {name: shadow, namespace: other, port: 80}}}]}], "
        "filters: [{type: RequestMirror, requestMirror: {backendRef: {name: copy, port: 80}}}]}, "
        "{backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: pool}]}]"
    )
    ports = "targetPorts: [{number: 8000}, {number: 8001}]"
    picker = POOL.replace(ports, ports + "\n  endpointPickerRef: {name: epp, port: {number: 9002}}")
    config = config_of(GATEWAY + SERVICE + picker + route("r", mirror, namespace="backends"))
    services = referenced_objects(config)
    assert services == {
        ("Service", "backends", "svc"),
        ("Service", "other", "shadow"),
        ("Service", "backends", "copy"),
        ("Service", "backends", "epp"),
    }
    labels = {"kubernetes.io/service-name": "svc"}
    assert reads_object(config, services, "Service", "backends", "svc", {})
    assert not reads_object(config, services, "Service", "default", "svc", {})
    assert reads_object(config, services, "EndpointSlice", "backends", "svc-abc", labels)
    assert not reads_object(config, services, "EndpointSlice", "backends", "x", {})
    assert reads_object(config, services, "Pod", "backends", "p", {"app": "vllm"})
    assert not reads_object(config, services, "Pod", "backends", "p", {"app": "web"})
    assert reads_object(config, services, "HTTPRoute", "any", "r", {})
