"""Matching a request to one rule: path, method, headers, query, route hostnames, precedence.

The oracle is HTTPRouteRule.matches in apis/v1/httproute_types.go: "Across all rules specified on
applicable Routes, precedence must be given to the match having: Exact path match; Prefix path
match with largest number of characters; Method match; Largest number of header matches; Largest
number of query param matches." then "The oldest Route based on creation timestamp", then
"{namespace}/{name}" alphabetically, then "the FIRST matching rule (in list order)".
RegularExpression precedence is implementation-specific: Sluice puts it after Exact and before
PathPrefix.
"""

from __future__ import annotations

import pytest

from routing import NoRouteMatchedError, RequestFacts, RoutingTable
from routing import model as m
from tests.unit.manifests import GATEWAY, match, request, route, simple_route, table_of, winner

OLD = "2020-01-01T00:00:00Z"
NEW = "2021-01-01T00:00:00Z"


def _table(*routes: str) -> RoutingTable:
    return table_of(GATEWAY + "".join(routes))


PREFIX_MATCHES = [
    # "the paths /abc, /abc/, and /abc/def would all match the prefix /abc, but the path /abcd
    # would not."
    ("abc-exact-path", "/abc", "/abc", True),
    ("abc-trailing-slash", "/abc", "/abc/", True),
    ("abc-child", "/abc", "/abc/def", True),
    ("abc-not-abcd", "/abc", "/abcd", False),
    # "When specified, a trailing / is ignored."
    ("trailing-slash-value-exact", "/abc/", "/abc", True),
    ("trailing-slash-value-child", "/abc/", "/abc/def", True),
    ("trailing-slash-value-not-abcd", "/abc/", "/abcd", False),
    ("root-matches-all", "/", "/anything/at/all", True),
    ("root-matches-root", "/", "/", True),
    ("case-sensitive", "/abc", "/ABC", False),
    ("deeper-prefix", "/abc/def", "/abc/def/ghi", True),
    ("deeper-prefix-partial-element", "/abc/def", "/abc/defg", False),
    ("parent-path", "/abc/def", "/abc", False),
    ("shorter-request", "/abc", "/ab", False),
    ("root-request", "/abc", "/", False),
]


@pytest.mark.parametrize(
    ("prefix", "path", "expected"),
    [c[1:] for c in PREFIX_MATCHES],
    ids=[c[0] for c in PREFIX_MATCHES],
)
def test_path_prefix_is_element_wise(prefix: str, path: str, expected: bool) -> None:
    table = _table(simple_route("r", f"{{path: {{type: PathPrefix, value: '{prefix}'}}}}"))
    assert _matches(table, request(path)) is expected


EXACT_AND_REGEX = [
    ("exact-equal", "Exact", "/abc", "/abc", True),
    ("exact-trailing-slash", "Exact", "/abc", "/abc/", False),
    ("exact-child", "Exact", "/abc", "/abc/def", False),
    ("exact-case", "Exact", "/abc", "/Abc", False),
    ("regex-full-match", "RegularExpression", "/v[0-9]+/.*", "/v1/chat", True),
    ("regex-is-anchored-at-end", "RegularExpression", "/v[0-9]+", "/v1/chat", False),
    ("regex-is-anchored-at-start", "RegularExpression", "v[0-9]+/chat", "/v1/chat", False),
]


@pytest.mark.parametrize(
    ("kind", "value", "path", "expected"),
    [c[1:] for c in EXACT_AND_REGEX],
    ids=[c[0] for c in EXACT_AND_REGEX],
)
def test_exact_and_regex_paths(kind: str, value: str, path: str, expected: bool) -> None:
    table = _table(simple_route("r", f"{{path: {{type: {kind}, value: '{value}'}}}}"))
    assert _matches(table, request(path)) is expected


def _matches(table: RoutingTable, req: RequestFacts) -> bool:
    try:
        winner(table, req)
    except NoRouteMatchedError:
        return False
    return True


