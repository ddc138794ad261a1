"""GEP-2257 durations, with the GEP as the oracle.

"MUST match the regular expression ^([0-9]{1,5}(h|m|s|ms)){1,4}$"; "The total duration ... is
the sum of each of its components"; "Implementations formatting GEP-2257 Durations MUST render
them using this standard form" (descending, non-repeating units, largest unit possible; zero is
"0s").
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from routing.durations import format_duration, parse_duration

GEP_FORM = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
ORDER = ["h", "m", "s", "ms"]

# up to 99999h59m59s999ms: the largest span the standard form can spell
millis = st.integers(0, 99_999 * 3_600_000 + 3_599_999)


@given(ms=millis)
def test_format_is_the_standard_form(ms: int) -> None:
    text = format_duration(ms / 1000)
    assert GEP_FORM.match(text)
    parts = re.findall(r"([0-9]+)(ms|h|m|s)", text)
    units = [u for _, u in parts]
    assert units == sorted(units, key=ORDER.index)  # descending, no unit twice
    assert sum(int(n) * UNIT_MS[u] for n, u in parts) == ms
    if ms:
        assert all(int(n) > 0 for n, _ in parts)
        # largest unit possible: no component could carry into the next larger unit
        assert all(
            int(n) * UNIT_MS[u] < UNIT_MS[ORDER[ORDER.index(u) - 1]] for n, u in parts if u != "h"
        )
    else:
        assert text == "0s"


@given(ms=millis)
def test_parse_format_round_trip_to_the_millisecond(ms: int) -> None:
    text = format_duration(ms / 1000)
    assert round(parse_duration(text) * 1000) == ms
    assert format_duration(parse_duration(text)) == text


@given(ms=millis)
@example(ms=9)
def test_parse_format_round_trip_is_exact(ms: int) -> None:
    assert parse_duration(format_duration(ms / 1000)) == ms / 1000


components = st.lists(
    st.tuples(st.integers(0, 99_999), st.sampled_from(ORDER)), min_size=1, max_size=4
)


@given(parts=components, leading_zeros=st.integers(0, 2))
def test_any_gep_duration_is_the_sum_of_its_components(
    parts: list[tuple[int, str]], leading_zeros: int
) -> None:
    text = "".join(f"{n:0{min(5, len(str(n)) + leading_zeros)}d}{u}" for n, u in parts)
    assert GEP_FORM.match(text)
    expected_ms = sum(n * UNIT_MS[u] for n, u in parts)
    assert parse_duration(text) == pytest.approx(expected_ms / 1000, rel=1e-12, abs=1e-12)


@given(text=st.text(alphabet="0123456789hms.-d ", max_size=12))
def test_parse_accepts_exactly_the_gep_form(text: str) -> None:
    if GEP_FORM.match(text):
        assert parse_duration(text) >= 0
    else:
        with pytest.raises(ValueError, match="not a Gateway API duration"):
            parse_duration(text)
