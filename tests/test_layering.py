"""The layering rule of record (STYLE.md §A): ``routing/`` is pure.

Every ``routing/**/*.py`` is parsed, never imported, and its imports are checked against the
modules that mean I/O, a clock, an event loop or the gateway layer. ``routing/`` may use the
standard library's pure modules and itself, nothing else. It also carries no ``type: ignore``
(STYLE.md §G).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROUTING = ROOT / "routing"
SOURCES = sorted(ROUTING.rglob("*.py"))

FORBIDDEN = frozenset(
    {
        "gateway",
        "aiohttp",
        "asyncio",
        "yaml",
        "prometheus_client",
        "time",
        "uvloop",
        "socket",
        "os",
        # A dynamic import would get around every rule above.
        "importlib",
    }
)
_TYPE_IGNORE = re.compile(r"type:\s*ignore")


def forbidden_imports(source: str) -> list[str]:
    """``line: module`` for each forbidden import in ``source`` (relative imports are routing)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            modules = ["__import__"]
        else:
            continue
        found.extend(
            f"{node.lineno}: {name}"
            for name in modules
            if name == "__import__" or name.split(".")[0] in FORBIDDEN
        )
    return found


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def test_routing_sources_are_found() -> None:
    assert ROUTING / "__init__.py" in SOURCES
    assert len(SOURCES) >= 10


@pytest.mark.parametrize("path", SOURCES, ids=_ids(SOURCES))
def test_routing_module_imports_nothing_impure(path: Path) -> None:
    assert forbidden_imports(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", SOURCES, ids=_ids(SOURCES))
def test_routing_module_has_no_type_ignore(path: Path) -> None:
    assert list(_type_ignores(path.read_text(encoding="utf-8"))) == []


# The checker itself: a layering test that sees nothing is worse than none.
_CHECKER_CASES = [
    ("import os", ["1: os"]),
    ("import os.path", ["1: os.path"]),
    ("import time as t", ["1: time"]),
    ("from time import monotonic", ["1: time"]),
    ("import json, asyncio", ["1: asyncio"]),
    ("from gateway.app import build_app", ["1: gateway.app"]),
    ("def f():\n    import yaml\n", ["2: yaml"]),
    ("try:\n    import uvloop\nexcept ImportError:\n    pass\n", ["2: uvloop"]),
    ("from aiohttp import web", ["1: aiohttp"]),
    ("import prometheus_client", ["1: prometheus_client"]),
    ("import socket", ["1: socket"]),
    ("import importlib\nimportlib.import_module('os')", ["1: importlib"]),
    ("m = __import__('os')", ["1: __import__"]),
    ("import re, bisect, random", []),
    ("from routing import model as m", []),
    ("from . import model", []),
    ("from .time import x", []),
    ("import timeit", []),
    ("import osx", []),
]


@pytest.mark.parametrize(
    ("source", "expected"), _CHECKER_CASES, ids=[source for source, _ in _CHECKER_CASES]
)
def test_checker_finds_forbidden_imports(source: str, expected: list[str]) -> None:
    assert forbidden_imports(source) == expected


def _type_ignores(text: str) -> Iterator[int]:
    return (n for n, line in enumerate(text.splitlines(), 1) if _TYPE_IGNORE.search(line))


@pytest.mark.parametrize(
    ("source", "hits"),
    [
        ("x = 1  # type: ignore\n", [1]),
        ("x = 1  # type: ignore[assignment]\n", [1]),
        ("x = 1\ny = 2  # type:ignore\n", [2]),
        ("x: int = 1  # type: int\n", []),
    ],
    ids=["bare", "with-code", "no-space", "type-comment"],
)
def test_type_ignore_pattern(source: str, hits: list[int]) -> None:
    assert list(_type_ignores(source)) == hits
