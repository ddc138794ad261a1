"""Filter transforms (routing/rewrite.py): path rewrites, redirect Location, header modifiers,
CORS answers. Oracles are the field docs of apis/v1/httproute_types.go."""

from __future__ import annotations

from typing import Any

import pytest

from routing import model as m
from routing.rewrite import (
    apply_header_modifier,
    cors_preflight,
    cors_response_headers,
    redirect_location,
    rewrite_path,
)

PREFIX = m.PathModifierKind.PREFIX
FULL = m.PathModifierKind.FULL

# HTTPPathModifier.replacePrefixMatch, the spec's table:
# Request Path | Prefix Match | Replace Prefix | Modified Path
SPEC_TABLE = [
    ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
    ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
    ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
    ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
    ("/foo", "/foo", "/xyz", "/xyz"),
    ("/foo/", "/foo", "/xyz", "/xyz/"),
    ("/foo/bar", "/foo", "", "/bar"),
    ("/foo/", "/foo", "", "/"),
    ("/foo", "/foo", "", "/"),
    ("/foo/", "/foo", "/", "/"),
    ("/foo", "/foo", "/", "/"),
]


@pytest.mark.parametrize(
    ("path", "prefix", "replacement", "expected"),
    SPEC_TABLE,
    ids=[f"{p}|{q}|{r or '<empty>'}" for p, q, r, _ in SPEC_TABLE],
)
def test_replace_prefix_match_spec_table(
    path: str, prefix: str, replacement: str, expected: str
) -> None:
    assert rewrite_path(m.PathModifier(kind=PREFIX, value=replacement), prefix, path) == expected


MORE_REWRITES = [
    ("root-prefix-prepends", PREFIX, "/one", "/", "/two", "/one/two"),
    ("root-prefix-to-root", PREFIX, "/", "/", "/two", "/two"),
    ("deep-prefix", PREFIX, "/one", "/prefix/one", "/prefix/one/two", "/one/two"),
    ("prefix-keeps-the-rest-verbatim", PREFIX, "/v2", "/v1", "/v1/a%2Fb/c", "/v2/a%2Fb/c"),
    ("relative-replacement-made-absolute", PREFIX, "xyz", "/foo", "/foo/bar", "/xyz/bar"),
    ("full-path", FULL, "/one", "/full", "/full/one/two", "/one"),
    ("full-path-to-root", FULL, "/", None, "/anything", "/"),
    ("full-path-without-prefix-match", FULL, "/x", None, "/a/b", "/x"),
    ("prefix-without-prefix-match-replaces-all", PREFIX, "/x", None, "/a/b", "/x"),
    ("prefix-not-in-path-keeps-path", PREFIX, "/x", "/zzz", "/a/b", "/x/a/b"),
]


@pytest.mark.parametrize(
    ("kind", "value", "prefix", "path", "expected"),
    [c[1:] for c in MORE_REWRITES],
    ids=[c[0] for c in MORE_REWRITES],
)
def test_rewrite_path(
    kind: m.PathModifierKind, value: str, prefix: str | None, path: str, expected: str
) -> None:
    assert rewrite_path(m.PathModifier(kind=kind, value=value), prefix, path) == expected


def _location(
    redirect: m.RequestRedirect,
    *,
    scheme: str = "http",
    host: str = "example.com",
    listener_port: int = 80,
    path: str = "/p",
    query: str = "",
    matched_prefix: str | None = None,
) -> str:
    return redirect_location(
        redirect,
        scheme=scheme,
        host=host,
        listener_port=listener_port,
        path=path,
        query=query,
        matched_prefix=matched_prefix,
    )