HEADER_MATCHES = [
    # "Name matching MUST be case-insensitive."
    ("name-case-insensitive", "[{name: X-Model, value: a}]", {"x-model": "a"}, True),
    ("value-case-sensitive", "[{name: x-model, value: a}]", {"x-model": "A"}, False),
    ("header-absent", "[{name: x-model, value: a}]", {}, False),
    ("all-must-match", "[{name: a, value: '1'}, {name: b, value: '2'}]", {"a": "1"}, False),
    ("all-match", "[{name: a, value: '1'}, {name: b, value: '2'}]", {"a": "1", "b": "2"}, True),
    ("regex", "[{name: a, type: RegularExpression, value: 'v[0-9]'}]", {"a": "v7"}, True),
    (
        "regex-full-value",
        "[{name: a, type: RegularExpression, value: 'v[0-9]'}]",
        {"a": "v77"},
        False,
    ),
    # "If multiple entries specify equivalent header names, the first entry with an equivalent
    # name MUST be considered for a match. Subsequent entries ... MUST be ignored."
    (
        "first-equivalent-name-wins",
        "[{name: X-A, value: '1'}, {name: x-a, value: '2'}]",
        {"x-a": "1"},
        True,
    ),
    (
        "later-equivalent-name-ignored",
        "[{name: X-A, value: '1'}, {name: x-a, value: '2'}]",
        {"x-a": "2"},
        False,
    ),
]


@pytest.mark.parametrize(
    ("headers", "sent", "expected"),
    [c[1:] for c in HEADER_MATCHES],
    ids=[c[0] for c in HEADER_MATCHES],
)
def test_header_matches(headers: str, sent: dict[str, str], expected: bool) -> None:
    table = _table(simple_route("r", f"{{headers: {headers}}}"))
    assert _matches(table, request(headers=sent)) is expected


QUERY_MATCHES = [
    ("exact", "[{name: model, value: a}]", {"model": "a"}, True),
    ("value-differs", "[{name: model, value: a}]", {"model": "b"}, False),
    # query param names are case-sensitive (HTTPQueryParamMatch.name)
    ("name-case-sensitive", "[{name: model, value: a}]", {"Model": "a"}, False),
    ("absent", "[{name: model, value: a}]", {}, False),
    ("regex", "[{name: n, type: RegularExpression, value: '[0-9]+'}]", {"n": "42"}, True),
    ("regex-miss", "[{name: n, type: RegularExpression, value: '[0-9]+'}]", {"n": "4x"}, False),
    ("first-equal-name-wins", "[{name: q, value: a}, {name: q, value: b}]", {"q": "a"}, True),
    ("later-equal-name-ignored", "[{name: q, value: a}, {name: q, value: b}]", {"q": "b"}, False),
]


@pytest.mark.parametrize(
    ("params", "sent", "expected"),
    [c[1:] for c in QUERY_MATCHES],
    ids=[c[0] for c in QUERY_MATCHES],
)
def test_query_param_matches(params: str, sent: dict[str, str], expected: bool) -> None:
    table = _table(simple_route("r", f"{{queryParams: {params}}}"))
    assert _matches(table, request(query=sent)) is expected


@pytest.mark.parametrize(
    ("method", "expected"), [("POST", True), ("GET", False)], ids=["same", "different"]
)
def test_method_match(method: str, expected: bool) -> None:
    table = _table(simple_route("r", "{method: POST}"))
    assert _matches(table, request(method=method)) is expected


def test_a_rule_matches_when_any_of_its_matches_does() -> None:
    table = _table(
        simple_route("r", "{path: {type: Exact, value: /a}}, {headers: [{name: v, value: '2'}]}")
    )
    assert _matches(table, request("/a"))
    assert _matches(table, request("/b", headers={"v": "2"}))
    assert not _matches(table, request("/b"))


