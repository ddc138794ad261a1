"""Reload on real sockets: all-or-nothing swaps, in-flight requests keep their table."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import httpx
import pytest
from aiohttp import web

from tests.component.harness import (
    backend,
    free_port,
    gateway_on,
    gateway_yaml,
    service_yaml,
    simple_route,
)


def _named(name: str, gate: asyncio.Event | None = None):
    async def handler(request: web.Request) -> web.Response:
        if gate is not None:
            await gate.wait()
        return web.Response(text=name)

    return handler


def _config(port: int, *backends: int, svc: str = "svc") -> str:
    return gateway_yaml(port, simple_route(svc), service_yaml(svc, list(backends)))


async def test_valid_reload_swaps_and_invalid_one_keeps_the_running_config(tmp_path):
    port = free_port()
    async with (
        backend(_named("a")) as a,
        backend(_named("b")) as b,
        gateway_on(tmp_path, _config(port, a.port)) as gw,
        httpx.AsyncClient() as client,
    ):
        url = f"http://127.0.0.1:{port}/"
        assert (await client.get(url)).text == "a"
        (tmp_path / "config.yaml").write_text(_config(port, b.port))
        result = await gw.reloader.reload()
        assert result.ok
        assert result.generation == 2
        assert (await client.get(url)).text == "b"

        (tmp_path / "config.yaml").write_text("kind: Gateway\napiVersion: [broken\n")
        bad = await gw.reloader.reload()
        assert not bad.ok
        assert bad.generation == 2
        assert str(tmp_path / "config.yaml") in str(bad.issues[0])
        assert (await client.get(url)).text == "b"
        failures = gw.ctx.metrics.registry.get_sample_value("sluice_config_reload_failures_total")
        assert failures == 1


async def test_unknown_field_is_refused_with_its_path(tmp_path):
    port = free_port()
    async with backend(_named("a")) as a, gateway_on(tmp_path, _config(port, a.port)) as gw:
        text = _config(port, a.port).replace("  parentRefs:", "  parentRefz: []\n  parentRefs:")
        (tmp_path / "config.yaml").write_text(text)
        result = await gw.reloader.reload()
    assert not result.ok
    assert any(i.path == "spec.parentRefz" and i.message == "unknown field" for i in result.issues)


async def test_in_flight_request_finishes_on_the_table_it_started_with(tmp_path):
    gate = asyncio.Event()
    port = free_port()
    async with (
        backend(_named("old", gate)) as old,
        backend(_named("new")) as new,
        gateway_on(tmp_path, _config(port, old.port)) as gw,
        httpx.AsyncClient() as client,
    ):
        url = f"http://127.0.0.1:{port}/"
        slow = asyncio.create_task(client.get(url))
        async with asyncio.timeout(5):
            await old.arrived.wait()
        (tmp_path / "config.yaml").write_text(_config(port, new.port))
        assert (await gw.reloader.reload()).ok
        assert (await client.get(url)).text == "new"
        gate.set()
        async with asyncio.timeout(5):
            assert (await slow).text == "old"


async def test_a_changed_file_is_reloaded_by_the_watcher(tmp_path):
    from gateway.app import running_gateway

    port = free_port()
    path = tmp_path / "config.yaml"
    async with backend(_named("a")) as a, backend(_named("b")) as b:
        path.write_text(_config(port, a.port))
        async with (
            running_gateway(
                [str(tmp_path)], address="127.0.0.1", admin_port=0, watch_interval_s=0.02
            ) as gw,
            httpx.AsyncClient() as client,
        ):
            path.write_text(_config(port, b.port))
            async with asyncio.timeout(5):
                await gw.reloader.wait_attempts(1)
            assert (await client.get(f"http://127.0.0.1:{port}/")).text == "b"


@pytest.mark.single_loop
async def test_sighup_reloads_a_running_sluice_serve(tmp_path):
    port, admin = free_port(), free_port()
    async with backend(_named("a")) as a, backend(_named("b")) as b:
        path = tmp_path / "config.yaml"
        path.write_text(_config(port, a.port))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "serve", "--config", str(path),
            "--admin", f"127.0.0.1:{admin}", "--no-watch", "--address", "127.0.0.1",
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            async with httpx.AsyncClient() as client:
                await _until_ok(client, f"http://127.0.0.1:{admin}/readyz")
                path.write_text(_config(port, b.port))
                os.kill(proc.pid, signal.SIGHUP)
                config_url = f"http://127.0.0.1:{admin}/config"
                async with asyncio.timeout(10):
                    while (await client.get(config_url)).json()["generation"] < 2:  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
                assert (await client.get(f"http://127.0.0.1:{port}/")).text == "b"
        finally:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                await proc.communicate()
        assert proc.returncode == 0


async def _until_ok(client: httpx.AsyncClient, url: str) -> None:
    async with asyncio.timeout(15):
        while True:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


async def test_moving_the_listener_port_does_not_wait_for_idle_connections(tmp_path):
    old_port, new_port = free_port(), free_port()
    async with backend(_named("a")) as a, gateway_on(tmp_path, _config(old_port, a.port)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", old_port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            await reader.readuntil(b"\r\n\r\n")  # the connection now idles, kept alive
        (tmp_path / "config.yaml").write_text(_config(new_port, a.port))
        async with asyncio.timeout(5):  # far below the 30 s drain grace
            assert (await gw.reloader.reload()).ok
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{new_port}/")).text == "a"
        async with asyncio.timeout(5):  # read() returns at EOF: the idle connection was closed
            assert await reader.read() == b"a"
        writer.close()
