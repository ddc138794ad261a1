"""Which listeners a route attaches to, and which listener a request is matched against.

parentRefs (name, namespace, sectionName, port), allowedRoutes (Same, All, Selector, kinds),
hostname intersection, GatewayClass ownership, and Listener Isolation (GEP-1713: "requests
SHOULD match at most one Listener").
"""

from __future__ import annotations

import pytest

from routing import NoRouteMatchedError, RoutingTable
from tests.unit.manifests import GATEWAY_CLASS, request, route, table_of, winner


def _gateway(listeners: str, *, name: str = "gw", namespace: str = "infra") -> str:
    return (
        f"\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  gatewayClassName: sluice\n  listeners:\n{listeners}"
    )


def _namespace(name: str, labels: str = "{}") -> str:
    return f"\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {labels}}}\n"


def _attached(
    listener: str,
    parent: str = "{name: gw, namespace: infra}",
    *,
    namespace: str = "infra",
    extra: str = "",
    hostnames: str = "[]",
) -> RoutingTable:
    """A table of one Gateway with ``listener`` and one route ``r`` with one rule ``only``."""
    return table_of(
        GATEWAY_CLASS
        + _gateway(f"  - {listener}\n")
        + extra
        + route(
            "r",
            f"parentRefs: [{parent}]\nhostnames: {hostnames}\nrules: [{{name: only}}]",
            namespace=namespace,
        )
    )


def _is_attached(table: RoutingTable, port: int = 80, host: str = "a.example.com") -> bool:
    try:
        winner(table, request(host=host), port)
    except NoRouteMatchedError:
        return False
    return True


HTTP = "{name: http, port: 80, protocol: HTTP}"
ALL = "{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}"
SELECTOR = (
    "{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, "
    "selector: {matchLabels: {env: prod}}}}}"
)

ATTACHMENT = [
    ("same-namespace-default", HTTP, "{name: gw, namespace: infra}", "infra", "", True),
    ("parent-namespace-defaults-to-route", HTTP, "{name: gw}", "infra", "", True),
    ("parent-in-other-namespace-not-found", HTTP, "{name: gw}", "web", "", False),
    ("same-refuses-other-namespace", HTTP, "{name: gw, namespace: infra}", "web", "", False),
    ("all-admits-other-namespace", ALL, "{name: gw, namespace: infra}", "web", "", True),
    (
        "selector-admits-labelled-namespace",
        SELECTOR,
        "{name: gw, namespace: infra}",
        "web",
        _namespace("web", "{env: prod}"),
        True,
    ),
    (
        "selector-refuses-other-labels",
        SELECTOR,
        "{name: gw, namespace: infra}",
        "web",
        _namespace("web", "{env: dev}"),
        False,
    ),
    (
        "selector-refuses-undeclared-namespace",
        SELECTOR,
        "{name: gw, namespace: infra}",
        "web",
        "",
        False,
    ),
    (
        "selector-expressions",
        "{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, "
        "selector: {matchExpressions: [{key: env, operator: NotIn, values: [dev]}]}}}}",
        "{name: gw, namespace: infra}",
        "web",
        _namespace("web", "{env: prod}"),
        True,
    ),
    (
        "kinds-admit-httproute",
        "{name: http, port: 80, protocol: HTTP, allowedRoutes: {kinds: "
        "[{kind: GRPCRoute}, {group: gateway.networking.k8s.io, kind: HTTPRoute}]}}",
        "{name: gw}",
        "infra",
        "",
        True,
    ),
    (
        "kinds-refuse-httproute",
        "{name: http, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: GRPCRoute}]}}",
        "{name: gw}",
        "infra",
        "",
        False,
    ),
    (
        "kinds-of-another-group",
        "{name: http, port: 80, protocol: HTTP, allowedRoutes: "
        "{kinds: [{group: example.com, kind: HTTPRoute}]}}",
        "{name: gw}",
        "infra",
        "",
        False,
    ),
    ("section-name-matches", HTTP, "{name: gw, sectionName: http}", "infra", "", True),
    ("section-name-differs", HTTP, "{name: gw, sectionName: https}", "infra", "", False),
    ("port-matches", HTTP, "{name: gw, port: 80}", "infra", "", True),
    ("port-differs", HTTP, "{name: gw, port: 8080}", "infra", "", False),
    # "When both Port and SectionName are specified, the name and port of the selected listener
    # must match both specified values."
    ("section-and-port-match", HTTP, "{name: gw, sectionName: http, port: 80}", "infra", "", True),
    (
        "section-matches-port-differs",
        HTTP,
        "{name: gw, sectionName: http, port: 81}",
        "infra",
        "",
        False,
    ),
    ("other-gateway-name", HTTP, "{name: other}", "infra", "", False),
    ("parent-kind-service", HTTP, "{name: gw, kind: Service, group: ''}", "infra", "", False),
    ("parent-group-other", HTTP, "{name: gw, group: example.com}", "infra", "", False),
]


