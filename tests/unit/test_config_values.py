"""What ``routing.parse_config`` reads: values in Python spelling, defaults applied once, both
InferencePool shapes (v1 and v1alpha2), durations in seconds.
"""

from __future__ import annotations

import pytest

from routing import model as m
from tests.unit.manifests import config_of, gateway_doc, route, route_filter, route_rule


def test_kubernetes_bookkeeping_fields_are_accepted() -> None:
    config = config_of(
        """
apiVersion: v1
kind: Service
metadata:
  name: s
  namespace: ns
  uid: 1234
  resourceVersion: "7"
  generation: 2
  annotations: {a: b}
  finalizers: [x]
  managedFields: []
  ownerReferences: []
  creationTimestamp: "2024-01-01T00:00:00Z"
spec:
  type: ClusterIP
  clusterIP: 10.96.0.1
  selector: {app: s}
  ports: [{name: http, port: 80, targetPort: http, protocol: TCP, appProtocol: kubernetes.io/h2c}]
status: {loadBalancer: {}}
"""
    )
    (service,) = config.services
    assert service.meta.key == "ns/s"
    assert service.meta.creation == "2024-01-01T00:00:00Z"
    assert service.ports == (
        m.ServicePort(name="http", port=80, target_port="http", app_protocol="kubernetes.io/h2c"),
    )


def test_defaults_are_applied() -> None:
    text = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: c}\n"
        "spec: {controllerName: x}\n---\n"
        + route("first", "parentRefs: [{name: gw}]", namespace="default")
        + route("second", "rules: [{backendRefs: [{name: s, port: 80}]}]", namespace="default")
    )
    config = config_of(text)
    (cls,) = config.gateway_classes
    assert cls.meta.namespace == ""
    first, second = config.routes
    assert first.meta.creation < second.meta.creation  # file order stands in for age
    assert first.parent_refs == (m.ParentRef(name="gw"),)
    assert first.parent_refs[0].group == m.GATEWAY_GROUP
    assert first.parent_refs[0].kind == "Gateway"
    # no rules: one rule matching every request (PathPrefix "/"), no backends
    assert first.rules == (m.RouteRule(matches=(m.RouteMatch(),)),)
    assert first.rules[0].matches[0].path == m.PathMatch(kind=m.PathKind.PREFIX, value="/")
    (rule,) = second.rules
    assert rule.matches == (m.RouteMatch(),)
    assert rule.backend_refs == (m.BackendRef(ref=m.ObjectRef(name="s", port=80), weight=1),)
    assert rule.timeouts == m.Timeouts()
    assert rule.retry is None


def test_namespace_defaults_to_default() -> None:
    config = config_of("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {}")
    assert config.services[0].meta.key == "default/s"


def test_hostnames_are_lower_cased() -> None:
    config = config_of(
        gateway_doc("{name: a, port: 80, protocol: HTTP, hostname: Foo.Example.COM}")
        + route("r", "hostnames: [API.Example.com, '*.Example.com']")
    )
    assert config.gateways[0].listeners[0].hostname == "foo.example.com"
    assert config.routes[0].hostnames == ("api.example.com", "*.example.com")


def test_listener_defaults() -> None:
    (gw,) = config_of(gateway_doc("{name: a, port: 80, protocol: HTTP}")).gateways
    assert gw.listeners == (
        m.Listener(name="a", port=80, protocol="HTTP", allowed_from=m.AllowedFrom.SAME),
    )


def test_listener_allowed_routes_are_read() -> None:
    (gw,) = config_of(
        gateway_doc(
            "{name: a, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, "
            "selector: {matchLabels: {env: prod}, matchExpressions: "
            "[{key: tier, operator: In, values: [web]}, {key: gone, operator: DoesNotExist}]}}, "
            "kinds: [{kind: HTTPRoute}, {group: example.com, kind: Other}]}}"
        )
    ).gateways
    (listener,) = gw.listeners
    assert listener.allowed_from is m.AllowedFrom.SELECTOR
    assert listener.allowed_selector == m.LabelSelector(
        match_labels=(("env", "prod"),),
        match_expressions=(("tier", "In", ("web",)), ("gone", "DoesNotExist", ())),
    )
    assert listener.allowed_kinds == ((m.GATEWAY_GROUP, "HTTPRoute"), ("example.com", "Other"))


