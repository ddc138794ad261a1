"""Path rewrites (HTTPPathModifier), with the spec text as the oracle.

replacePrefixMatch: "a request to /foo/bar with a prefix match of /foo and a ReplacePrefixMatch
of /xyz would be modified to /xyz/bar ... This matches full path elements ... a trailing / is
ignored." The result is a path: it starts with "/".
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from routing import model as m
from routing.rewrite import rewrite_path

segments = st.text(alphabet="abz09-_.~%", min_size=1, max_size=4).filter(
    lambda s: s not in (".", "..")
)
paths = st.lists(segments, min_size=0, max_size=6)
replacements = st.text(alphabet="/ab", max_size=8)


def _elements(path: str) -> list[str]:
    return [e for e in path.split("/") if e]


def _join(segs: list[str]) -> str:
    return "/" + "/".join(segs)


@given(
    segs=paths,
    depth=st.integers(0, 6),
    prefix_slash=st.booleans(),
    path_slash=st.booleans(),
    replacement=replacements,
)
def test_replace_prefix_match_replaces_whole_elements(
    segs: list[str], depth: int, prefix_slash: bool, path_slash: bool, replacement: str
) -> None:
    depth = min(depth, len(segs))
    prefix = _join(segs[:depth]) + ("/" if prefix_slash and depth else "")
    path = _join(segs) + ("/" if path_slash and segs else "")
    modifier = m.PathModifier(kind=m.PathModifierKind.PREFIX, value=replacement)
    out = rewrite_path(modifier, prefix, path)
    assert out.startswith("/")
    assert _elements(out) == _elements(replacement) + segs[depth:]
    if path.endswith("/") and out != "/":
        assert out.endswith("/")


@given(
    value=st.text(alphabet="/ab", min_size=1, max_size=8).map(lambda s: "/" + s),
    path=st.text(max_size=20),
)
def test_replace_full_path_is_the_value(value: str, path: str) -> None:
    modifier = m.PathModifier(kind=m.PathModifierKind.FULL, value=value)
    assert rewrite_path(modifier, None, path) == value
    assert rewrite_path(modifier, "/any", path) == value


@given(
    kind=st.sampled_from(m.PathModifierKind),
    value=st.text(max_size=8),
    prefix=st.none() | st.just("/foo"),
)
@example(kind=m.PathModifierKind.FULL, value="abc", prefix=None)
def test_rewrite_output_always_starts_with_a_slash(
    kind: m.PathModifierKind, value: str, prefix: str | None
) -> None:
    # replaceFullPath has no pattern in the CRD (maxLength only), so "abc" is a valid value;
    # the rewritten request must still carry a path.
    assert rewrite_path(m.PathModifier(kind=kind, value=value), prefix, "/foo/bar").startswith("/")
