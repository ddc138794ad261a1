"""The data plane on real sockets: streaming, disconnects, error mapping, header hygiene."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from aiohttp import web

from gateway.context import Limits
from gateway.server import GatewayServer, send_continue
from tests.component.harness import (
    backend,
    free_port,
    gateway_on,
    gateway_yaml,
    service_yaml,
    simple_route,
    until,
)

pytestmark = pytest.mark.asyncio


async def test_sse_events_reach_client_within_20ms_of_being_written(tmp_path):
    written: list[float] = []

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        for i in range(8):
            await asyncio.sleep(0.1)  # the backend's own pacing, not test synchronisation
            written.append(loop.time())
            await resp.write(f'data: {{"i": {i}}}\n\n'.encode())
        await resp.write_eof()
        return resp

    port = free_port()
    async with (
        backend(sse) as be,
        gateway_on(tmp_path, gateway_yaml(port, simple_route(), service_yaml("svc", [be.port]))),
    ):
        arrived: list[float] = []
        loop = asyncio.get_running_loop()
        async with (
            httpx.AsyncClient() as client,
            client.stream("GET", f"http://127.0.0.1:{port}/v1/stream") as resp,
        ):
            assert resp.headers["content-type"] == "text/event-stream"
            buffer = b""
            async for chunk in resp.aiter_raw():
                buffer += chunk
                while b"\n\n" in buffer:
                    _, buffer = buffer.split(b"\n\n", 1)
                    arrived.append(loop.time())
    assert len(arrived) == len(written) == 8
    lags_ms = [(a - w) * 1000 for a, w in zip(arrived, written, strict=True)]
    assert max(lags_ms) <= 20, lags_ms


async def test_client_disconnect_closes_upstream_within_100ms_and_is_no_gateway_error(tmp_path):
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        await asyncio.Event().wait()  # hold the stream open until the connection goes
        return resp

    port = free_port()
    async with (
        backend(endless) as be,
        gateway_on(
            tmp_path, gateway_yaml(port, simple_route(), service_yaml("svc", [be.port]))
        ) as gw,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"data: first\n\n")
        assert head.startswith(b"HTTP/1.1 200")
        loop = asyncio.get_running_loop()
        closed_at = loop.time()
        writer.transport.abort()
        async with asyncio.timeout(5):
            await be.disconnected.wait()
        assert (loop.time() - closed_at) * 1000 <= 100
        async with asyncio.timeout(5):
            while gw.ctx.in_flight.get(f"127.0.0.1:{be.port}", 0):  # noqa: ASYNC110 - until the finally blocks ran
                await asyncio.sleep(0)
        assert gw.ctx.in_flight[f"127.0.0.1:{be.port}"] == 0
        # the client left: a 499 (4xx), never a gateway 5xx, and a counted stream abort
        registry = gw.ctx.metrics.registry

        def answered(code: str) -> float:
            labels = {"route": "default/route", "backend": "default/svc:80", "code": code}
            return registry.get_sample_value("sluice_requests_total", labels) or 0.0

        await until(lambda: answered("4xx") == 1.0, timeout_s=10)
        aborts = registry.get_sample_value(
            "sluice_stream_aborts_total", {"reason": "client_disconnect"}
        )
        assert answered("5xx") == 0.0
        assert aborts == 1.0


async def test_connect_failure_is_502_with_json_body(tmp_path):
    port = free_port()
    async with (
        gateway_on(
            tmp_path, gateway_yaml(port, simple_route(), service_yaml("svc", [free_port()]))
        ),
        httpx.AsyncClient() as client,
    ):
        resp = await client.get(f"http://127.0.0.1:{port}/")
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "upstream_connect_error"


async def test_request_timeout_is_504(tmp_path):
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    rule = "    timeouts: {request: 200ms}\n"
    port = free_port()
    async with (
        backend(slow) as be,
        gateway_on(
            tmp_path,
            gateway_yaml(port, simple_route(extra_rule=rule), service_yaml("svc", [be.port])),
        ),
        httpx.AsyncClient() as client,
    ):
        resp = await client.get(f"http://127.0.0.1:{port}/")
        release.set()
    assert resp.status_code == 504
    assert resp.json()["error"]["code"] == "upstream_timeout"


async def test_no_route_is_404_and_no_endpoint_is_503(tmp_path):
    port = free_port()
    routes = simple_route().replace(
        "  - backendRefs", "  - matches: [{path: {type: Exact, value: /only}}]\n    backendRefs"
    )
    async with (
        gateway_on(tmp_path, gateway_yaml(port, routes, service_yaml("svc", []))),
        httpx.AsyncClient() as client,
    ):
        missing = await client.get(f"http://127.0.0.1:{port}/elsewhere")
        empty = await client.get(f"http://127.0.0.1:{port}/only")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "route_not_found"
    assert empty.status_code == 503
    assert empty.headers["retry-after"] == "1"


async def test_hop_by_hop_headers_are_dropped_and_forwarded_headers_set(tmp_path):
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({k.lower(): v for k, v in request.headers.items()})

    port = free_port()
    async with (
        backend(echo) as be,
        gateway_on(tmp_path, gateway_yaml(port, simple_route(), service_yaml("svc", [be.port]))),
        httpx.AsyncClient() as client,
    ):
        resp = await client.get(
            f"http://127.0.0.1:{port}/h",
            headers={
                "Connection": "keep-alive, X-Secret-Hop",
                "X-Secret-Hop": "1",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "X-End-To-End": "kept",
                "X-Forwarded-For": "10.0.0.1",
            },
        )
    seen = resp.json()
    for name in ("connection", "x-secret-hop", "keep-alive", "te"):
        assert name not in seen
    assert seen["x-end-to-end"] == "kept"
    assert seen["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"


async def test_request_body_streams_through_unchanged(tmp_path):
    async def digest(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"len": len(body), "te": request.headers.get("Transfer-Encoding")})

    payload = bytes(range(256)) * 8192  # 2 MiB

    async def chunks():
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]

    port = free_port()
    async with (
        backend(digest) as be,
        gateway_on(tmp_path, gateway_yaml(port, simple_route(), service_yaml("svc", [be.port]))),
        httpx.AsyncClient() as client,
    ):
        fixed = await client.post(f"http://127.0.0.1:{port}/up", content=payload)
        chunked = await client.post(f"http://127.0.0.1:{port}/up", content=chunks())
    assert fixed.json() == {"len": len(payload), "te": None}
    assert chunked.json() == {"len": len(payload), "te": "chunked"}


async def test_oversized_body_is_413_and_oversized_header_431(tmp_path):
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    port = free_port()
    limits = Limits(max_body_bytes=1024)
    async with (
        backend(ok) as be,
        gateway_on(
            tmp_path,
            gateway_yaml(port, simple_route(), service_yaml("svc", [be.port])),
            limits=limits,
        ),
        httpx.AsyncClient() as client,
    ):
        big_body = await client.post(f"http://127.0.0.1:{port}/", content=b"x" * 2048)
        big_header = await client.get(f"http://127.0.0.1:{port}/", headers={"X-Big": "y" * 10_000})
    assert big_body.status_code == 413
    assert big_body.json()["error"]["code"] == "request_too_large"
    assert big_header.status_code == 431
    assert "error" in big_header.json()
    assert be.seen == []


async def _length(request: web.Request) -> web.Response:
    return web.json_response({"len": len(await request.read())})


@contextlib.asynccontextmanager
async def _to_length_backend(tmp_path, limits: Limits) -> AsyncIterator[int]:
    """A gateway with ``limits`` in front of a backend that answers a body's length: its port."""
    port = free_port()
    async with (
        backend(_length) as be,
        gateway_on(
            tmp_path,
            gateway_yaml(port, simple_route(), service_yaml("svc", [be.port])),
            limits=limits,
        ),
    ):
        yield port


