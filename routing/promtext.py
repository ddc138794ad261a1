"""Read the few series a preset needs out of a Prometheus text exposition, cheaply.

A model server's /metrics is tens of kilobytes; the picker needs four or five numbers. This
finds each wanted metric's first sample line with ``bytes.find`` and parses only its group of
lines (the format keeps a metric's samples together), instead of parsing every sample or
scanning the page to its end once per metric. Pure: bytes in, values out.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Sample", "Selector", "find_samples", "parse_labels"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Selector:
    """A metric name and optional exact label values, like a PromQL instant selector."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    labels: tuple[tuple[str, str], ...]
    value: float


def find_samples(text: bytes, selector: Selector, *, keep_labels: bool = True) -> list[Sample]:
    """Every sample of ``selector.name`` whose labels include ``selector.labels``. With
    ``keep_labels=False`` and no label filter, labels are not parsed (returned empty)."""
    name = selector.name.encode()
    anchored = b"\n" + name  # a sample line, not a mention inside # HELP or # TYPE
    parse = keep_labels or bool(selector.labels)
    out: list[Sample] = []
    at = 0 if text.startswith(name) else text.find(anchored)
    if at < 0:
        return out
    # The exposition format keeps a metric's samples together in one group: read the lines
    # from the first sample on while they are this metric's, then stop (no scan to the end).
    start = at + len(anchored) if text[at] == 0x0A else len(name)
    while True:
        end = text.find(b"\n", start)
        line = text[start : end if end >= 0 else len(text)]
        sample = _parse_rest(line, parse)
        if sample is None:
            return out  # a longer name sharing this prefix: past the group
        if _has_labels(sample.labels, selector.labels):
            out.append(sample)
        if end < 0 or not text.startswith(name, end + 1):
            return out
        start = end + 1 + len(name)


def _parse_rest(rest: bytes, parse_labels_too: bool = True) -> Sample | None:
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
