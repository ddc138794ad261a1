"""Read the few series a preset needs out of a Prometheus text exposition, cheaply.

A model server's /metrics is tens of kilobytes; the picker needs four or five numbers. This
finds each wanted metric name with ``bytes.find`` and parses only those lines, instead of
parsing every sample. Pure: bytes in, values out.
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


def find_samples(text: bytes, selector: Selector) -> list[Sample]:
    """Every sample of ``selector.name`` whose labels include ``selector.labels``."""
    name = selector.name.encode()
    out: list[Sample] = []
    start = 0
    while True:
        at = text.find(name, start)
        if at < 0:
            return out
        start = at + len(name)
        if at > 0 and text[at - 1] != 0x0A:  # not at a line start (e.g. inside # HELP)
            continue
        end = text.find(b"\n", start)
        line = text[start : end if end >= 0 else len(text)]
        sample = _parse_rest(line)
        if sample is not None and _has_labels(sample.labels, selector.labels):
            out.append(sample)


def _parse_rest(rest: bytes) -> Sample | None:
    """Parse what follows the metric name: ``{labels} value [timestamp]`` or `` value``."""
    labels: tuple[tuple[str, str], ...] = ()
    if rest.startswith(b"{"):
        close = rest.rfind(b"}")
        if close < 0:
            return None
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
        chars = []
        while j < n and text[j] != '"':
            if text[j] == "\\" and j + 1 < n:
                j += 1
                chars.append({"n": "\n"}.get(text[j], text[j]))
            else:
                chars.append(text[j])
            j += 1
        out.append((key, "".join(chars)))
        i = j + 1
    return tuple(out)


def _has_labels(have: tuple[tuple[str, str], ...], want: tuple[tuple[str, str], ...]) -> bool:
    return all(pair in have for pair in want)