async def test_chunked_body_crossing_the_limit_mid_stream_is_413_not_503(tmp_path):
    """The body streams to the backend as it arrives; when a chunked body crosses the limit
    after the upstream request has started, the client still gets 413 (no response has
    reached it yet), and the gateway goes on serving."""

    async def chunks():
        for _ in range(64):
            yield b"x" * 1024

    async with (
        _to_length_backend(tmp_path, Limits(max_body_bytes=8192)) as port,
        httpx.AsyncClient() as client,
    ):
        too_big = await client.post(f"http://127.0.0.1:{port}/up", content=chunks())
        after = await client.post(f"http://127.0.0.1:{port}/up", content=b"y" * 100)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "request_too_large"
    assert after.json() == {"len": 100}


async def test_chunked_body_that_stalls_mid_stream_is_408_not_503(tmp_path):
    async with _to_length_backend(tmp_path, Limits(body_read_timeout_s=0.2)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )  # and then nothing more
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
    assert head.startswith(b"HTTP/1.1 408"), head


async def test_many_header_lines_over_the_total_are_431_and_not_forwarded(tmp_path):
    # each line is within its own limit (8 KiB) and the count within 100: the total is not
    limits = Limits(max_header_bytes=16 * 1024)
    async with _to_length_backend(tmp_path, limits) as port, httpx.AsyncClient() as client:
        many = {f"X-Pad-{i}": "p" * 1000 for i in range(20)}  # ~20 KiB
        refused = await client.get(f"http://127.0.0.1:{port}/up", headers=many)
        fine = await client.get(f"http://127.0.0.1:{port}/up", headers={"X-Pad": "p" * 1000})
    assert refused.status_code == 431
    assert refused.json()["error"]["code"] == "headers_too_large"
    assert fine.json() == {"len": 0}


