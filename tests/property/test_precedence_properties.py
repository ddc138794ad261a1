"""Match precedence, with the spec text as the oracle (HTTPRouteRule.matches):

"precedence must be given to the match having: "Exact" path match. "Prefix" path match with
largest number of characters. Method match. Largest number of header matches. Largest number of
query param matches." ... "If ties still exist across multiple Routes ... The oldest Route based
on creation timestamp."

Routes are built as model objects (no YAML) so many examples fit in the time budget.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routing import RequestFacts, RoutingTable, build_table, match_request
from routing import model as m

GATEWAY = m.Gateway(
    meta=m.Meta(name="gw", namespace="default"),
    class_name="sluice",
    listeners=(m.Listener(name="http", port=80, protocol="HTTP"),),
)

segments = st.text(alphabet="abz09-_~", min_size=1, max_size=4)
paths = st.lists(segments, min_size=1, max_size=6)


def _route(name: str, match: m.RouteMatch, creation: str) -> m.HTTPRoute:
    return m.HTTPRoute(
        meta=m.Meta(name=name, namespace="default", creation=creation),
        parent_refs=(m.ParentRef(name="gw"),),
        hostnames=(),
        rules=(m.RouteRule(name="rule", matches=(match,)),),
    )


def _table(routes: list[m.HTTPRoute]) -> RoutingTable:
    return build_table(m.Config(gateways=(GATEWAY,), routes=tuple(routes)))


def _request(path: str, headers: dict[str, str] | None = None) -> RequestFacts:
    return RequestFacts(method="GET", path=path, query={}, headers=headers or {}, host="h")


def _winner(table: RoutingTable, req: RequestFacts) -> str:
    return match_request(table, 80, req).rule.route.removeprefix("default/")


def _join(segs: list[str]) -> str:
    return "/" + "/".join(segs)


def _prefix(path: str) -> m.RouteMatch:
    return m.RouteMatch(path=m.PathMatch(kind=m.PathKind.PREFIX, value=path))


@given(
    segs=paths,
    depth=st.integers(0, 6),
    trailing_slash=st.booleans(),
    exact_is_older=st.booleans(),
    exact_sorts_first=st.booleans(),
)
def test_exact_beats_prefix(
    segs: list[str], depth: int, trailing_slash: bool, exact_is_older: bool, exact_sorts_first: bool
) -> None:
    path = _join(segs)
    prefix = _join(segs[: min(depth, len(segs))])
    if trailing_slash and prefix != "/":
        prefix += "/"
    exact_name, prefix_name = ("a", "b") if exact_sorts_first else ("b", "a")
    old, new = "2020", "2021"
    table = _table(
        [
            _route(prefix_name, _prefix(prefix), new if exact_is_older else old),
            _route(
                exact_name,
                m.RouteMatch(path=m.PathMatch(kind=m.PathKind.EXACT, value=path)),
                old if exact_is_older else new,
            ),
        ]
    )
    assert _winner(table, _request(path)) == exact_name


@given(
    segs=paths,
    depths=st.sets(st.integers(0, 6), min_size=1, max_size=5),
    tail=st.sampled_from(["", "/", "/more"]),
    ages=st.permutations(range(14)),
    decoys=st.booleans(),
)
def test_longest_matching_prefix_wins(
    segs: list[str], depths: set[int], tail: str, ages: list[int], decoys: bool
) -> None:
    depths = {min(d, len(segs)) for d in depths}
    routes = [_route(f"p{d}", _prefix(_join(segs[:d])), f"{ages[d]:02d}") for d in depths]
    if decoys:
        # longer in characters, but not element-wise prefixes of the request path
        routes += [
            _route(
                f"x{d}", _prefix(_join([*segs[: d - 1], segs[d - 1] + "z"])), f"{ages[6 + d]:02d}"
            )
            for d in depths
            if d > 0
        ]
    assert _winner(_table(routes), _request(_join(segs) + tail)) == f"p{max(depths)}"


names = st.sets(st.sampled_from("abcdefghij"), max_size=5)


def _header_routes(header_sets: list[set[str]], ages: list[int]) -> list[m.HTTPRoute]:
    """Route r<i> matches "/" and every header name of ``header_sets[i]`` (value "v")."""
    return [
        _route(
            f"r{i}",
            m.RouteMatch(headers=tuple(m.HeaderMatch(name=h, value="v") for h in sorted(hs))),
            f"{ages[i]:02d}",
        )
        for i, hs in enumerate(header_sets)
    ]


@given(
    others=st.lists(names, min_size=1, max_size=4),
    mine=names,
    extra=st.sets(st.sampled_from("klmnop"), min_size=1, max_size=3),
    ages=st.permutations(range(5)),
)
def test_extra_header_matches_never_lower_a_rules_rank(
    others: list[set[str]], mine: set[str], extra: set[str], ages: list[int]
) -> None:
    def rank(my_headers: set[str]) -> int:
        table = _table(_header_routes([my_headers, *others], ages))
        vhost = table.ports[80].listeners[0].any_host
        assert vhost is not None
        return [e.rule.route for e in vhost.entries].index("default/r0")

    assert rank(mine | extra) <= rank(mine)


@given(header_sets=st.lists(names, min_size=1, max_size=5), ages=st.permutations(range(5)))
def test_most_header_matches_then_oldest_route_wins(
    header_sets: list[set[str]], ages: list[int]
) -> None:
    table = _table(_header_routes(header_sets, ages))
    counts = [len(hs) for hs in header_sets]
    most = [i for i, c in enumerate(counts) if c == max(counts)]
    expected = min(most, key=lambda i: ages[i])
    every_header = {h: "v" for h in "abcdefghij"}
    assert _winner(table, _request("/", every_header)) == f"r{expected}"
