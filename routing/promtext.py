"""Read the few series a preset needs out of a Prometheus text exposition, cheaply.

A model server's /metrics is tens of kilobytes; the picker needs four or five numbers. This
finds each wanted metric's first sample line with ``bytes.find`` and parses only its group of
lines (the format keeps a metric's samples together), instead of parsing every sample or
scanning the page to its end once per metric. Pure: bytes in, values out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "Sample",
    "Selector",
    "find_rests",
    "find_samples",
    "find_values",
    "parse_labels",
    "parse_rest",
    "rest_value",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Selector:
    """A metric name and optional exact label values, like a PromQL instant selector."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    labels: tuple[tuple[str, str], ...]
    value: float


def find_samples(
    text: bytes, selector: Selector, *, keep_labels: bool = True, at: int = 0
) -> list[Sample]:
    """Every sample of ``selector.name`` whose labels include ``selector.labels``. With
    ``keep_labels=False`` and no label filter, labels are not parsed (returned empty).
    ``at``: where the page starts in ``text`` (after an HTTP head: no copy needed)."""
    parse = keep_labels or bool(selector.labels)
    out: list[Sample] = []
    for rest in _group(text, selector.name.encode(), at):
        sample = parse_rest(rest, parse)
        if sample is None:
            break  # a longer name sharing this prefix: past the group
        if _has_labels(sample.labels, selector.labels):
            out.append(sample)
    return out


def find_values(text: bytes, name: bytes, at: int = 0) -> list[float]:
    """The value of every sample of metric ``name`` (no label filter, labels not parsed):
    the fast path for the gauges read on every scrape (``_group`` inlined, no generator, the
    value read where it lies: no copy of the line or its labels)."""
    size = len(name)
    if text.startswith(name, at):
        start = at + size
    else:
        found = text.find(b"\n" + name, at)
        if found < 0:
            return []
        start = found + 1 + size
    out: list[float] = []
    while True:
        end = text.find(b"\n", start)
        if end < 0:
            end = len(text)
        first = text[start : start + 1]
        if first == b"{":
            value_at = text.rfind(b"}", start, end) + 1
            if value_at == 0:
                return out  # labels never closed: not a sample line
        elif first == b" ":
            value_at = start
        else:
            return out  # a longer name sharing this prefix: past the group
        try:
            out.append(float(text[value_at:end]))  # float() ignores surrounding whitespace
        except ValueError:  # a timestamp after the value, or no value
            try:
                out.append(float(text[value_at:end].split(None, 1)[0]))
            except (ValueError, IndexError):
                return out
        if end >= len(text) or not text.startswith(name, end + 1):
            return out
        start = end + 1 + size


def find_rests(text: bytes, name: bytes, at: int = 0) -> list[bytes]:
    """What follows ``name`` on each of its sample lines (``{labels} value``), unparsed:
    for a caller that parses the labels of only one of them (``parse_rest``)."""
    out = []
    for rest in _group(text, name, at):
        if rest[:1] != b"{" and rest[:1] != b" ":
            break  # a longer name sharing this prefix: past the group
        out.append(rest)
    return out


def rest_value(rest: bytes) -> float | None:
    """The value in what follows a metric name (``{labels} value [timestamp]``), or None
    when it is not a sample of that metric."""
    if rest[:1] == b"{":
        rest = rest[rest.rfind(b"}") + 1 :]
    elif rest[:1] != b" ":
        return None
    try:
        return float(rest.split(None, 1)[0])
    except (ValueError, IndexError):
        return None


def _group(text: bytes, name: bytes, at: int) -> Iterator[bytes]:
    """What follows ``name`` on each line of its group: from its first sample line on, while
    lines start with ``name``. The exposition format keeps a metric's samples together, so
    the search stops there (no scan to the end of the page); ``# HELP``/``# TYPE`` lines
    are not sample lines (the name must start a line)."""
    if text.startswith(name, at):
        start = at + len(name)
    else:
        found = text.find(b"\n" + name, at)
        if found < 0:
            return
        start = found + 1 + len(name)
    size = len(name)
    while True:
        end = text.find(b"\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start:end]
        if not text.startswith(name, end + 1):
            return
        start = end + 1 + size


def parse_rest(rest: bytes, parse_labels_too: bool = True) -> Sample | None:
    """Parse what follows the metric name: ``{labels} value [timestamp]`` or `` value``."""
    labels: tuple[tuple[str, str], ...] = ()
    if rest.startswith(b"{"):
        close = rest.rfind(b"}")
        if close < 0:
            return None
        if parse_labels_too:
            labels = parse_labels(rest[1:close].decode("utf-8", "replace"))
        rest = rest[close + 1 :]
    elif not rest.startswith(b" "):
        return None  # a longer metric name sharing this prefix
    fields = rest.split()
    if not fields:
        return None
    try:
        return Sample(labels=labels, value=float(fields[0]))
    except ValueError:
        return None


_ESCAPES = {"n": "\n", "\\": "\\", '"': '"'}


def parse_labels(text: str) -> tuple[tuple[str, str], ...]:
    """``a="x",b="y"`` → (("a", "x"), ("b", "y")), honouring escaped quotes."""
    out = []
    i, n = 0, len(text)
    while i < n:
        eq = text.find("=", i)
        if eq < 0:
            break
        key = text[i:eq].strip().lstrip(",").strip()
        j = text.find('"', eq) + 1
        if j <= 0:
            break
        close = text.find('"', j)
        while close > 0 and _escaped(text, close):
            close = text.find('"', close + 1)
        if close < 0:
            close = n
        value = text[j:close]
        if "\\" in value:
            value = _unescape(value)
        out.append((key, value))
        i = close + 1
    return tuple(out)


def _escaped(text: str, at: int) -> bool:
    """Whether the character at ``at`` follows an odd number of backslashes."""
    count = 0
    while at - count - 1 >= 0 and text[at - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def _unescape(value: str) -> str:
    chars = []
    k = 0
    while k < len(value):
        if value[k] == "\\" and k + 1 < len(value):
            k += 1
            chars.append(_ESCAPES.get(value[k], value[k]))
        else:
            chars.append(value[k])
        k += 1
    return "".join(chars)


def _has_labels(have: tuple[tuple[str, str], ...], want: tuple[tuple[str, str], ...]) -> bool:
    return all(pair in have for pair in want)
