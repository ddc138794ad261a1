"""Hostname intersection, with the spec text as the oracle.

Listener.hostname / HTTPRoute.hostnames: a route attaches when the two "intersect", and then only
hosts both admit are served; "Hostnames that are prefixed with a wildcard label (*.) are
interpreted as a suffix match ... *.example.com would match both test.example.com, and
foo.test.example.com, but not example.com". So the hosts an intersection admits are exactly the
hosts both sides admit — whichever side is the listener.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routing.hostnames import hostname_matches, intersect_hostnames

labels = st.sampled_from(["a", "b", "c"])
hosts = st.lists(labels, min_size=1, max_size=4).map(".".join)
patterns = st.builds(lambda wild, host: f"*.{host}" if wild else host, st.booleans(), hosts)


def _admits(effective: tuple[str, ...] | None, host: str) -> bool:
    if effective is None:  # not attached: nothing is served
        return False
    if not effective:  # attached for any host
        return True
    return any(hostname_matches(p, host) for p in effective)


@given(a=patterns, b=patterns, host=hosts)
def test_intersection_admits_what_both_admit_whichever_is_the_listener(
    a: str, b: str, host: str
) -> None:
    both = hostname_matches(a, host) and hostname_matches(b, host)
    assert _admits(intersect_hostnames(a, (b,)), host) is both
    assert _admits(intersect_hostnames(b, (a,)), host) is both


@given(a=patterns, b=patterns)
def test_attachment_is_symmetric(a: str, b: str) -> None:
    assert (intersect_hostnames(a, (b,)) is None) is (intersect_hostnames(b, (a,)) is None)


@given(route=st.lists(patterns, max_size=3), host=hosts)
def test_a_listener_without_hostname_admits_what_the_route_admits(
    route: list[str], host: str
) -> None:
    expected = not route or any(hostname_matches(p, host) for p in route)
    assert _admits(intersect_hostnames(None, tuple(route)), host) is expected


@given(listener=patterns, route=st.lists(patterns, max_size=3), host=hosts)
def test_many_route_hostnames_admit_the_union_within_the_listener(
    listener: str, route: list[str], host: str
) -> None:
    within = hostname_matches(listener, host) and (
        not route or any(hostname_matches(p, host) for p in route)
    )
    assert _admits(intersect_hostnames(listener, tuple(route)), host) is within
