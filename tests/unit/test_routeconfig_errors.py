"""HTTPRoute errors (routing/routeconfig.py): what the Gateway API CRD schema and its CEL rules
refuse is refused at load, each error at its field path, such as
``spec.rules[0].matches[1].path.value``.
"""

from __future__ import annotations

import pytest

from tests.unit.manifests import (
    GATEWAY,
    ROUTE_HEAD,
    config_of,
    error_paths,
    errors_of,
    gateway_doc,
    route,
    route_filter,
    route_rule,
)

# (id, HTTPRoute, the exact set of (document, path) of its errors)
INVALID = [
    ("top-level-unknown-field", ROUTE_HEAD + "  rules: []\nextra: 1\n", {(0, "extra")}),
    ("spec-unknown-field", ROUTE_HEAD + "  rulez: []\n", {(0, "spec.rulez")}),
    ("spec-not-a-mapping", ROUTE_HEAD + "  - a\n", {(0, "spec")}),
    ("hostnames-not-a-list", ROUTE_HEAD + "  hostnames: a.com\n", {(0, "spec.hostnames")}),
    ("hostname-not-a-string", ROUTE_HEAD + "  hostnames: [7]\n", {(0, "spec.hostnames[0]")}),
    ("rules-not-a-list", ROUTE_HEAD + "  rules: {a: 1}\n", {(0, "spec.rules")}),
    ("rule-not-a-mapping", ROUTE_HEAD + "  rules: [7]\n", {(0, "spec.rules[0]")}),
    ("rule-unknown-field", route_rule("colour: red"), {(0, "spec.rules[0].colour")}),
    (
        "parent-ref-name-missing",
        ROUTE_HEAD + "  parentRefs: [{sectionName: http}]\n",
        {(0, "spec.parentRefs[0].name")},
    ),
    (
        "parent-ref-port-out-of-range",
        ROUTE_HEAD + "  parentRefs: [{name: gw, port: 70000}]\n",
        {(0, "spec.parentRefs[0].port")},
    ),
    (
        "parent-ref-unknown-field",
        ROUTE_HEAD + "  parentRefs: [{name: gw, listener: x}]\n",
        {(0, "spec.parentRefs[0].listener")},
    ),
    (
        "path-not-absolute",
        route_rule("matches: [{path: {value: /a}}, {path: {value: a}}]"),
        {(0, "spec.rules[0].matches[1].path.value")},
    ),
    (
        "path-double-slash",
        route_rule("matches: [{path: {type: Exact, value: /a//b}}]"),
        {(0, "spec.rules[0].matches[0].path.value")},
    ),
    (
        "path-dot-segment",
        route_rule("matches: [{path: {value: /a/./b}}]"),
        {(0, "spec.rules[0].matches[0].path.value")},
    ),
    (
        "path-dot-dot-segment",
        route_rule("matches: [{path: {value: /a/../b}}]"),
        {(0, "spec.rules[0].matches[0].path.value")},
    ),
    (
        "path-ends-with-dot-dot",
        route_rule("matches: [{path: {value: /a/..}}]"),
        {(0, "spec.rules[0].matches[0].path.value")},
    ),
    (
        "path-ends-with-dot",
        route_rule("matches: [{path: {value: /a/.}}]"),
        {(0, "spec.rules[0].matches[0].path.value")},
    ),
    (
        "path-query",
        route_rule("matches: [{path: {value: '/a?b=1'}}]"),
        {(0, "spec.rules[0].matches[0].path.value")},
    ),
    (
        "path-fragment",
        route_rule("matches: [{path: {type: Exact, value: '/a#b'}}]"),
        {(0, "spec.rules[0].matches[0].path.value")},
    ),
    (
        "path-type-unknown",
        route_rule("matches: [{path: {type: Glob, value: /a}}]"),
        {(0, "spec.rules[0].matches[0].path.type")},
    ),
    (
        "path-regex-invalid",
        route_rule("matches: [{path: {type: RegularExpression, value: '/a(['}}]"),
        {(0, "spec.rules[0].matches[0].path.value")},
    ),
    (
        "path-unknown-field",
        route_rule("matches: [{path: {value: /a, kind: Exact}}]"),
        {(0, "spec.rules[0].matches[0].path.kind")},
    ),
    (
        "match-unknown-field",
        route_rule("matches: [{host: a.com}]"),
        {(0, "spec.rules[0].matches[0].host")},
    ),
    (
        "method-lower-case",
        route_rule("matches: [{method: get}]"),
        {(0, "spec.rules[0].matches[0].method")},
    ),
    (
        "header-name-invalid",
        route_rule("matches: [{headers: [{name: 'a b', value: x}]}]"),
        {(0, "spec.rules[0].matches[0].headers[0].name")},
    ),
    (
        "header-name-missing",
        route_rule("matches: [{headers: [{value: x}]}]"),
        {(0, "spec.rules[0].matches[0].headers[0].name")},
    ),
    (
        "header-value-missing",
        route_rule("matches: [{headers: [{name: a}]}]"),
        {(0, "spec.rules[0].matches[0].headers[0].value")},
    ),
    (
        "header-type-unknown",
        route_rule("matches: [{headers: [{name: a, value: x, type: Prefix}]}]"),
        {(0, "spec.rules[0].matches[0].headers[0].type")},
    ),
    (
        "header-regex-invalid",
        route_rule(
            "matches: [{headers: [{name: a, value: x}, "
            "{name: b, type: RegularExpression, value: '*x'}]}]"
        ),
        {(0, "spec.rules[0].matches[0].headers[1].value")},
    ),
    (
        "query-name-missing",
        route_rule("matches: [{queryParams: [{value: x}]}]"),
        {(0, "spec.rules[0].matches[0].queryParams[0].name")},
    ),
    (
        "query-regex-invalid",
        route_rule("matches: [{queryParams: [{name: q, type: RegularExpression, value: '('}]}]"),
        {(0, "spec.rules[0].matches[0].queryParams[0].value")},
    ),
    (
        "redirect-with-url-rewrite",
        route_rule(
            "filters: [{type: RequestRedirect, requestRedirect: {}}, "
            "{type: URLRewrite, urlRewrite: {}}]"
        ),
        {(0, "spec.rules[0].filters")},
    ),
    (
        "request-header-modifier-twice",
        route_rule(
            "filters: [{type: RequestHeaderModifier, requestHeaderModifier: {}}, "
            "{type: RequestHeaderModifier, requestHeaderModifier: {}}]"
        ),
        {(0, "spec.rules[0].filters")},
    ),
    (
        "cors-twice",
        route_rule("filters: [{type: CORS, cors: {}}, {type: CORS, cors: {}}]"),
        {(0, "spec.rules[0].filters")},
    ),
    (
        "filter-type-unsupported",
        route_filter("{type: ExternalAuth, externalAuth: {}}"),
        {(0, "spec.rules[0].filters[0].type"), (0, "spec.rules[0].filters[0].externalAuth")},
    ),
    (
        "filter-type-missing",
        route_filter("{cors: {}}"),
        {(0, "spec.rules[0].filters[0].type"), (0, "spec.rules[0].filters[0].cors")},
    ),
    (
        "filter-body-of-another-type",
        route_filter("{type: CORS, cors: {}, urlRewrite: {}}"),
        {(0, "spec.rules[0].filters[0].urlRewrite")},
    ),
    (
        "header-modifier-name-invalid",
        route_filter(
            "{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: 'a:b', value: x}]}}"
        ),
        {(0, "spec.rules[0].filters[0].requestHeaderModifier.set[0].name")},
    ),
    (
        "header-modifier-value-missing",
        route_filter("{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: a}]}}"),
        {(0, "spec.rules[0].filters[0].responseHeaderModifier.add[0].value")},
    ),
    (
        "header-modifier-remove-not-strings",
        route_filter("{type: RequestHeaderModifier, requestHeaderModifier: {remove: [a, 1]}}"),
        {(0, "spec.rules[0].filters[0].requestHeaderModifier.remove[1]")},
    ),
    (
        "header-modifier-unknown-field",
        route_filter("{type: RequestHeaderModifier, requestHeaderModifier: {append: []}}"),
        {(0, "spec.rules[0].filters[0].requestHeaderModifier.append")},
    ),
    (
        "redirect-scheme",
        route_filter("{type: RequestRedirect, requestRedirect: {scheme: ftp}}"),
        {(0, "spec.rules[0].filters[0].requestRedirect.scheme")},
    ),
    (
        "redirect-status-code",
        route_filter("{type: RequestRedirect, requestRedirect: {statusCode: 305}}"),
        {(0, "spec.rules[0].filters[0].requestRedirect.statusCode")},
    ),
    (
        "redirect-port",
        route_filter("{type: RequestRedirect, requestRedirect: {port: 0}}"),
        {(0, "spec.rules[0].filters[0].requestRedirect.port")},
    ),
    (
        "path-modifier-type",
        route_filter(
            "{type: URLRewrite, urlRewrite: {path: {type: Replace, replaceFullPath: /x}}}"
        ),
        {(0, "spec.rules[0].filters[0].urlRewrite.path.type")},
    ),
    (
        "path-modifier-value-missing",
        route_filter("{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}"),
        {(0, "spec.rules[0].filters[0].urlRewrite.path.replaceFullPath")},
    ),
    (
        "path-modifier-value-of-other-type",
        route_filter(
            "{type: RequestRedirect, requestRedirect: "
            "{path: {type: ReplaceFullPath, replaceFullPath: /a, replacePrefixMatch: /b}}}"
        ),
        {(0, "spec.rules[0].filters[0].requestRedirect.path.replacePrefixMatch")},
    ),
    (
        "mirror-percent",
        route_filter("{type: RequestMirror, requestMirror: {backendRef: {name: s}, percent: 101}}"),
        {(0, "spec.rules[0].filters[0].requestMirror.percent")},
    ),
    (
        "mirror-fraction",
        route_filter(
            "{type: RequestMirror, requestMirror: "
            "{backendRef: {name: s}, fraction: {numerator: 3, denominator: 2}}}"
        ),
        {(0, "spec.rules[0].filters[0].requestMirror.fraction.numerator")},
    ),
    (
        "mirror-fraction-denominator",
        route_filter(
            "{type: RequestMirror, requestMirror: "
            "{backendRef: {name: s}, fraction: {numerator: 0, denominator: 0}}}"
        ),
        {(0, "spec.rules[0].filters[0].requestMirror.fraction.denominator")},
    ),
    (
        "mirror-backend-name",
        route_filter("{type: RequestMirror, requestMirror: {backendRef: {port: 80}}}"),
        {(0, "spec.rules[0].filters[0].requestMirror.backendRef.name")},
    ),
    (
        "mirror-backend-unknown-field",
        route_filter("{type: RequestMirror, requestMirror: {backendRef: {name: s, weight: 1}}}"),
        {(0, "spec.rules[0].filters[0].requestMirror.backendRef.weight")},
    ),
    (
        "cors-max-age",
        route_filter("{type: CORS, cors: {maxAge: 0}}"),
        {(0, "spec.rules[0].filters[0].cors.maxAge")},
    ),
    (
        "cors-credentials-not-bool",
        route_filter("{type: CORS, cors: {allowCredentials: 'yes'}}"),
        {(0, "spec.rules[0].filters[0].cors.allowCredentials")},
    ),
    (
        "extension-ref-kind",
        route_filter("{type: ExtensionRef, extensionRef: {name: x}}"),
        {(0, "spec.rules[0].filters[0].extensionRef.kind")},
    ),
    (
        "backend-weight-negative",
        route_rule("backendRefs: [{name: s, port: 80}, {name: s, port: 80, weight: -1}]"),
        {(0, "spec.rules[0].backendRefs[1].weight")},
    ),
    (
        "backend-weight-too-large",
        route_rule("backendRefs: [{name: s, port: 80, weight: 1000001}]"),
        {(0, "spec.rules[0].backendRefs[0].weight")},
    ),
    (
        "backend-port-bool",
        route_rule("backendRefs: [{name: s, port: true}]"),
        {(0, "spec.rules[0].backendRefs[0].port")},
    ),
    (
        "backend-name-missing",
        route_rule("backendRefs: [{port: 80}]"),
        {(0, "spec.rules[0].backendRefs[0].name")},
    ),
    (
        "backend-unknown-field",
        route_rule("backendRefs: [{name: s, port: 80, priority: 1}]"),
        {(0, "spec.rules[0].backendRefs[0].priority")},
    ),
    (
        "backend-filter-type",
        route_rule("backendRefs: [{name: s, port: 80, filters: [{type: Nope}]}]"),
        {(0, "spec.rules[0].backendRefs[0].filters[0].type")},
    ),
    (
        "timeout-float",
        route_rule("timeouts: {request: 1.5s}"),
        {(0, "spec.rules[0].timeouts.request")},
    ),
    (
        "timeout-day",
        route_rule("timeouts: {backendRequest: 1d}"),
        {(0, "spec.rules[0].timeouts.backendRequest")},
    ),
    (
        "timeout-backend-longer-than-request",
        route_rule("timeouts: {request: 1s, backendRequest: 2s}"),
        {(0, "spec.rules[0].timeouts.backendRequest")},
    ),
    (
        "timeout-unknown-field",
        route_rule("timeouts: {idle: 1s}"),
        {(0, "spec.rules[0].timeouts.idle")},
    ),
    (
        "retry-code",
        route_rule("retry: {codes: [500, 200]}"),
        {(0, "spec.rules[0].retry.codes[1]")},
    ),
    ("retry-attempts", route_rule("retry: {attempts: -1}"), {(0, "spec.rules[0].retry.attempts")}),
    ("retry-backoff", route_rule("retry: {backoff: 1}"), {(0, "spec.rules[0].retry.backoff")}),
    (
        "retry-backoff-form",
        route_rule("retry: {backoff: 1m1}"),
        {(0, "spec.rules[0].retry.backoff")},
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_config_names_every_error_path(text: str, expected: set[tuple[int, str]]) -> None:
    assert errors_of(text) == expected


# --- Spec rules the parser does not enforce: each is a CRD schema or CEL rule of Gateway API (a
# kube-apiserver would refuse the object) or a MUST of the field's doc; Sluice accepts them. ---

SPEC_GAPS = [
    (
        # apis/v1/httproute_types.go, HTTPRouteRule.filters:
        # "URLRewrite filter cannot be repeated"
        "url-rewrite-twice",
        route_rule(
            "filters: [{type: URLRewrite, urlRewrite: {hostname: a.com}}, "
            "{type: URLRewrite, urlRewrite: {hostname: b.com}}]"
        ),
        (0, "spec.rules[0].filters"),
    ),
    (
        # HTTPBackendRef.filters: "May specify either httpRouteFilterRequestRedirect or
        # httpRouteFilterRequestRewrite, but not both"
        "backend-filters-redirect-with-rewrite",
        route_rule(
            "backendRefs: [{name: s, port: 80, filters: ["
            "{type: RequestRedirect, requestRedirect: {}}, {type: URLRewrite, urlRewrite: {}}]}]"
        ),
        (0, "spec.rules[0].backendRefs[0]"),
    ),
    (
        # HTTPRouteRule: "When using URLRewrite filter with path.replacePrefixMatch, exactly one
        # PathPrefix match must be specified"
        "replace-prefix-match-with-exact-match",
        route_rule(
            "matches: [{path: {type: Exact, value: /a}}]\n"
            "filters: [{type: URLRewrite, urlRewrite: "
            "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]"
        ),
        (0, "spec.rules[0]"),
    ),
    (
        # HTTPRouteRule: "RequestRedirect filter must not be used together with backendRefs"
        "redirect-with-backend-refs",
        route_rule(
            "filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]\n"
            "backendRefs: [{name: s, port: 80}]"
        ),
        (0, "spec.rules[0]"),
    ),
    (
        # HTTPPathMatch: "must not contain '%2f' when type one of ['Exact', 'PathPrefix']"
        "path-encoded-slash",
        route_rule("matches: [{path: {type: PathPrefix, value: /a%2fb}}]"),
        (0, "spec.rules[0].matches[0].path.value"),
    ),
    (
        # HTTPPathMatch: "must only contain valid characters (matching
        # ^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$)"
        "path-space",
        route_rule("matches: [{path: {type: Exact, value: '/a b'}}]"),
        (0, "spec.rules[0].matches[0].path.value"),
    ),
    (
        # HTTPMethod: "+kubebuilder:validation:Enum=GET;HEAD;POST;PUT;DELETE;CONNECT;OPTIONS;
        # TRACE;PATCH"
        "method-not-in-enum",
        route_rule("matches: [{method: FETCH}]"),
        (0, "spec.rules[0].matches[0].method"),
    ),
    (
        # HTTPRouteFilter: "filter.requestHeaderModifier must be specified for
        # RequestHeaderModifier filter.type"
        "filter-without-its-body",
        route_filter("{type: RequestHeaderModifier}"),
        (0, "spec.rules[0].filters[0]"),
    ),
    (
        # HTTPRequestMirrorFilter: "Only one of percent or fraction may be specified"
        "mirror-percent-and-fraction",
        route_filter(
            "{type: RequestMirror, requestMirror: {backendRef: {name: s, port: 80}, "
            "percent: 50, fraction: {numerator: 1, denominator: 10}}}"
        ),
        (0, "spec.rules[0].filters[0]"),
    ),
    (
        # HTTPCORSFilter.allowOrigins: "AllowOrigins cannot contain '*' alongside other origins"
        "cors-wildcard-origin-with-others",
        route_filter("{type: CORS, cors: {allowOrigins: ['*', 'https://a.com']}}"),
        (0, "spec.rules[0].filters[0].cors"),
    ),
    (
        # HTTPHeaderFilter: "Filters specifying multiple actions of the same or different type
        # for any one header name are invalid."
        "header-modifier-two-actions-on-one-name",
        route_filter(
            "{type: RequestHeaderModifier, requestHeaderModifier: "
            "{set: [{name: x-a, value: '1'}], remove: [X-A]}}"
        ),
        (0, "spec.rules[0].filters[0]"),
    ),
    (
        # Hostname: "1. IPs are not allowed."
        "route-hostname-ip",
        ROUTE_HEAD + "  hostnames: [10.0.0.1]\n",
        (0, "spec.hostnames"),
    ),
    (
        # Hostname pattern ^(\*\.)?[a-z0-9]...: a bare "*" is not a hostname (it would be
        # served as the literal host "*", matching no request).
        "route-hostname-bare-star",
        ROUTE_HEAD + "  hostnames: ['*']\n",
        (0, "spec.hostnames"),
    ),
    (
        # Hostname: "The wildcard label must appear by itself as the first label."
        "route-hostname-inner-wildcard",
        ROUTE_HEAD + "  hostnames: ['foo.*.example.com']\n",
        (0, "spec.hostnames"),
    ),
    (
        # Listener.port: "+required"
        "listener-port-missing",
        gateway_doc("{name: a, protocol: HTTP}"),
        (0, "spec.listeners[0]"),
    ),
]


@pytest.mark.parametrize(
    ("text", "where"), [c[1:] for c in SPEC_GAPS], ids=[c[0] for c in SPEC_GAPS]
)
def test_config_the_crd_rejects_is_rejected(text: str, where: tuple[int, str]) -> None:
    # Rejected, with an error at or under the offending field (any sub-path will do).
    assert any(_is_under(error, where) for error in error_paths(text))


@pytest.mark.parametrize(
    ("text", "where"), [c[1:] for c in SPEC_GAPS], ids=[c[0] for c in SPEC_GAPS]
)
def test_spec_gap_inputs_have_no_other_error(text: str, where: tuple[int, str]) -> None:
    # Keeps the xfail above honest (each input breaks one rule only) and keeps holding once
    # the gap is fixed.
    assert {e for e in error_paths(text) if not _is_under(e, where)} == set()


def _is_under(error: tuple[int, str], where: tuple[int, str]) -> bool:
    return error[0] == where[0] and error[1].startswith(where[1])


def test_unquoted_creation_timestamp_is_accepted() -> None:
    # PyYAML (as gateway/ uses it) turns an unquoted RFC 3339 timestamp into a datetime; the
    # spec orders routes by it ("The oldest Route based on creation timestamp").
    config = config_of(
        GATEWAY
        + route("r", "rules: []").replace(
            "metadata: {", "metadata: {creationTimestamp: 2020-09-08T01:02:03Z, "
        )
    )
    assert config.routes[0].meta.creation.startswith("2020-09-08")