# HTTPRequestRedirectFilter.port: "If no port is specified, the redirect port MUST be derived
# using the following rules: If redirect scheme is not-empty, the redirect port MUST be the
# well-known port associated with the redirect scheme ... If redirect scheme is empty, the
# redirect port MUST be the Gateway Listener port. Implementations SHOULD NOT add the port number
# in the 'Location' header [for] HTTP ... and port 80 [or] HTTPS ... and port 443."
LOCATIONS = [
    ("listener-80-omitted", m.RequestRedirect(), {}, "http://example.com/p"),
    (
        "listener-port-kept",
        m.RequestRedirect(),
        {"listener_port": 8080},
        "http://example.com:8080/p",
    ),
    (
        "listener-443-on-https-omitted",
        m.RequestRedirect(),
        {"scheme": "https", "listener_port": 443},
        "https://example.com/p",
    ),
    (
        "listener-443-on-http-kept",
        m.RequestRedirect(),
        {"listener_port": 443},
        "http://example.com:443/p",
    ),
    (
        "scheme-https-implies-443",
        m.RequestRedirect(scheme="https"),
        {"listener_port": 8080},
        "https://example.com/p",
    ),
    (
        "scheme-http-implies-80",
        m.RequestRedirect(scheme="http"),
        {"scheme": "https", "listener_port": 8443},
        "http://example.com/p",
    ),
    (
        "explicit-port-wins",
        m.RequestRedirect(scheme="https", port=8443),
        {},
        "https://example.com:8443/p",
    ),
    (
        "explicit-port-80-on-https-kept",
        m.RequestRedirect(scheme="https", port=80),
        {},
        "https://example.com:80/p",
    ),
    (
        "explicit-port-80-omitted",
        m.RequestRedirect(port=80),
        {"listener_port": 8080},
        "http://example.com/p",
    ),
    (
        "explicit-port-without-scheme",
        m.RequestRedirect(port=8081),
        {},
        "http://example.com:8081/p",
    ),
    (
        "hostname",
        m.RequestRedirect(hostname="other.example"),
        {"listener_port": 8080},
        "http://other.example:8080/p",
    ),
    ("query-kept", m.RequestRedirect(), {"query": "a=1&b=2"}, "http://example.com/p?a=1&b=2"),
    (
        "full-path",
        m.RequestRedirect(path=m.PathModifier(kind=FULL, value="/new")),
        {"path": "/old/x"},
        "http://example.com/new",
    ),
    (
        "prefix-path",
        m.RequestRedirect(path=m.PathModifier(kind=PREFIX, value="/xyz")),
        {"path": "/foo/bar", "matched_prefix": "/foo"},
        "http://example.com/xyz/bar",
    ),
    ("ipv6-literal-kept", m.RequestRedirect(), {"host": "[::1]"}, "http://[::1]/p"),
    (
        "ipv6-bare-bracketed",
        m.RequestRedirect(),
        {"host": "::1", "listener_port": 8080},
        "http://[::1]:8080/p",
    ),
]


@pytest.mark.parametrize(
    ("redirect", "request_", "expected"),
    [c[1:] for c in LOCATIONS],
    ids=[c[0] for c in LOCATIONS],
)
def test_redirect_location(
    redirect: m.RequestRedirect, request_: dict[str, Any], expected: str
) -> None:
    assert _location(redirect, **request_) == expected


HEADER_MODIFIERS = [
    # HTTPHeaderFilter.set: "my-header: foo" + set my-header=bar -> "my-header: bar"
    (
        "set-overwrites",
        [("my-header", "foo")],
        m.HeaderModifier(set=(("my-header", "bar"),)),
        [("my-header", "bar")],
    ),
    (
        "set-is-case-insensitive",
        [("My-Header", "foo"), ("other", "1")],
        m.HeaderModifier(set=(("my-header", "bar"),)),
        [("other", "1"), ("my-header", "bar")],
    ),
    (
        "set-replaces-every-value",
        [("x", "1"), ("y", "2"), ("X", "3")],
        m.HeaderModifier(set=(("x", "4"),)),
        [("y", "2"), ("x", "4")],
    ),
    ("set-absent-adds", [], m.HeaderModifier(set=(("x", "1"),)), [("x", "1")]),
    # HTTPHeaderFilter.add: "my-header: foo" + add my-header="bar,baz" -> "my-header: foo,bar,baz"
    (
        "add-appends-to-existing",
        [("my-header", "foo")],
        m.HeaderModifier(add=(("my-header", "bar,baz"),)),
        [("my-header", "foo,bar,baz")],
    ),
    (
        "add-is-case-insensitive",
        [("My-Header", "foo")],
        m.HeaderModifier(add=(("my-header", "bar"),)),
        [("My-Header", "foo,bar")],
    ),
    (
        "add-absent-adds",
        [("a", "1")],
        m.HeaderModifier(add=(("b", "2"),)),
        [("a", "1"), ("b", "2")],
    ),
    (
        "add-twice-appends-twice",
        [],
        m.HeaderModifier(add=(("b", "1"), ("B", "2"))),
        [("b", "1,2")],
    ),
    (
        "add-set-cookie-is-another-field-line",
        [("Set-Cookie", "ab=1; Path=/; SameSite=Lax")],
        m.HeaderModifier(add=(("set-cookie", "tracking=1"),)),
        [("Set-Cookie", "ab=1; Path=/; SameSite=Lax"), ("set-cookie", "tracking=1")],
    ),
    # HTTPHeaderFilter.remove: my-header1/2/3 with remove [my-header1, my-header3] -> my-header2
    (
        "remove",
        [("my-header1", "foo"), ("my-header2", "bar"), ("my-header3", "baz")],
        m.HeaderModifier(remove=("my-header1", "my-header3")),
        [("my-header2", "bar")],
    ),
    (
        "remove-is-case-insensitive",
        [("My-Header1", "foo"), ("my-header2", "bar")],
        m.HeaderModifier(remove=("MY-HEADER1",)),
        [("my-header2", "bar")],
    ),
    ("remove-absent-is-a-no-op", [("a", "1")], m.HeaderModifier(remove=("b",)), [("a", "1")]),
    ("empty-modifier", [("a", "1"), ("a", "2")], m.HeaderModifier(), [("a", "1"), ("a", "2")]),
]


