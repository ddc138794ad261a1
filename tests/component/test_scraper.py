"""The metrics scraper on real sockets: bodies by length and chunked, answers that are not
metrics, failures and recovery, timeouts, servers that close the connection, model lists."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
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


Answer = Callable[[int], list[bytes]]  # the n-th metrics request → the pieces to send


@contextlib.asynccontextmanager
async def raw_server(answer: Answer) -> AsyncIterator[int]:
    """A raw HTTP/1.1 server on 127.0.0.1: /v1/models gets a 404; the n-th metrics request
    gets ``answer(n)``'s pieces, written one by one with a short pause between them, as a
    slow link would deliver them."""
    count = 0
    handlers: set[asyncio.Task[object]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        task = asyncio.current_task()
        if task is not None:
            handlers.add(task)
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                while (line := await reader.readline()) and await reader.readuntil(b"\r\n\r\n"):
                    if b"/v1/models" in line:
                        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                        continue
                    pieces = answer(count)
                    count += 1
                    for piece in pieces:
                        writer.write(piece)
                        await writer.drain()
                        await asyncio.sleep(0.002)  # the slow link, not a synchronisation
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in handlers:  # connection handlers still reading or writing
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def _page_answer(chunked: bool, page: bytes = PAGE.encode()) -> bytes:
    if not chunked:
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(page) + page
    payload = b"".join(b"%x\r\n%s\r\n" % (len(page[i : i + 50]), page[i : i + 50])
                       for i in range(0, len(page), 50)) + b"0\r\n\r\n"  # fmt: skip
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + payload


def _in_pieces(data: bytes, size: int = 60) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)]


async def test_a_page_that_arrives_in_pieces_is_read():
    for chunked in (False, True):
        answer = _in_pieces(_page_answer(chunked))
        async with raw_server(lambda _, a=answer: a) as port, scraping(port) as state:
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


async def test_broken_answers_count_as_failures_and_turn_the_endpoint_unhealthy():
    broken = {
        "not http": [b"NOT HTTP AT ALL\r\n\r\n"],
        "no length": [b"HTTP/1.1 200 OK\r\n\r\n" + PAGE.encode()],
        "endless head": [b"HTTP/1.1 200 OK\r\n", *(b"X-Pad: %d\r\n" % i * 500 for i in range(20))],
        "bad chunk size": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
        # a negative size once sent the parser back to the same line forever (a frozen loop)
        "negative chunk": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-6\r\nab\r\n"],
        "huge chunk": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\nab"],
    }
    for name, pieces in broken.items():
        async with raw_server(lambda _, p=pieces: p) as port, scraping(port) as state:
            await until(lambda: not state.healthy)
            assert state.metrics is None, name
            assert state.failures >= 3, name


async def test_a_recovered_server_heals_after_broken_answers():
    good = _page_answer(chunked=False)

    def answer(n: int) -> list[bytes]:
        return [b"NOT HTTP\r\n\r\n"] if n < 4 else [good]

    async with raw_server(answer) as port, scraping(port) as state:
        await until(lambda: not state.healthy)
        await until(lambda: state.healthy and state.metrics is not None)
        assert state.failures == 0


async def test_bytes_after_an_answer_close_the_connection_without_a_failure():
    # the server sends its answer and then bytes nobody asked for: the scraper drops that
    # connection (it is out of step) and scrapes again on a new one, still healthy
    pieces = [_page_answer(chunked=False), b"HTTP/1.1 200 OK\r\n"]

    async with raw_server(lambda _: pieces) as port, scraping(port) as state:
        await until(lambda: state.scrapes >= 3)
        assert state.healthy
        assert state.failures == 0


async def test_adapters_are_indexed_as_servers_load_and_unload_them():
    def page(running: str) -> bytes:
        lora = (
            f'vllm:lora_requests_info{{max_lora="2",running_lora_adapters="{running}",'
            f'waiting_lora_adapters=""}} 1700000000.0\n'
        )
        return _page_answer(chunked=False, page=(PAGE + lora).encode())

    scraper = Scraper()
    async with raw_server(lambda n: [page("sql" if n < 5 else "chat")]) as port:
        target = ScrapeTarget(address="127.0.0.1", port=port, preset=_preset(),
                              interval_s=0.02, timeout_s=1.0)  # fmt: skip
        scraper.apply({target})
        try:
            await until(lambda: scraper.adapter_index.get("sql") == {target.key})
            await until(lambda: scraper.adapter_index.get("chat") == {target.key})
            assert "sql" not in scraper.adapter_index  # unloaded: out of the index
            assert scraper.known_adapters >= {"sql", "chat"}
            scraper.apply(set())  # the endpoint left the pool: its state and index entries go
            assert scraper.states == {}
            assert scraper.adapter_index == {}
        finally:
            await scraper.close()


async def test_more_endpoints_than_one_tick_starts_are_all_scraped_in_turn():
    # 150 endpoints on one cadence: the ticker starts at most 100 per tick (two slots per
    # period), so every endpoint must still be scraped, each in its turn
    answer = [_page_answer(chunked=False)]
    async with contextlib.AsyncExitStack() as stack:
        ports = [await stack.enter_async_context(raw_server(lambda _: answer)) for _ in range(150)]
        scraper = Scraper()
        targets = {ScrapeTarget(address="127.0.0.1", port=port, preset=_preset(),
                                interval_s=0.05, timeout_s=1.0) for port in ports}  # fmt: skip
        scraper.apply(targets)
        try:
            await until(lambda: all(s.scrapes >= 3 for s in scraper.states.values()), 20)
            assert len(scraper.states) == 150
            assert all(s.healthy and s.failures == 0 for s in scraper.states.values())
        finally:
            await scraper.close()


async def test_the_long_run_load_follows_the_scraped_load_slowly():
    busy = _page_answer(chunked=False)  # 3 waiting + 5 running: 8 held
    idle = _page_answer(
        chunked=False, page=PAGE.replace(" 3.0", " 0").replace(" 5.0", " 0").encode()
    )
    async with raw_server(lambda n: [busy if n < 4 else idle]) as port, scraping(port) as state:
        await until(lambda: state.held_average is not None)
        assert state.held_average == 8.0  # the first sample counts whole
        await until(lambda: state.metrics is not None and state.metrics.waiting == 0.0)
        scrapes = state.scrapes
        await until(lambda: state.scrapes >= scrapes + 3)
        # idle now, but a 10 s average of an endpoint busy until a moment ago is not
        assert state.held_average is not None
        assert 0.0 < state.held_average < 8.0


async def test_a_nan_sample_does_not_poison_the_long_run_load():
    busy = _page_answer(chunked=False)  # 8 held
    nan = _page_answer(chunked=False, page=PAGE.replace(" 3.0", " NaN").encode())
    async with raw_server(lambda n: [busy if n < 4 else nan]) as port, scraping(port) as state:
        await until(lambda: state.metrics is not None and state.metrics.waiting != 3.0)
        scrapes = state.scrapes
        await until(lambda: state.scrapes >= scrapes + 2)
        assert state.held_average == 8.0  # NaN samples skipped, the average kept


async def test_a_page_without_any_load_series_leaves_the_signals_unknown():
    # a 200 answer that is not this engine's metrics must not count as fresh signals (a pool
    # with FailClose would otherwise route on nothing)
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async with backend(handler) as b, scraping(b.port) as state:
        async with asyncio.timeout(5):
            await state.first_scrape.wait()
        await until(lambda: len([r for r in b.seen if r.path == "/metrics"]) >= 3)
        assert state.metrics is None
        assert state.updated_at == float("-inf")
        assert state.healthy
