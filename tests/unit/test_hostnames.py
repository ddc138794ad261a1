"""Hostname rules: Host header normalisation, wildcard matching, Listener × HTTPRoute
intersection and specificity order (apis/v1 HTTPRouteSpec.hostnames, Listener.hostname)."""

from __future__ import annotations

import pytest

from routing.hostnames import host_of, hostname_matches, intersect_hostnames, specificity

HOSTS = [
    ("lower-cased", "Example.COM", "example.com"),
    # "Implementations MUST ignore any port value specified in the HTTP Host header"
    ("port-dropped", "example.com:8080", "example.com"),
    ("trailing-dot-dropped", "example.com.", "example.com"),
    ("port-and-trailing-dot", "example.com.:80", "example.com"),
    ("blanks-trimmed", "  example.com ", "example.com"),
    ("ipv6-with-port", "[::1]:8080", "[::1]"),
    ("ipv6-without-port", "[2001:DB8::1]", "[2001:db8::1]"),
    ("ipv6-unterminated", "[::1", "[::1"),
    ("colon-without-port-kept", "example.com:http", "example.com:http"),
    ("empty", "", ""),
]


@pytest.mark.parametrize(("header", "host"), [h[1:] for h in HOSTS], ids=[h[0] for h in HOSTS])
def test_host_of(header: str, host: str) -> None:
    assert host_of(header) == host


MATCHES = [
    ("no-pattern-matches-all", None, "anything.example", True),
    ("exact", "foo.example.com", "foo.example.com", True),
    ("exact-other", "foo.example.com", "bar.example.com", False),
    ("exact-is-not-a-suffix", "example.com", "foo.example.com", False),
    # "*.example.com would match both test.example.com, and foo.test.example.com, but not
    # example.com"
    ("wildcard-one-label", "*.example.com", "test.example.com", True),
    ("wildcard-two-labels", "*.example.com", "foo.test.example.com", True),
    ("wildcard-not-the-parent", "*.example.com", "example.com", False),
    ("wildcard-label-boundary", "*.example.com", "testexample.com", False),
    ("wildcard-empty-label", "*.example.com", ".example.com", False),
    ("wildcard-other-domain", "*.example.com", "test.example.net", False),
]


@pytest.mark.parametrize(
    ("pattern", "host", "expected"), [c[1:] for c in MATCHES], ids=[c[0] for c in MATCHES]
)
def test_hostname_matches(pattern: str | None, host: str, expected: bool) -> None:
    assert hostname_matches(pattern, host) is expected


INTERSECTIONS = [
    ("both-unset-any", None, (), ()),
    ("route-unset-takes-listener", "test.example.com", (), ("test.example.com",)),
    ("listener-unset-takes-route", None, ("a.com", "*.b.com"), ("a.com", "*.b.com")),
    # "A Listener with test.example.com as the hostname matches HTTPRoutes that have ... specified
    # at least one of test.example.com or *.example.com."
    (
        "exact-listener-exact-route",
        "test.example.com",
        ("test.example.com",),
        ("test.example.com",),
    ),
    (
        "exact-listener-wildcard-route",
        "test.example.com",
        ("*.example.com",),
        ("test.example.com",),
    ),
    ("exact-listener-other-route", "test.example.com", ("other.example.com",), None),
    ("exact-listener-deeper-wildcard", "test.example.com", ("*.test.example.com",), None),
    # "A Listener with *.example.com ... *.example.com, test.example.com, and foo.test.example.com
    # would all match. On the other hand, example.com and test.example.net would not match."
    (
        "wildcard-listener-spec-examples",
        "*.example.com",
        ("*.example.com", "test.example.com", "foo.test.example.com"),
        ("*.example.com", "test.example.com", "foo.test.example.com"),
    ),
    ("wildcard-listener-no-overlap", "*.example.com", ("example.com", "test.example.net"), None),
    # "if a Listener specified *.example.com, and the HTTPRoute specified test.example.com and
    # test.example.net, test.example.net must not be considered for a match."
    (
        "non-matching-route-hostnames-ignored",
        "*.example.com",
        ("test.example.com", "test.example.net"),
        ("test.example.com",),
    ),
    ("narrower-wildcard-route", "*.example.com", ("*.foo.example.com",), ("*.foo.example.com",)),
    ("wider-wildcard-route", "*.foo.example.com", ("*.example.com",), ("*.foo.example.com",)),
    ("same-suffix-not-a-label", "*.example.com", ("*.myexample.com",), None),
    (
        "duplicates-collapse",
        "foo.example.com",
        ("*.example.com", "foo.example.com"),
        ("foo.example.com",),
    ),
]


@pytest.mark.parametrize(
    ("listener", "route", "expected"),
    [c[1:] for c in INTERSECTIONS],
    ids=[c[0] for c in INTERSECTIONS],
)
def test_intersect_hostnames(
    listener: str | None, route: tuple[str, ...], expected: tuple[str, ...] | None
) -> None:
    assert intersect_hostnames(listener, route) == expected


def test_specificity_orders_exact_then_longer_wildcards_then_any() -> None:
    # Listener.hostname: "Exact matches MUST be processed before wildcard matches, and wildcard
    # matches MUST be processed before fallback (empty Hostname value) matches ...
    # *.foo.example.com takes precedence over *.example.com."
    names = [None, "*.example.com", "a.example.com", "*.foo.example.com", "b.com"]
    assert sorted(names, key=specificity) == [
        "a.example.com",
        "b.com",
        "*.foo.example.com",
        "*.example.com",
        None,
    ]