@pytest.mark.parametrize(
    ("headers", "modifier", "expected"),
    [c[1:] for c in HEADER_MODIFIERS],
    ids=[c[0] for c in HEADER_MODIFIERS],
)
def test_apply_header_modifier(
    headers: list[tuple[str, str]], modifier: m.HeaderModifier, expected: list[tuple[str, str]]
) -> None:
    assert apply_header_modifier(headers, modifier) == expected


def test_apply_header_modifier_does_not_change_its_input() -> None:
    headers = [("a", "1")]
    apply_header_modifier(headers, m.HeaderModifier(add=(("a", "2"),), set=(("b", "3"),)))
    assert headers == [("a", "1")]


ORIGIN = "https://www.foo.com"
AC = "Access-Control-"

PREFLIGHTS = [
    (
        "origin-not-allowed-gets-no-cors-headers",
        m.CorsPolicy(allow_origins=("https://www.bar.com",), allow_methods=("GET",)),
        ORIGIN,
        "GET",
        [],
        [],
    ),
    (
        # conformance httproute-cors.yaml, cors-1
        "listed-origin-with-credentials",
        m.CorsPolicy(
            allow_origins=(ORIGIN, "https://*.bar.com"),
            allow_methods=("GET", "OPTIONS"),
            allow_headers=("x-header-1", "x-header-2"),
            expose_headers=("x-header-3", "x-header-4"),
            allow_credentials=True,
            max_age_s=3600,
        ),
        ORIGIN,
        "GET",
        ["x-header-1"],
        [
            (AC + "Allow-Origin", ORIGIN),
            (AC + "Allow-Credentials", "true"),
            (AC + "Allow-Methods", "GET, OPTIONS"),
            (AC + "Allow-Headers", "x-header-1, x-header-2"),
            (AC + "Expose-Headers", "x-header-3, x-header-4"),
            (AC + "Max-Age", "3600"),
            ("Vary", "Origin"),
        ],
    ),
    (
        "wildcard-origin-without-credentials",
        m.CorsPolicy(allow_origins=("*",)),
        ORIGIN,
        "GET",
        [],
        [(AC + "Allow-Origin", "*"), (AC + "Max-Age", "5")],
    ),
    (
        # "If ... * in allowOrigins and allowCredentials is set to true, the gateway must not
        # return * ... Instead, it must return a single origin matching ... the Origin"
        "wildcard-origin-with-credentials-echoes",
        m.CorsPolicy(allow_origins=("*",), allow_credentials=True),
        ORIGIN,
        "GET",
        [],
        [
            (AC + "Allow-Origin", ORIGIN),
            (AC + "Allow-Credentials", "true"),
            (AC + "Max-Age", "5"),
            ("Vary", "Origin"),
        ],
    ),
    (
        "subdomain-wildcard-origin",
        m.CorsPolicy(allow_origins=("https://*.bar.com",)),
        "https://a.b.bar.com",
        "GET",
        [],
        [(AC + "Allow-Origin", "https://a.b.bar.com"), (AC + "Max-Age", "5"), ("Vary", "Origin")],
    ),
    (
        "wildcard-methods-echo-the-request-method",
        m.CorsPolicy(allow_origins=(ORIGIN,), allow_methods=("*",)),
        ORIGIN,
        "PATCH",
        [],
        [
            (AC + "Allow-Origin", ORIGIN),
            (AC + "Allow-Methods", "PATCH"),
            (AC + "Max-Age", "5"),
            ("Vary", "Origin"),
        ],
    ),
    (
        # "If the Access-Control-Request-Method header is not present in the request, the
        # gateway must omit the Access-Control-Allow-Methods response header."
        "wildcard-methods-without-a-request-method",
        m.CorsPolicy(allow_origins=(ORIGIN,), allow_methods=("*",)),
        ORIGIN,
        "",
        [],
        [
            (AC + "Allow-Origin", ORIGIN),
            (AC + "Max-Age", "5"),
            ("Vary", "Origin"),
        ],
    ),
    (
        # "... allowCredentials is set to true, the gateway must not return * in the
        # Access-Control-Allow-Methods ... it must return a single HTTP method matching the
        # value of the Access-Control-Request-Method request header."
        "wildcard-methods-with-credentials",
        m.CorsPolicy(allow_origins=(ORIGIN,), allow_methods=("*",), allow_credentials=True),
        ORIGIN,
        "DELETE",
        [],
        [
            (AC + "Allow-Origin", ORIGIN),
            (AC + "Allow-Credentials", "true"),
            (AC + "Allow-Methods", "DELETE"),
            (AC + "Max-Age", "5"),
            ("Vary", "Origin"),
        ],
    ),
    (
        "wildcard-headers-without-credentials",
        m.CorsPolicy(allow_origins=(ORIGIN,), allow_headers=("*",)),
        ORIGIN,
        "GET",
        ["x-a"],
        [
            (AC + "Allow-Origin", ORIGIN),
            (AC + "Allow-Headers", "*"),
            (AC + "Max-Age", "5"),
            ("Vary", "Origin"),
        ],
    ),
    (
        # "... it must return one or more header names matching the value of the
        # Access-Control-Request-Headers request header."
        "wildcard-headers-with-credentials-echo",
        m.CorsPolicy(allow_origins=(ORIGIN,), allow_headers=("*",), allow_credentials=True),
        ORIGIN,
        "GET",
        ["x-a", "x-b"],
        [
            (AC + "Allow-Origin", ORIGIN),
            (AC + "Allow-Credentials", "true"),
            (AC + "Allow-Headers", "x-a, x-b"),
            (AC + "Max-Age", "5"),
            ("Vary", "Origin"),
        ],
    ),
    (
        # "If the Access-Control-Request-Headers header is not present in the request, the
        # gateway must omit the Access-Control-Allow-Headers response header."
        "wildcard-headers-with-credentials-none-requested",
        m.CorsPolicy(allow_origins=(ORIGIN,), allow_headers=("*",), allow_credentials=True),
        ORIGIN,
        "GET",
        [],
        [
            (AC + "Allow-Origin", ORIGIN),
            (AC + "Allow-Credentials", "true"),
            (AC + "Max-Age", "5"),
            ("Vary", "Origin"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("policy", "origin", "method", "requested", "expected"),
    [c[1:] for c in PREFLIGHTS],
    ids=[c[0] for c in PREFLIGHTS],
)
def test_cors_preflight(
    policy: m.CorsPolicy,
    origin: str,
    method: str,
    requested: list[str],
    expected: list[tuple[str, str]],
) -> None:
    assert cors_preflight(policy, origin, method, requested) == expected


ORIGINS = [
    ("listed", (ORIGIN,), ORIGIN, True),
    ("unlisted", (ORIGIN,), "https://evil.com", False),
    ("scheme-differs", (ORIGIN,), "http://www.foo.com", False),
    ("wildcard-subdomain", ("https://*.bar.com",), "https://a.bar.com", True),
    ("wildcard-many-labels", ("https://*.bar.com",), "https://a.b.c.bar.com", True),
    ("wildcard-not-the-parent", ("https://*.bar.com",), "https://bar.com", False),
    ("wildcard-label-boundary", ("https://*.bar.com",), "https://foobar.com", False),
    ("wildcard-scheme-differs", ("https://*.bar.com",), "http://a.bar.com", False),
    ("wildcard-host-upper-case", ("https://*.bar.com",), "https://A.BAR.com", True),
    ("origin-without-scheme", ("https://*.bar.com",), "a.bar.com", False),
    ("star", ("*",), "null", True),
    ("no-origins-configured", (), ORIGIN, False),
]


@pytest.mark.parametrize(
    ("allowed", "origin", "expected"), [c[1:] for c in ORIGINS], ids=[c[0] for c in ORIGINS]
)
def test_cors_origin_matching(allowed: tuple[str, ...], origin: str, expected: bool) -> None:
    answer = cors_response_headers(m.CorsPolicy(allow_origins=allowed), origin)
    assert bool(answer) is expected


RESPONSES = [
    (
        "with-credentials-and-expose",
        m.CorsPolicy(allow_origins=(ORIGIN,), expose_headers=("x-a",), allow_credentials=True),
        [
            (AC + "Allow-Origin", ORIGIN),
            (AC + "Allow-Credentials", "true"),
            (AC + "Expose-Headers", "x-a"),
            ("Vary", "Origin"),
        ],
    ),
    ("wildcard", m.CorsPolicy(allow_origins=("*",)), [(AC + "Allow-Origin", "*")]),
    ("not-allowed", m.CorsPolicy(allow_origins=("https://x.com",)), []),
]


@pytest.mark.parametrize(
    ("policy", "expected"), [c[1:] for c in RESPONSES], ids=[c[0] for c in RESPONSES]
)
def test_cors_response_headers(policy: m.CorsPolicy, expected: list[tuple[str, str]]) -> None:
    assert cors_response_headers(policy, ORIGIN) == expected


# --- CORS behaviour that contradicts HTTPCORSFilter ---


def test_wildcard_methods_with_credentials_and_no_request_method_omit_the_header() -> None:
    # "If the Access-Control-Request-Method header is not present in the request, the gateway
    # must omit the Access-Control-Allow-Methods response header."
    policy = m.CorsPolicy(allow_origins=(ORIGIN,), allow_methods=("*",), allow_credentials=True)
    names = [name for name, _ in cors_preflight(policy, ORIGIN, "", [])]
    assert AC + "Allow-Methods" not in names


@pytest.mark.parametrize("answer", ["preflight", "response"])
def test_wildcard_expose_headers_is_not_sent_with_credentials(answer: str) -> None:
    # "If the configuration contains the wildcard * in exposeHeaders and allowCredentials is set
    # to true, the gateway cannot use the * in the Access-Control-Expose-Headers response header."
    policy = m.CorsPolicy(allow_origins=(ORIGIN,), expose_headers=("*",), allow_credentials=True)
    if answer == "preflight":
        headers = cors_preflight(policy, ORIGIN, "GET", [])
    else:
        headers = cors_response_headers(policy, ORIGIN)
    assert (AC + "Expose-Headers", "*") not in headers


WILDCARD_ORIGIN_GAPS = [
    # CORSOrigin pattern admits a port after a wildcard host: (\*\.)?...(:([0-9]{1,5}))?
    ("wildcard-host-with-port", ("https://*.bar.com:8443",), "https://a.bar.com:8443", True),
    # "A wildcard by itself matches all hosts." (pattern also admits "https://*")
    ("scheme-and-bare-wildcard", ("https://*",), "https://a.bar.com", True),
    # "if not included, port 80 is assumed for http scheme origins, and port 443 is assumed for
    # https origins. This may affect origin matching." -- https://*.bar.com means port 443.
    ("wildcard-without-port-is-port-443", ("https://*.bar.com",), "https://a.bar.com:9999", False),
]


@pytest.mark.parametrize(
    ("allowed", "origin", "expected"),
    [c[1:] for c in WILDCARD_ORIGIN_GAPS],
    ids=[c[0] for c in WILDCARD_ORIGIN_GAPS],
)
def test_cors_wildcard_origins_per_spec(
    allowed: tuple[str, ...], origin: str, expected: bool
) -> None:
    answer = cors_response_headers(m.CorsPolicy(allow_origins=allowed), origin)
    assert bool(answer) is expected


def test_redirect_with_a_relative_full_path_keeps_the_host() -> None:
    # HTTPPathModifier.replaceFullPath (maxLength 1024, no pattern): "the value with which to
    # replace the full path of a request during a rewrite or redirect". RequestRedirect.hostname:
    # "When empty, the hostname in the Host header of the request is used."
    redirect = m.RequestRedirect(path=m.PathModifier(kind=FULL, value="abc"))
    location = _location(redirect)
    assert location.startswith("http://example.com/")
