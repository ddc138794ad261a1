"""Every YAML file under config/ parses; the quickstart demo serves a request end to end."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.configload import load_config

ROOT = Path(__file__).resolve().parents[2]
RESOURCE_FILES = sorted(
    p
    for p in (ROOT / "config").rglob("*.yaml")
    if any(isinstance(d, dict) and "apiVersion" in d for d in yaml.safe_load_all(p.read_text()))
)


@pytest.mark.single_loop
@pytest.mark.parametrize("path", RESOURCE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_example_is_valid(path):
    loaded = load_config([str(path)])
    assert not [w for w in loaded.warnings if w.severity == "error"]


@pytest.mark.single_loop
async def test_demo_serves_a_chat_completion_end_to_end():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "demo", "--admin", "127.0.0.1:0",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=10) as client, asyncio.timeout(30):
            while True:
                try:
                    resp = await client.post(
                        "http://127.0.0.1:8080/v1/chat/completions",
                        json={
                            "model": "meta-llama/Llama-3.1-8B-Instruct",
                            "messages": [{"role": "user", "content": "Hello!"}],
                            "max_tokens": 8,
                        },
                    )
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        assert resp.status_code == 200
        assert resp.json()["usage"]["completion_tokens"] > 0
    finally:
        proc.terminate()
        async with asyncio.timeout(15):
            out, _ = await proc.communicate()
    assert b"curl" in out