def test_labels_are_read_as_strings() -> None:
    config = config_of(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: n, labels: {a: b, n: 1, t: true}}"
    )
    assert config.namespaces[0].meta.label_map() == {"a": "b", "n": "1", "t": "True"}


MATCHES = [
    (
        "path-exact",
        "{path: {type: Exact, value: /a}}",
        m.RouteMatch(path=m.PathMatch(kind=m.PathKind.EXACT, value="/a")),
    ),
    (
        "path-regex",
        "{path: {type: RegularExpression, value: '/v[0-9]+/.*'}}",
        m.RouteMatch(path=m.PathMatch(kind=m.PathKind.REGEX, value="/v[0-9]+/.*")),
    ),
    (
        "path-type-defaults-to-prefix",
        "{path: {value: /a}}",
        m.RouteMatch(path=m.PathMatch(kind=m.PathKind.PREFIX, value="/a")),
    ),
    ("path-value-defaults-to-root", "{path: {type: PathPrefix}}", m.RouteMatch()),
    ("method", "{method: POST}", m.RouteMatch(method="POST")),
    (
        "header-first-of-equivalent-names-wins",
        "{headers: [{name: X-Model, value: a}, {name: x-model, value: b}, {name: y, value: c}]}",
        m.RouteMatch(
            headers=(m.HeaderMatch(name="X-Model", value="a"), m.HeaderMatch(name="y", value="c"))
        ),
    ),
    (
        "query-names-are-case-sensitive",
        "{queryParams: [{name: q, value: a}, {name: Q, value: b}, {name: q, value: c}]}",
        m.RouteMatch(
            query_params=(m.QueryMatch(name="q", value="a"), m.QueryMatch(name="Q", value="b"))
        ),
    ),
    (
        "value-regex",
        "{headers: [{name: h, type: RegularExpression, value: 'a.*'}]}",
        m.RouteMatch(headers=(m.HeaderMatch(name="h", kind=m.MatchKind.REGEX, value="a.*"),)),
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in MATCHES], ids=[c[0] for c in MATCHES]
)
def test_matches_are_read(text: str, expected: m.RouteMatch) -> None:
    (route_,) = config_of(route_rule(f"matches: [{text}]")).routes
    assert route_.rules[0].matches == (expected,)


def test_empty_matches_match_everything() -> None:
    (route_,) = config_of(route_rule("matches: []")).routes
    assert route_.rules[0].matches == (m.RouteMatch(),)


