"""GEP-2257 durations: the test vectors of geps/gep-2257/index.md, parsing and formatting."""

from __future__ import annotations

import pytest

from routing.durations import format_duration, parse_duration

# (input, seconds, canonical form), from the GEP's "Parsing" table
PARSING = [
    ("0h", 0.0, "0s"),
    ("0s", 0.0, "0s"),
    ("0h0m0s", 0.0, "0s"),
    ("1h", 3600.0, "1h"),
    ("30m", 1800.0, "30m"),
    ("10s", 10.0, "10s"),
    ("500ms", 0.5, "500ms"),
    ("2h30m", 9000.0, "2h30m"),
    ("150m", 9000.0, "2h30m"),
    ("7230s", 7230.0, "2h30s"),
    ("1h30m10s", 5410.0, "1h30m10s"),
    ("10s30m1h", 5410.0, "1h30m10s"),
    ("100ms200ms300ms", 0.6, "600ms"),
    ("01h", 3600.0, "1h"),
    ("00060m", 3600.0, "1h"),
    ("1h500ms", 3600.5, "1h500ms"),
    ("1h2h20m10m", 12600.0, "3h30m"),
    ("99999h", 359_996_400.0, "99999h"),
]


@pytest.mark.parametrize(("text", "seconds", "canonical"), PARSING, ids=[p[0] for p in PARSING])
def test_parse_and_format_gep_vectors(text: str, seconds: float, canonical: str) -> None:
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-9)
    assert format_duration(parse_duration(text)) == canonical


INVALID = [
    ("1", "missing unit"),
    ("1m1", "missing unit"),
    ("1d", "days are not supported"),
    ("1h30m10s20ms50h", "too many components"),
    ("999999h", "too many digits"),
    ("1.5h", "floating point is not supported"),
    ("-15m", "negative durations are not supported"),
    ("", "empty"),
    ("1H", "units are lower case"),
    (" 1s", "no blanks"),
    ("1s ", "no trailing blanks"),
    ("1us", "no microseconds"),
]


@pytest.mark.parametrize(("text", "why"), INVALID, ids=[w for _, w in INVALID])
def test_invalid_durations_are_refused_naming_the_form(text: str, why: str) -> None:
    with pytest.raises(ValueError, match="is not a Gateway API duration such as '500ms'"):
        parse_duration(text)


# (hours, minutes, seconds, milliseconds, canonical form), from the GEP's "Formatting" table
FORMATTING = [
    (0, 0, 0, 0, "0s"),
    (1, 0, 0, 0, "1h"),
    (0, 30, 0, 0, "30m"),
    (0, 0, 10, 0, "10s"),
    (0, 0, 0, 500, "500ms"),
    (2, 30, 0, 0, "2h30m"),
    (1, 30, 10, 0, "1h30m10s"),
    (1, 0, 0, 1, "1h1ms"),
]


@pytest.mark.parametrize(
    ("h", "mins", "s", "ms", "canonical"), FORMATTING, ids=[f[-1] for f in FORMATTING]
)
def test_format_gep_vectors(h: int, mins: int, s: int, ms: int, canonical: str) -> None:
    assert format_duration(h * 3600 + mins * 60 + s + ms / 1000) == canonical


@pytest.mark.parametrize(
    ("seconds", "canonical"),
    [(0.0004, "0s"), (0.0006, "1ms"), (1.9996, "2s")],
    ids=["rounds-down-to-zero", "rounds-up-to-a-millisecond", "carries-into-seconds"],
)
def test_format_rounds_to_milliseconds(seconds: float, canonical: str) -> None:
    assert format_duration(seconds) == canonical


@pytest.mark.parametrize(("text", "ms"), [("9ms", 9), ("13ms", 13), ("26ms", 26)])
def test_milliseconds_parse_exactly(text: str, ms: int) -> None:
    # GEP-2257: "MUST be interpreted as specified by Golang's time.ParseDuration", which counts
    # whole nanoseconds: 9ms is exactly the float nearest 9 / 1000 seconds.
    assert parse_duration(text) == ms / 1000