async def test_bodies_held_in_memory_are_bounded_across_requests(tmp_path):
    # two mirrored requests (their bodies are held) whose bodies fit one at a time, not both:
    # the second is refused with 503 and Retry-After while the first is held, and served once
    # the first has finished
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("x-hold"):
            await release.wait()
        return web.json_response({"len": len(body)})

    port = free_port()
    mirror = """    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: svc, port: 80}, percent: 0}
"""
    limits = Limits(max_buffered_body_bytes=150_000)
    async with (
        backend(slow) as be,
        gateway_on(
            tmp_path,
            gateway_yaml(port, simple_route(extra_rule=mirror), service_yaml("svc", [be.port])),
            limits=limits,
        ) as gw,
        httpx.AsyncClient(timeout=30) as client,
    ):
        url = f"http://127.0.0.1:{port}/up"
        held = asyncio.create_task(
            client.post(url, content=b"a" * 100_000, headers={"x-hold": "1"})
        )
        async with asyncio.timeout(10):
            await be.arrived.wait()
        refused = await client.post(url, content=b"b" * 100_000)
        in_memory = gw.ctx.buffered_body_bytes
        release.set()
        first = await held
        after = await client.post(url, content=b"c" * 100_000)
        settled = gw.ctx.buffered_body_bytes
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "bodies_in_memory_full"
    assert refused.headers["Retry-After"] == "1"
    assert in_memory == 100_000
    assert first.json() == {"len": 100_000}
    assert after.json() == {"len": 100_000}
    assert settled == 0


async def test_a_body_trickling_in_is_408_at_the_whole_body_deadline(tmp_path):
    # every gap is well within the read timeout; the whole body is not within its deadline
    limits = Limits(body_read_timeout_s=5.0, body_total_timeout_s=0.5)
    async with _to_length_backend(tmp_path, limits) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        head = b""
        async with asyncio.timeout(10):
            for _ in range(100):  # one byte per 0.1 s: done (with 408) long before these end
                writer.write(b"x")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        head = await reader.readuntil(b"\r\n\r\n")
                if head:
                    break
        writer.close()
    assert head.startswith(b"HTTP/1.1 408"), head


async def test_an_error_after_100_continue_is_still_answered(tmp_path):
    # the interim 100 does not count as the response having started
    async def boom(request: web.BaseRequest) -> web.StreamResponse:
        await send_continue(request)
        raise RuntimeError("a bug after the interim answer")

    server = GatewayServer(boom, limits=Limits())
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        replies = []
        for version in (b"1.1", b"1.0"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST / HTTP/" + version + b"\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: 2\r\n\r\n{}"
            )
            async with asyncio.timeout(5):
                replies.append(await reader.read())
            writer.close()
    finally:
        listener.close()
        await server.shutdown(1.0)
    http11, http10 = replies
    assert http11.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500"), http11
    assert b'"internal_error"' in http11
    assert http10.startswith((b"HTTP/1.0 500", b"HTTP/1.1 500")), http10  # no 100 first