# Each case: routes (name, match, created), request, the expected winner "route:rule".
PRECEDENCE = [
    (
        "exact-beats-prefix-of-older-route",
        [
            ("p", "{path: {type: PathPrefix, value: /foo}}", OLD),
            ("e", "{path: {type: Exact, value: /foo/bar}}", NEW),
        ],
        request("/foo/bar"),
        "e",
    ),
    (
        "exact-beats-longer-prefix",
        [
            ("p", "{path: {type: PathPrefix, value: /foo/bar}}", OLD),
            ("e", "{path: {type: Exact, value: /foo/bar}}", NEW),
        ],
        request("/foo/bar"),
        "e",
    ),
    (
        "exact-beats-regex",
        [
            ("x", "{path: {type: RegularExpression, value: '/foo/.*'}}", OLD),
            ("e", "{path: {type: Exact, value: /foo/bar}}", NEW),
        ],
        request("/foo/bar"),
        "e",
    ),
    (
        "regex-beats-prefix",
        [
            ("p", "{path: {type: PathPrefix, value: /foo/bar}}", OLD),
            ("x", "{path: {type: RegularExpression, value: '/foo/.*'}}", NEW),
        ],
        request("/foo/bar"),
        "x",
    ),
    (
        "longest-prefix-wins",
        [("short", "{path: {value: /foo}}", OLD), ("long", "{path: {value: /foo/bar}}", NEW)],
        request("/foo/bar/baz"),
        "long",
    ),
    (
        "longest-prefix-wins-over-root",
        [("root", "{path: {value: /}}", OLD), ("v1", "{path: {value: /v1}}", NEW)],
        request("/v1/models"),
        "v1",
    ),
    (
        "shorter-prefix-when-longer-does-not-match",
        [("short", "{path: {value: /foo}}", NEW), ("long", "{path: {value: /foo/bar}}", OLD)],
        request("/foo/baz"),
        "short",
    ),
    (
        "trailing-slash-does-not-lengthen-a-prefix",
        [("slash", "{path: {value: /foo/}}", NEW), ("plain", "{path: {value: /foo}}", OLD)],
        request("/foo/x"),
        "plain",
    ),
    (
        "prefix-length-before-method",
        [
            ("method", "{path: {value: /a}, method: GET}", OLD),
            ("long", "{path: {value: /a/b}}", NEW),
        ],
        request("/a/b"),
        "long",
    ),
    (
        "method-before-headers",
        [
            (
                "headers",
                "{path: {value: /p}, headers: [{name: a, value: '1'}, {name: b, value: '1'}]}",
                OLD,
            ),
            ("method", "{path: {value: /p}, method: GET}", NEW),
        ],
        request("/p", headers={"a": "1", "b": "1"}),
        "method",
    ),
    (
        "more-headers-win",
        [
            ("one", "{headers: [{name: a, value: '1'}]}", OLD),
            ("two", "{headers: [{name: a, value: '1'}, {name: b, value: '1'}]}", NEW),
        ],
        request(headers={"a": "1", "b": "1"}),
        "two",
    ),
    (
        "headers-before-query",
        [
            ("query", "{queryParams: [{name: a, value: '1'}, {name: b, value: '1'}]}", OLD),
            ("header", "{headers: [{name: a, value: '1'}]}", NEW),
        ],
        request(headers={"a": "1"}, query={"a": "1", "b": "1"}),
        "header",
    ),
    (
        "more-query-params-win",
        [
            ("one", "{queryParams: [{name: a, value: '1'}]}", OLD),
            ("two", "{queryParams: [{name: a, value: '1'}, {name: b, value: '1'}]}", NEW),
        ],
        request(query={"a": "1", "b": "1"}),
        "two",
    ),
    (
        "oldest-route-wins-a-tie",
        [("aaa", "{path: {value: /p}}", NEW), ("zzz", "{path: {value: /p}}", OLD)],
        request("/p"),
        "zzz",
    ),
    (
        "alphabetical-on-equal-age",
        [("zzz", "{path: {value: /p}}", OLD), ("aaa", "{path: {value: /p}}", OLD)],
        request("/p"),
        "aaa",
    ),
    (
        "without-timestamps-earlier-document-is-older",
        [("zzz", "{path: {value: /p}}", None), ("aaa", "{path: {value: /p}}", None)],
        request("/p"),
        "zzz",
    ),
    (
        "a-timestamp-is-older-than-none",
        [("none", "{path: {value: /p}}", None), ("dated", "{path: {value: /p}}", NEW)],
        request("/p"),
        "dated",
    ),
    (
        "a-losing-match-does-not-block-a-lower-one",
        [
            ("exact", "{path: {type: Exact, value: /p}, method: POST}", OLD),
            ("prefix", "{path: {value: /}}", NEW),
        ],
        request("/p", method="GET"),
        "prefix",
    ),
]