@pytest.mark.parametrize(
    ("listener", "parent", "namespace", "extra", "expected"),
    [c[1:] for c in ATTACHMENT],
    ids=[c[0] for c in ATTACHMENT],
)
def test_route_attachment(
    listener: str, parent: str, namespace: str, extra: str, expected: bool
) -> None:
    table = _attached(listener, parent, namespace=namespace, extra=extra)
    assert _is_attached(table) is expected
    detached_warning = f"HTTPRoute {namespace}/r is not attached to any served listener"
    assert (detached_warning in table.warnings) is (not expected)


def test_route_without_parent_refs_is_silently_unattached() -> None:
    table = table_of(GATEWAY_CLASS + _gateway(f"  - {HTTP}\n") + route("r", "rules: []"))
    assert table.warnings == ()
    assert not _is_attached(table)


HOSTNAME_ATTACHMENT = [
    ("route-hostname-inside-wildcard-listener", "*.example.com", "[a.example.com]", True),
    ("route-hostname-outside-listener", "*.example.com", "[a.example.net]", False),
    ("route-wildcard-covers-listener", "a.example.com", "['*.example.com']", True),
    ("listener-hostname-route-none", "a.example.com", "[]", True),
]


@pytest.mark.parametrize(
    ("listener_host", "hostnames", "expected"),
    [c[1:] for c in HOSTNAME_ATTACHMENT],
    ids=[c[0] for c in HOSTNAME_ATTACHMENT],
)
def test_attachment_needs_a_hostname_intersection(
    listener_host: str, hostnames: str, expected: bool
) -> None:
    # "If both the Listener and HTTPRoute have specified hostnames, and none match with the
    # criteria above, then the HTTPRoute is not accepted."
    table = _attached(
        f"{{name: http, port: 80, protocol: HTTP, hostname: '{listener_host}'}}",
        hostnames=hostnames,
    )
    assert _is_attached(table, host="a.example.com") is expected


def test_only_intersecting_route_hostnames_are_served() -> None:
    table = _attached(
        "{name: http, port: 80, protocol: HTTP, hostname: '*.example.com'}",
        hostnames="[test.example.com, test.example.net]",
    )
    assert _is_attached(table, host="test.example.com")
    assert not _is_attached(table, host="test.example.net")
    assert not _is_attached(table, host="other.example.com")


def _classes(controller: str, class_name: str = "sluice") -> str:
    return (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n"
        f"metadata: {{name: {class_name}}}\nspec: {{controllerName: {controller}}}\n"
    )


@pytest.mark.parametrize(
    ("classes", "served"),
    [
        (_classes("sluice.dev/gateway-controller"), True),
        (_classes("sluice/gateway-controller"), True),
        (_classes("example.com/other-controller"), False),
        (_classes("example.com/other-controller", class_name="not-ours"), True),
    ],
    ids=["sluice-dev-controller", "sluice-controller", "foreign-controller", "class-not-declared"],
)
def test_gateways_of_foreign_classes_are_not_served(classes: str, served: bool) -> None:
    table = table_of(
        classes
        + _gateway(f"  - {HTTP}\n")
        + route("r", "parentRefs: [{name: gw}]", namespace="infra")
    )
    assert _is_attached(table) is served
    foreign = "Gateway infra/gw: class sluice belongs to example.com/other-controller"
    assert (foreign in table.warnings) is (not served)


def test_listeners_of_other_protocols_are_not_served() -> None:
    table = table_of(
        GATEWAY_CLASS
        + _gateway(
            "  - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: c}]}}\n"
            "  - {name: http, port: 80, protocol: HTTP}\n"
        )
        + route("r", "parentRefs: [{name: gw}]", namespace="infra")
    )
    assert set(table.ports) == {80}


def test_section_name_selects_one_listener_of_several() -> None:
    table = table_of(
        GATEWAY_CLASS
        + _gateway(
            "  - {name: a, port: 80, protocol: HTTP}\n  - {name: b, port: 8080, protocol: HTTP}\n"
        )
        + route(
            "r",
            "parentRefs: [{name: gw, sectionName: b}]\nrules: [{name: only}]",
            namespace="infra",
        )
    )
    assert not _is_attached(table, port=80)
    assert _is_attached(table, port=8080)
    assert not _is_attached(table, port=9999)


def test_route_without_section_attaches_to_every_listener() -> None:
    table = table_of(
        GATEWAY_CLASS
        + _gateway(
            "  - {name: a, port: 80, protocol: HTTP}\n  - {name: b, port: 8080, protocol: HTTP}\n"
        )
        + route("r", "parentRefs: [{name: gw}]\nrules: [{name: only}]", namespace="infra")
    )
    assert _is_attached(table, port=80)
    assert _is_attached(table, port=8080)


