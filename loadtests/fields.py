"""Typed reading of one mapping of a load-test scenario file, shared by the scenario parsers
(loadtests/scenario.py, closedloop/scenario.py, rolloutrun/spec.py): every problem is appended
to a shared list of issues (``path: message``) and the default is used, so a file's problems
are all reported at once."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Set
from typing import Any

__all__ = ["Fields"]


class Fields:
    """Typed access to one mapping; every problem is appended to the shared ``issues``."""

    def __init__(self, raw: object, path: str, issues: list[str], allowed: Set[str]) -> None:
        self.path, self.issues = path, issues
        if not isinstance(raw, Mapping):
            issues.append(f"{path or '<root>'}: must be a mapping")
            raw = {}
        self.raw: Mapping[str, Any] = raw
        issues.extend(f"{self.sub(str(k))}: unknown key" for k in raw if k not in allowed)

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, want: type, default: Any) -> Any:
        value = self.raw.get(key)
        if value is None:
            return default
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
            self.issues.append(f"{self.sub(key)}: must be {want.__name__}")
            return default
        return value

    def positive(self, key: str, want: type, default: Any, *, zero_ok: bool = False) -> Any:
        value = self.get(key, want, default)
        if value < 0 or (value == 0 and not zero_ok):
            self.issues.append(f"{self.sub(key)}: must be {'>= 0' if zero_ok else '> 0'}")
            return default
        return value

    def number(self, key: str, want: type, default: Any, *, lo: float, hi: float | None) -> Any:
        value = self.get(key, want, default)
        if value < lo or (hi is not None and value > hi):
            self.issues.append(f"{self.sub(key)}: must lie in [{lo:g}, {hi if hi else 'inf'}]")
            return default
        return value

    def choice(self, key: str, enum_type: type[enum.StrEnum], default: enum.StrEnum) -> Any:
        value = self.get(key, str, str(default))
        if value not in set(enum_type):
            self.issues.append(f"{self.sub(key)}: one of {', '.join(enum_type)}")
            return default
        return enum_type(value)
