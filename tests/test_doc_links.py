"""Every relative link in README.md and CHANGELOG.md names a file that is in the repository
(a report or example that exists only in one working tree is a broken promise in a clone)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
DOCS = ("README.md", "CHANGELOG.md")


def _tracked() -> set[str] | None:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an sdist): existence is checked below anyway
    return set(out.stdout.splitlines())


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_point_at_files_in_the_repository(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    targets = {t for t in LINK.findall(text) if "://" not in t and not t.startswith("mailto:")}
    if doc == "README.md":
        assert targets, "README links nothing: the pattern is broken"
    tracked = _tracked()
    missing = []
    for target in sorted(targets):
        path = (ROOT / target).resolve()
        if not path.exists():
            missing.append(f"{target} (no such file)")
        elif tracked is not None and path.is_file() and str(path.relative_to(ROOT)) not in tracked:
            missing.append(f"{target} (not committed)")
    assert not missing, f"{doc}: {missing}"