async def test_the_server_header_names_no_library_or_version(tmp_path):
    """Sluice's own answers say ``Server: sluice``, not aiohttp's "Python/3.x aiohttp/3.x"
    (version disclosure); a backend's own Server header passes through, and a backend that
    sends none gets Sluice's."""

    async def bare_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def named(request: web.Request) -> web.Response:
        return web.Response(text="named", headers={"Server": "uvicorn"})

    bare = await asyncio.start_server(bare_backend, "127.0.0.1", 0)
    bare_port = bare.sockets[0].getsockname()[1]
    port = free_port()
    routes = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /bare}}]
    backendRefs: [{name: bare, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /named}}]
    backendRefs: [{name: named, port: 80}]
"""
    async with (
        bare,
        backend(named) as be,
        gateway_on(
            tmp_path,
            gateway_yaml(
                port, routes, service_yaml("bare", [bare_port]) + service_yaml("named", [be.port])
            ),
        ) as gw,
        httpx.AsyncClient() as client,
    ):
        proxied_bare = await client.get(f"http://127.0.0.1:{port}/bare")
        proxied_named = await client.get(f"http://127.0.0.1:{port}/named")
        not_found = await client.get(f"http://127.0.0.1:{port}/nowhere")
        admin = await client.get(f"http://127.0.0.1:{gw.admin_port}/healthz")
    assert proxied_bare.text == "ok"
    assert proxied_bare.headers["server"] == "sluice"
    assert proxied_named.headers["server"] == "uvicorn"
    assert not_found.status_code == 404
    assert not_found.headers["server"] == "sluice"
    assert admin.headers["server"] == "sluice"
    for resp in (proxied_bare, proxied_named, not_found, admin):
        assert "aiohttp" not in resp.headers.get("server", "")
        assert len(resp.headers.get_list("server")) == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"NOT-HTTP\r\n\r\n",
    ],
    ids=["content-length-and-chunked", "malformed-header", "garbage"],
)
async def test_malformed_requests_get_400_and_the_connection_closes(tmp_path, raw):
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    port = free_port()
    async with (
        backend(ok) as be,
        gateway_on(tmp_path, gateway_yaml(port, simple_route(), service_yaml("svc", [be.port]))),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read()  # returns at EOF: the gateway closed the connection
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split(b" ")[1] == b"400"
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert be.seen == []


async def test_slow_request_head_gets_408_and_close(tmp_path):
    port = free_port()
    async with gateway_on(
        tmp_path,
        gateway_yaml(port, simple_route(), service_yaml("svc", [])),
        limits=Limits(header_read_timeout_s=0.2),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize("bad", [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n"])
async def test_bad_chunk_framing_after_the_head_is_400_at_once(tmp_path, bad):
    # the request is already streaming to the backend when its malformed body arrives: it
    # fails then, not at the body timeout (set long here: waiting for it fails the test)
    port = free_port()
    async with (
        backend(_length) as be,
        gateway_on(
            tmp_path,
            gateway_yaml(port, simple_route(), service_yaml("svc", [be.port])),
            limits=Limits(body_read_timeout_s=60.0),
        ),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n"
        )
        async with asyncio.timeout(10):
            await be.arrived.wait()  # the head was read and the request is on its way
            writer.write(bad)
            answer = await reader.read()  # one answer, then the connection closes
        writer.close()
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer
    assert b"malformed request" in answer


async def test_an_absolute_form_target_is_routed_by_its_authority(tmp_path):
    # RFC 9112 §3.2.2: a server must accept "GET http://host/path"; the target's authority
    # is the host (the Host header is ignored), and the backend sees the origin form
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"path": request.raw_path, "host": request.headers["Host"]})

    port = free_port()
    route = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [api.example.com]
  rules:
  - backendRefs: [{name: svc, port: 80}]
"""
    async with (
        backend(echo) as be,
        gateway_on(tmp_path, gateway_yaml(port, route, service_yaml("svc", [be.port]))),
    ):
        answers = []
        for target in (b"http://api.example.com/v1/x%20y?a=1", b"http://api.example.com"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"GET " + target + b" HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n"
            )
            async with asyncio.timeout(10):
                answers.append(await reader.read())
            writer.close()
    first, bare = (json.loads(a.partition(b"\r\n\r\n")[2]) for a in answers)
    assert first == {"path": "/v1/x%20y?a=1", "host": "api.example.com"}
    assert bare == {"path": "/", "host": "api.example.com"}