@pytest.mark.parametrize(
    ("routes", "req", "expected"),
    [c[1:] for c in PRECEDENCE],
    ids=[c[0] for c in PRECEDENCE],
)
def test_precedence_across_routes(
    routes: list[tuple[str, str, str | None]], req: RequestFacts, expected: str
) -> None:
    table = _table(*(simple_route(n, match, created=c) for n, match, c in routes))
    assert winner(table, req) == f"default/{expected}:r0"


def test_alphabetical_order_is_by_namespace_then_name() -> None:
    table = _table(
        simple_route("a", "{path: {value: /p}}", namespace="ns-b", created=OLD),
        simple_route("z", "{path: {value: /p}}", namespace="ns-a", created=OLD),
    )
    assert winner(table, request("/p")) == "ns-a/z:r0"


def test_first_rule_wins_within_a_route() -> None:
    table = _table(
        route(
            "r",
            """
parentRefs: [{name: gw}]
rules:
- {name: first, matches: [{path: {value: /p}}]}
- {name: second, matches: [{path: {value: /p}}]}
- {name: longer, matches: [{path: {value: /p/q}}]}
""",
        )
    )
    assert winner(table, request("/p/x")) == "default/r:first"
    # precedence still comes before list order
    assert winner(table, request("/p/q")) == "default/r:longer"


def test_precedence_spans_every_rule_of_every_route() -> None:
    table = _table(
        route(
            "old",
            "parentRefs: [{name: gw}]\nrules:\n- {name: root}\n"
            "- {name: deep, matches: [{path: {value: /a/b/c}}]}",
            created=OLD,
        ),
        route(
            "new",
            "parentRefs: [{name: gw}]\nrules:\n- {name: mid, matches: [{path: {value: /a/b}}]}",
            created=NEW,
        ),
    )
    assert winner(table, request("/a/b/c/d")) == "default/old:deep"
    assert winner(table, request("/a/b/x")) == "default/new:mid"
    assert winner(table, request("/a/x")) == "default/old:root"


def test_matched_entry_describes_the_match() -> None:
    table = _table(
        simple_route(
            "r",
            "{path: {value: /v1/}, method: POST, headers: [{name: X-A, value: '1'}], "
            "queryParams: [{name: Q, type: RegularExpression, value: 'a+'}]}",
        )
    )
    entry = match(table, request("/v1/x", method="POST", headers={"x-a": "1"}, query={"Q": "aa"}))
    assert (entry.path_kind, entry.path, entry.method) == (m.PathKind.PREFIX, "/v1", "POST")
    assert [(h.name, h.exact, h.regex) for h in entry.headers] == [("x-a", "1", None)]
    (query,) = entry.query
    assert (query.name, query.exact) == ("Q", None)
    assert query.regex is not None
    assert query.regex.pattern == "a+"


# Route hostnames inside one listener. "precedence must be given to rules from the HTTPRoute
# with the largest number of: Characters in a matching non-wildcard hostname. Characters in a
# matching hostname."
VHOSTS = (
    simple_route("exact", "{path: {value: /}}", hostnames="[foo.example.com]")
    + simple_route("wild", "{path: {value: /}}", hostnames="['*.example.com']")
    + simple_route("deep", "{path: {value: /}}", hostnames="['*.foo.example.com']")
    + simple_route("any", "{path: {value: /}}")
)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("foo.example.com", "exact"),
        ("bar.example.com", "wild"),
        ("a.foo.example.com", "deep"),
        ("example.com", "any"),
        ("other.org", "any"),
    ],
    ids=["exact", "wildcard", "longer-wildcard", "wildcard-not-parent", "no-hostname"],
)
def test_most_specific_route_hostname_wins(host: str, expected: str) -> None:
    assert winner(_table(VHOSTS), request(host=host)) == f"default/{expected}:r0"


def test_route_hostnames_are_case_insensitive() -> None:
    table = _table(simple_route("r", "{path: {value: /}}", hostnames="[API.Example.COM]"))
    assert _matches(table, request(host="api.example.com"))


def test_unknown_host_without_catch_all_route_is_404() -> None:
    table = _table(simple_route("r", "{path: {value: /}}", hostnames="[a.example.com]"))
    with pytest.raises(NoRouteMatchedError, match="no route matches GET /x"):
        winner(table, request("/x", host="b.example.com"))
