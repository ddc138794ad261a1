"""Gateway API durations (GEP-2257).

Form: ``^([0-9]{1,5}(h|m|s|ms)){1,4}$``, e.g. ``1h30m``, ``500ms``.
"""

from __future__ import annotations

import re

_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_WHOLE = re.compile(r"^(?:[0-9]{1,5}(?:h|ms|m|s)){1,4}$")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ``ValueError`` naming the accepted form."""
    if not _WHOLE.match(text):
        raise ValueError(
            f"{text!r} is not a Gateway API duration such as '500ms', '10s' or '1m30s'"
        )
    # whole milliseconds first, one division last: "9ms" is exactly 0.009
    return sum(int(n) * _UNIT_MS[unit] for n, unit in _PART.findall(text)) / 1000


def format_duration(seconds: float) -> str:
    """The shortest Gateway API spelling of ``seconds`` (millisecond precision)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
