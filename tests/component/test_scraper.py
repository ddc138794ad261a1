"""The metrics scraper on real sockets: bodies by length and chunked, answers that are not
metrics, failures and recovery, timeouts, servers that close the connection, model lists."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from gateway.configload import load_config
from gateway.scraper import EndpointState, Scraper, ScrapeTarget
from routing.presets import Preset
from tests.component.harness import backend, free_port, until

PAGE = (
    "# HELP vllm:num_requests_waiting Waiting.\n# TYPE vllm:num_requests_waiting gauge\n"
    'vllm:num_requests_waiting{model_name="m"} 3.0\n'
    'vllm:num_requests_running{model_name="m"} 5.0\n'
    'vllm:kv_cache_usage_perc{model_name="m"} 0.25\n'
)
QUICKSTART = Path(__file__).resolve().parents[2] / "config/examples/quickstart.yaml"
MODELS = {"object": "list", "data": [{"id": "m"}, {"id": "sql-lora", "parent": "m"}]}


def _preset() -> Preset:
    return load_config([str(QUICKSTART)]).table.presets["vllm"]


@contextlib.asynccontextmanager
async def scraping(port: int, timeout_s: float = 1.0) -> AsyncIterator[EndpointState]:
    scraper = Scraper()
    target = ScrapeTarget(address="127.0.0.1", port=port, preset=_preset(), interval_s=0.02,
                          timeout_s=timeout_s)  # fmt: skip
    scraper.apply({target})
    try:
        yield scraper.states[target.key]
    finally:
        await scraper.close()


async def _models(request: web.Request) -> web.Response:
    return web.json_response(MODELS)


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE)


async def test_a_page_with_content_length_is_read_with_the_model_list():
    async def handler(request: web.Request) -> web.Response:
        if request.path == "/v1/models":
            return await _models(request)
        return web.Response(text=PAGE)

    async with backend(handler) as b, scraping(b.port) as state:
        await until(lambda: state.metrics is not None)
        assert state.metrics is not None
        assert (state.metrics.waiting, state.metrics.running, state.metrics.kv_usage) == (
            3.0, 5.0, 0.25,
        )  # fmt: skip
        assert state.models == frozenset({"m", "sql-lora"})
        assert state.adapters == frozenset({"sql-lora"})
        scrapes = state.scrapes
        await until(lambda: state.scrapes >= scrapes + 3)  # on one keep-alive connection
        assert len({r.transport for r in b.seen if r.path == "/metrics"}) <= 2


async def test_a_chunked_page_is_read():
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/v1/models":
            return await _models(request)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for line in PAGE.splitlines(keepends=True):
            await response.write(line.encode())
        await response.write_eof()
        return response

    async with backend(handler) as b, scraping(b.port) as state:
        await until(lambda: state.scrapes >= 3)
        assert state.metrics is not None
        assert state.metrics.waiting == 3.0


@contextlib.asynccontextmanager
async def trickling_server(chunked: bool) -> AsyncIterator[int]:
    """A raw HTTP/1.1 server that sends each answer in pieces, pausing between them as a
    slow link would, so the scraper reads one response over several reads."""
    body = PAGE.encode()
    if chunked:
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 50]), body[i : i + 50])
                           for i in range(0, len(body), 50)) + b"0\r\n\r\n"  # fmt: skip
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    else:
        payload = body
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    answer = head + payload

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while (line := await reader.readline()) and await reader.readuntil(b"\r\n\r\n"):
                if b"/v1/models" in line:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    continue
                for at in range(0, len(answer), 60):
                    writer.write(answer[at : at + 60])
                    await writer.drain()
                    await asyncio.sleep(0.002)  # the slow link, not a synchronisation
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_page_that_arrives_in_pieces_is_read():
    for chunked in (False, True):
        async with trickling_server(chunked) as port, scraping(port) as state:
            await until(lambda: state.scrapes >= 3)
            assert state.metrics is not None
            assert (state.metrics.waiting, state.metrics.running) == (3.0, 5.0)
            assert state.healthy


async def test_an_answer_that_is_not_metrics_leaves_signals_unknown_but_healthy():
    async def handler(request: web.Request) -> web.Response:
        if request.path == "/v1/models":
            return await _models(request)
        return web.Response(status=404, text="no metrics here")

    async with backend(handler) as b, scraping(b.port) as state:
        await until(lambda: len([r for r in b.seen if r.path == "/metrics"]) >= 5)
        assert state.metrics is None
        assert state.healthy


async def test_a_server_that_closes_each_connection_is_scraped_again():
    async def handler(request: web.Request) -> web.Response:
        if request.path == "/v1/models":
            return web.json_response(MODELS, headers={"Connection": "close"})
        return web.Response(text=PAGE, headers={"Connection": "close"})

    async with backend(handler) as b, scraping(b.port) as state:
        async with asyncio.timeout(5):
            await state.first_scrape.wait()
        # the model list's connection closing is not the metrics request's failure
        assert state.metrics is not None
        assert state.models == frozenset({"m", "sql-lora"})
        await until(lambda: state.scrapes >= 3)
        assert state.healthy
        assert state.failures == 0


async def test_an_endpoint_that_goes_down_turns_unhealthy_and_heals_when_back():
    port = free_port()
    app = web.Application()
    app.router.add_get("/metrics", _page)
    app.router.add_get("/v1/models", _models)
    async with scraping(port) as state:
        await until(lambda: not state.healthy)  # nothing listens: connection refused x 3
        assert state.failures >= 3
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
            await until(lambda: state.healthy and state.metrics is not None)
            assert state.failures == 0
        finally:
            await runner.cleanup()


async def test_a_server_that_never_answers_times_out_and_turns_unhealthy():
    hang = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await hang.wait()
        return web.Response(text=PAGE)

    async with backend(handler) as b, scraping(b.port, timeout_s=0.05) as state:
        await until(lambda: not state.healthy)
        assert state.metrics is None
        hang.set()
