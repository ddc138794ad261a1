"""A typed reader over one YAML document that collects every problem instead of stopping.

``config.py`` walks each resource with a ``Reader``: each ``get_*`` call checks one field's type,
records an issue with the full field path when it is wrong, and remembers which keys it consumed
so the unknown ones can be reported at the end. No exception leaves a reader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from routing.durations import parse_duration
from routing.errors import ConfigIssue

T = TypeVar("T")


@dataclass(slots=True)
class IssueSink:
    """Where issues of one document go."""

    file: str
    document: int
    issues: list[ConfigIssue] = field(default_factory=list)

    def error(self, path: str, message: str) -> None:
        self.issues.append(
            ConfigIssue(file=self.file, document=self.document, path=path, message=message)
        )

    def warn(self, path: str, message: str) -> None:
        self.issues.append(
            ConfigIssue(
                file=self.file,
                document=self.document,
                path=path,
                message=message,
                severity="warning",
            )
        )


class Reader:
    """Reads fields of one mapping at ``path``; unknown keys are reported by ``finish``."""

    __slots__ = ("_data", "_seen", "path", "sink")

    def __init__(self, data: object, path: str, sink: IssueSink) -> None:
        self.path = path
        self.sink = sink
        self._seen: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            sink.error(path, f"expected a mapping, got {type(data).__name__}")
            data = {}
        self._data: Mapping[object, object] = data

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self._data and self._data[key] is not None

    def raw(self, key: str) -> object:
        self._seen.add(key)
        return self._data.get(key)

    def _typed(self, key: str, kind: type[T], label: str) -> T | None:
        value = self.raw(key)
        if value is None:
            return None
        # bool is an int in Python; a YAML `true` is not a port number
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        self.sink.error(self.sub(key), f"expected {label}, got {type(value).__name__}")
        return None

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self._typed(key, str, "a string")
        if value is None and required:
            if not self.has(key):
                self.sink.error(self.sub(key), "required field is missing")
            return default
        return default if value is None else value

    def duration(
        self, key: str, default: T, *, required: bool = False, positive: bool = False
    ) -> float | T:
        """A duration field ("250ms", "1m30s") in seconds; ``default`` when it is absent or
        invalid (reported), or, with ``positive``, not longer than 0s."""
        text = self.string(key, required=required)
        if text is None:
            return default
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            self.sink.error(self.sub(key), str(exc))
            return default
        if positive and seconds <= 0:
            self.sink.error(self.sub(key), "must be longer than 0s")
            return default
        return seconds

    def req_str(self, key: str) -> str:
        return self.string(key, required=True) or ""

    def number(
        self, key: str, default: int | None = None, *, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        value = self._typed(key, int, "an integer")
        if value is None:
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.sink.error(self.sub(key), f"{value} is outside [{lo}, {hi}]")
            return default
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._typed(key, bool, "true or false")
        return default if value is None else value

    def mapping(self, key: str) -> Reader:
        return Reader(self.raw(key), self.sub(key), self.sink)

    def opt_mapping(self, key: str) -> Reader | None:
        if not self.has(key):
            self.raw(key)
            return None
        return self.mapping(key)

    def items(self, key: str) -> list[tuple[str, object]]:
        """The elements of a list field with their paths; a non-list is reported."""
        value = self.raw(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.sink.error(self.sub(key), f"expected a list, got {type(value).__name__}")
            return []
        return [(f"{self.sub(key)}[{i}]", item) for i, item in enumerate(value)]

    def list_of(self, key: str, parse: Callable[[Reader], T]) -> tuple[T, ...]:
        out = []
        for path, item in self.items(key):
            reader = Reader(item, path, self.sink)
            out.append(parse(reader))
            reader.finish()
        return tuple(out)

    def str_list(self, key: str) -> tuple[str, ...]:
        out = []
        for path, item in self.items(key):
            if isinstance(item, str):
                out.append(item)
            else:
                self.sink.error(path, f"expected a string, got {type(item).__name__}")
        return tuple(out)

    def str_map(self, key: str) -> tuple[tuple[str, str], ...]:
        value = self.raw(key)
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            self.sink.error(self.sub(key), "expected a mapping of strings")
            return ()
        out = []
        for k, v in value.items():
            if isinstance(k, str) and isinstance(v, str | int | float | bool):
                out.append((k, v if isinstance(v, str) else str(v)))
            else:
                self.sink.error(f"{self.sub(key)}.{k}", "expected a string value")
        return tuple(out)

    def ignore(self, *keys: str) -> None:
        """Mark keys as known but unused (Kubernetes fields Sluice has no use for)."""
        self._seen.update(keys)

    def finish(self) -> None:
        for key in self._data:
            if key not in self._seen:
                self.sink.error(f"{self.sub(str(key))}", "unknown field")