FILTERS = [
    (
        "request-header-modifier",
        "{type: RequestHeaderModifier, requestHeaderModifier: "
        "{set: [{name: a, value: '1'}], add: [{name: b, value: '2'}], remove: [c]}}",
        m.RouteFilter(
            type="RequestHeaderModifier",
            request_headers=m.HeaderModifier(set=(("a", "1"),), add=(("b", "2"),), remove=("c",)),
        ),
    ),
    (
        "response-header-modifier",
        "{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [server]}}",
        m.RouteFilter(
            type="ResponseHeaderModifier", response_headers=m.HeaderModifier(remove=("server",))
        ),
    ),
    (
        "redirect-defaults",
        "{type: RequestRedirect, requestRedirect: {}}",
        m.RouteFilter(type="RequestRedirect", redirect=m.RequestRedirect(status_code=302)),
    ),
    (
        "redirect",
        "{type: RequestRedirect, requestRedirect: {scheme: https, hostname: a.com, port: 8443, "
        "statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}",
        m.RouteFilter(
            type="RequestRedirect",
            redirect=m.RequestRedirect(
                scheme="https",
                hostname="a.com",
                port=8443,
                status_code=301,
                path=m.PathModifier(kind=m.PathModifierKind.PREFIX, value="/b"),
            ),
        ),
    ),
    (
        "rewrite",
        "{type: URLRewrite, urlRewrite: {hostname: b.com, "
        "path: {type: ReplaceFullPath, replaceFullPath: /x}}}",
        m.RouteFilter(
            type="URLRewrite",
            rewrite=m.URLRewrite(
                hostname="b.com", path=m.PathModifier(kind=m.PathModifierKind.FULL, value="/x")
            ),
        ),
    ),
    (
        "rewrite-prefix-empty-means-root",
        "{type: URLRewrite, urlRewrite: "
        "{path: {type: ReplacePrefixMatch, replacePrefixMatch: ''}}}",
        m.RouteFilter(
            type="URLRewrite",
            rewrite=m.URLRewrite(path=m.PathModifier(kind=m.PathModifierKind.PREFIX, value="/")),
        ),
    ),
    (
        "mirror-defaults-to-every-request",
        "{type: RequestMirror, requestMirror: {backendRef: {name: s, port: 80}}}",
        m.RouteFilter(
            type="RequestMirror",
            mirror=m.RequestMirror(backend=m.ObjectRef(name="s", port=80)),
        ),
    ),
    (
        "mirror-percent",
        "{type: RequestMirror, requestMirror: {backendRef: {name: s, namespace: o}, percent: 25}}",
        m.RouteFilter(
            type="RequestMirror",
            mirror=m.RequestMirror(
                backend=m.ObjectRef(name="s", namespace="o"), numerator=25, denominator=100
            ),
        ),
    ),
    (
        "mirror-fraction",
        "{type: RequestMirror, requestMirror: {backendRef: {name: s}, "
        "fraction: {numerator: 1, denominator: 3}}}",
        m.RouteFilter(
            type="RequestMirror",
            mirror=m.RequestMirror(backend=m.ObjectRef(name="s"), numerator=1, denominator=3),
        ),
    ),
    (
        "cors-defaults",
        "{type: CORS, cors: {}}",
        m.RouteFilter(type="CORS", cors=m.CorsPolicy(max_age_s=5)),
    ),
    (
        "cors",
        "{type: CORS, cors: {allowOrigins: ['https://a.com'], allowMethods: [GET], "
        "allowHeaders: [x-a], exposeHeaders: [x-b], allowCredentials: true, maxAge: 60}}",
        m.RouteFilter(
            type="CORS",
            cors=m.CorsPolicy(
                allow_origins=("https://a.com",),
                allow_methods=("GET",),
                allow_headers=("x-a",),
                expose_headers=("x-b",),
                allow_credentials=True,
                max_age_s=60,
            ),
        ),
    ),
    (
        "extension-ref",
        "{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: a}}",
        m.RouteFilter(
            type="ExtensionRef",
            extension=m.ObjectRef(group="example.com", kind="Auth", name="a"),
        ),
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in FILTERS], ids=[c[0] for c in FILTERS]
)
def test_filters_are_read(text: str, expected: m.RouteFilter) -> None:
    (route_,) = config_of(route_filter(text)).routes
    assert route_.rules[0].filters == (expected,)


def test_backend_refs_are_read() -> None:
    (route_,) = config_of(
        route_rule(
            "backendRefs:\n"
            "- {name: a, port: 80, weight: 0}\n"
            "- {group: inference.networking.k8s.io, kind: InferencePool, name: p, namespace: o,"
            " weight: 1000000, filters: [{type: RequestHeaderModifier,"
            " requestHeaderModifier: {remove: [x]}}]}"
        )
    ).routes
    assert route_.rules[0].backend_refs == (
        m.BackendRef(ref=m.ObjectRef(name="a", port=80), weight=0),
        m.BackendRef(
            ref=m.ObjectRef(group=m.INFERENCE_GROUP, kind="InferencePool", name="p", namespace="o"),
            weight=1_000_000,
            filters=(
                m.RouteFilter(
                    type="RequestHeaderModifier", request_headers=m.HeaderModifier(remove=("x",))
                ),
            ),
        ),
    )


DURATIONS = [
    ("hour-minute", "{request: 1h30m}", m.Timeouts(request_s=5400.0)),
    ("milliseconds", "{backendRequest: 500ms}", m.Timeouts(backend_request_s=0.5)),
    (
        "zero-disables",
        "{request: 0s, backendRequest: 10s}",
        m.Timeouts(request_s=0.0, backend_request_s=10.0),
    ),
    (
        "equal",
        "{request: 10s, backendRequest: 10s}",
        m.Timeouts(request_s=10.0, backend_request_s=10.0),
    ),
    ("sum-of-components", "{request: 1m30s}", m.Timeouts(request_s=90.0)),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in DURATIONS], ids=[c[0] for c in DURATIONS]
)
def test_timeouts_are_read(text: str, expected: m.Timeouts) -> None:
    (route_,) = config_of(route_rule(f"timeouts: {text}")).routes
    assert route_.rules[0].timeouts == expected