def test_two_parent_refs_to_one_listener_attach_once() -> None:
    table = table_of(
        GATEWAY_CLASS
        + _gateway("  - {name: a, port: 80, protocol: HTTP, hostname: a.example.com}\n")
        + route(
            "r",
            "parentRefs: [{name: gw}, {name: gw, sectionName: a}]\nhostnames: [a.example.com]\n"
            "rules: [{name: only}]",
            namespace="infra",
        )
    )
    (listener,) = table.ports[80].listeners
    assert list(listener.exact) == ["a.example.com"]
    assert len(listener.exact["a.example.com"].entries) == 1


# Listener Isolation. Three listeners on port 80 and one route on each, answering "/" and a path
# only that listener's route knows.
ISOLATION = (
    GATEWAY_CLASS
    + _gateway(
        "  - {name: any, port: 80, protocol: HTTP}\n"
        "  - {name: wild, port: 80, protocol: HTTP, hostname: '*.example.com'}\n"
        "  - {name: deep, port: 80, protocol: HTTP, hostname: '*.foo.example.com'}\n"
        "  - {name: exact, port: 80, protocol: HTTP, hostname: foo.example.com}\n"
    )
    + "".join(
        route(
            name,
            f"parentRefs: [{{name: gw, sectionName: {name}}}]\n"
            f"rules:\n- {{name: root, matches: [{{path: {{type: Exact, value: /}}}}]}}\n"
            f"- {{name: own, matches: [{{path: {{type: Exact, value: /{name}}}}}]}}",
            namespace="infra",
        )
        for name in ("any", "wild", "deep", "exact")
    )
)

LISTENER_SELECTION = [
    ("exact-before-wildcard", "foo.example.com", "exact"),
    ("wildcard-one-label", "bar.example.com", "wild"),
    ("wildcard-many-labels", "a.b.example.com", "wild"),
    ("longer-wildcard-first", "a.foo.example.com", "deep"),
    ("wildcard-not-the-parent", "example.com", "any"),
    ("fallback-listener", "other.org", "any"),
    ("no-host", "", "any"),
]


@pytest.mark.parametrize(
    ("host", "listener"),
    [c[1:] for c in LISTENER_SELECTION],
    ids=[c[0] for c in LISTENER_SELECTION],
)
def test_most_specific_listener_answers(host: str, listener: str) -> None:
    table = table_of(ISOLATION)
    assert winner(table, request("/", host=host)) == f"infra/{listener}:root"
    assert winner(table, request(f"/{listener}", host=host)) == f"infra/{listener}:own"


@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("foo.example.com", "/any"),
        ("foo.example.com", "/wild"),
        ("bar.example.com", "/exact"),
        ("a.foo.example.com", "/wild"),
    ],
    ids=["exact-not-any", "exact-not-wild", "wild-not-exact", "deep-not-wild"],
)
def test_listener_isolation(host: str, path: str) -> None:
    # "if Listeners are defined for foo.example.com and *.example.com, a request to
    # foo.example.com SHOULD only be routed using routes attached to the foo.example.com
    # Listener (and not the *.example.com Listener)."
    with pytest.raises(NoRouteMatchedError):
        winner(table_of(ISOLATION), request(path, host=host))


def test_no_listener_for_the_host_is_404() -> None:
    # "If traffic to a Gateway does not match any Listener's hostname ... HTTP returns a 404"
    table = table_of(
        GATEWAY_CLASS
        + _gateway("  - {name: a, port: 80, protocol: HTTP, hostname: a.example.com}\n")
        + route("r", "parentRefs: [{name: gw}]", namespace="infra")
    )
    with pytest.raises(NoRouteMatchedError, match=r"for host 'b\.example\.com'"):
        winner(table, request(host="b.example.com"))


def test_unknown_port_is_404() -> None:
    table = _attached(HTTP)
    with pytest.raises(NoRouteMatchedError):
        winner(table, request(), port=8080)


def test_listener_without_routes_is_404() -> None:
    table = table_of(GATEWAY_CLASS + _gateway(f"  - {HTTP}\n"))
    with pytest.raises(NoRouteMatchedError):
        winner(table, request())


def test_listeners_of_a_port_are_ordered_most_specific_first() -> None:
    (port,) = table_of(ISOLATION).ports.values()
    assert [listener.hostname for listener in port.listeners] == [
        "foo.example.com",
        "*.foo.example.com",
        "*.example.com",
        None,
    ]
    assert [listener.name for listener in port.listeners] == ["exact", "deep", "wild", "any"]
    assert {listener.gateway for listener in port.listeners} == {"infra/gw"}