async def test_websocket_upgrades_relay_frames_and_pass_a_refusal_on(tmp_path):
    async def echo(request: web.Request) -> web.StreamResponse:
        if request.path == "/refuse":
            return web.Response(status=405, text="no websockets here")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(f"echo: {message.data}")
        return ws

    port = free_port()
    async with (
        backend(echo) as be,
        gateway_on(tmp_path, gateway_yaml(port, simple_route(), service_yaml("svc", [be.port]))),
        aiohttp.ClientSession() as session,
    ):
        async with asyncio.timeout(10):
            ws = await session.ws_connect(f"http://127.0.0.1:{port}/chat")
            await ws.send_str("hello")
            answer = await ws.receive_str()
            await ws.close()
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"http://127.0.0.1:{port}/refuse")
    assert answer == "echo: hello"
    assert refused.value.status == 405  # the backend's answer, not a retryable 503


async def test_a_head_growing_past_the_total_is_refused_before_it_ends(tmp_path):
    # each line within its own limit, sent line by line: the connection is answered 431 and
    # closed once the head passes the request line's plus the headers' limits, without
    # waiting for (or holding) the rest of it
    limits = Limits(max_header_bytes=16 * 1024)
    async with _to_length_backend(tmp_path, limits) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /up HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        async with asyncio.timeout(10):
            for i in range(40):  # 160 KB if it were all taken; the answer comes long before
                writer.write(f"X-Pad-{i}: {'p' * 4000}\r\n".encode())
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        answer = await reader.read(65536)  # cancelled before data: none lost
                if answer:
                    answer += await reader.read()  # the rest, to the close
                    break
        writer.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer
    assert b'"headers_too_large"' in answer


async def test_connections_past_the_cap_get_503_and_a_freed_slot_is_used_again(tmp_path):
    async with _to_length_backend(tmp_path, Limits(max_connections=2)) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(10):
            refused = await reader.read()  # answered and closed without a request
        writer.close()
        for _, w in held:
            w.close()
            await w.wait_closed()
        async with httpx.AsyncClient() as client:
            async with asyncio.timeout(10):
                while True:  # until the gateway has seen the held connections go
                    fine = await client.post(f"http://127.0.0.1:{port}/up", content=b"abc")
                    if fine.status_code != 503:
                        break
    assert refused.startswith(b"HTTP/1.1 503"), refused
    assert b"Retry-After: 1" in refused
    assert b'"too_many_connections"' in refused
    assert fine.json() == {"len": 3}


async def test_a_retried_request_waits_at_least_the_routes_backoff_and_resends_its_body(tmp_path):
    seen: list[bytes] = []

    async def flaky(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(status=503 if len(seen) == 1 else 200, text=str(len(seen)))

    port = free_port()
    retry = "    retry: {codes: [503], attempts: 2, backoff: 300ms}\n"
    async with (
        backend(flaky) as be,
        gateway_on(
            tmp_path,
            gateway_yaml(port, simple_route(extra_rule=retry), service_yaml("svc", [be.port])),
        ),
        httpx.AsyncClient(timeout=30) as client,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await client.post(f"http://127.0.0.1:{port}/up", content=b"payload")
        waited = loop.time() - started
    assert answer.status_code == 200
    assert answer.text == "2"
    assert seen == [b"payload", b"payload"]
    assert waited >= 0.3  # backoff is the least wait between attempts (Gateway API)