def test_retry_is_read() -> None:
    (route_,) = config_of(
        route_rule("retry: {attempts: 3, codes: [500, 503], backoff: 100ms}")
    ).routes
    assert route_.rules[0].retry == m.RetryPolicy(attempts=3, codes=(500, 503), backoff_s=0.1)


def test_rule_name_and_session_persistence() -> None:
    (route_,) = config_of(route_rule("name: chat\nsessionPersistence: {sessionName: s}")).routes
    assert route_.rules[0].name == "chat"


def test_reference_grant_is_read() -> None:
    config = config_of(
        """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: backends}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]
  to: [{group: '', kind: Service, name: s}, {kind: Service}]
"""
    )
    (grant,) = config.grants
    assert grant.grants_from == ((m.GATEWAY_GROUP, "HTTPRoute", "web"),)
    assert grant.grants_to == (("", "Service", "s"), ("", "Service", None))


def test_endpoint_slice_is_read() -> None:
    config = config_of(
        """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: e, labels: {kubernetes.io/service-name: s}}
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: false, serving: true, terminating: true}
  nodeName: n
- {addresses: [10.0.0.2, 10.0.0.3]}
ports: [{name: http, port: 8000, protocol: TCP}, {port: 9000}]
"""
    )
    (slice_,) = config.slices
    assert slice_.address_type == "IPv4"
    assert slice_.endpoints == (
        m.SliceEndpoint(addresses=("10.0.0.1",), ready=False),
        m.SliceEndpoint(addresses=("10.0.0.2", "10.0.0.3"), ready=True),
    )
    assert slice_.ports == (m.SlicePort(name="http", port=8000), m.SlicePort(name="", port=9000))


POOLS = [
    (
        "v1",
        """
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: p, namespace: ml}
spec:
  selector: {matchLabels: {app: vllm}}
  targetPorts: [{number: 8000}, {number: 8001}]
  endpointPickerRef: {name: epp, port: {number: 9002}, failureMode: FailOpen}
""",
        m.LabelSelector(match_labels=(("app", "vllm"),)),
        (8000, 8001),
        m.ObjectRef(name="epp", port=9002),
        "FailOpen",
    ),
    (
        "v1-without-picker",
        """
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: p, namespace: ml}
spec:
  selector: {matchLabels: {app: vllm}}
  targetPorts: [{number: 8000}]
""",
        m.LabelSelector(match_labels=(("app", "vllm"),)),
        (8000,),
        None,
        "FailOpen",  # no endpoint picker named: Sluice picks, and fails open
    ),
    (
        "v1-picker-defaults",
        """
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: p, namespace: ml}
spec:
  selector: {matchLabels: {app: vllm}}
  targetPorts: [{number: 8000}]
  endpointPickerRef: {group: '', kind: Service, name: epp}
""",
        m.LabelSelector(match_labels=(("app", "vllm"),)),
        (8000,),
        m.ObjectRef(name="epp"),
        "FailClose",
    ),
    (
        "v1alpha2",
        """
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferencePool
metadata: {name: p, namespace: ml}
spec:
  selector: {app: vllm, tier: gpu}
  targetPortNumber: 8000
  extensionRef: {name: epp, portNumber: 9002, failureMode: FailOpen}
""",
        m.LabelSelector(match_labels=(("app", "vllm"), ("tier", "gpu"))),
        (8000,),
        m.ObjectRef(name="epp", port=9002),
        "FailOpen",
    ),
]


@pytest.mark.parametrize(
    ("text", "selector", "ports", "picker", "failure"),
    [c[1:] for c in POOLS],
    ids=[c[0] for c in POOLS],
)
def test_inference_pool_shapes(
    text: str,
    selector: m.LabelSelector,
    ports: tuple[int, ...],
    picker: m.ObjectRef | None,
    failure: str,
) -> None:
    (pool,) = config_of(text).pools
    assert pool.meta.key == "ml/p"
    assert pool.selector == selector
    assert pool.target_ports == ports
    assert pool.endpoint_picker == picker
    assert pool.failure_mode == failure
