"""Real servers on 127.0.0.1 for component tests: small aiohttp backends and a gateway
started in-process on a config written to a temporary file."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from gateway.app import RunningGateway, running_gateway
from gateway.context import Limits
from loadtests.benchsupport import gateway_head

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Backend:
    """A real aiohttp server; records requests and exposes events to wait on."""

    port: int = 0
    seen: list[web.Request] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def backend(handler: Handler) -> AsyncIterator[Backend]:
    state = Backend()

    async def wrapped(request: web.Request) -> web.StreamResponse:
        state.seen.append(request)
        state.arrived.set()
        try:
            return await handler(request)
        except (asyncio.CancelledError, ConnectionResetError):
            state.disconnected.set()
            raise

    app = web.Application(
        handler_args={"handler_cancellation": True}, client_max_size=64 * 1024 * 1024
    )
    app.router.add_route("*", "/{tail:.*}", wrapped)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    try:
        yield state
    finally:
        await runner.cleanup()


def service_yaml(name: str, ports: list[int], namespace: str = "default") -> str:
    endpoints = "\n".join(
        f"""
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{i}
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
ports:
- name: http
  port: {port}"""
        for i, port in enumerate(ports)
    )
    return f"""
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports:
  - {{name: http, port: 80}}
{endpoints}
"""


def gateway_yaml(port: int, routes: str, services: str) -> str:
    return gateway_head(port) + textwrap.dedent(routes) + services


def simple_route(backend_name: str = "svc", extra_rule: str = "") -> str:
    return f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs: [{{name: {backend_name}, port: 80}}]
{extra_rule}
"""


@contextlib.asynccontextmanager
async def gateway_on(
    tmp_path: Path, text: str, *, limits: Limits | None = None
) -> AsyncIterator[RunningGateway]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    async with running_gateway(
        [str(path)],
        address="127.0.0.1",
        admin_port=0,
        watch_interval_s=None,
        limits=limits,
        seed=1,
    ) as gw:
        yield gw


def pool_yaml(
    port: int,
    slices: list[dict[str, object]],
    *,
    pool: str = "llama",
    profile: str | None = None,
    extra: str = "",
    failure_mode: str = "FailOpen",
) -> str:
    """A Gateway on ``port`` routing /v1 to an InferencePool over the given EndpointSlices
    (from ``Fleet.endpoint_slices_yaml({"app": pool})``)."""
    import yaml

    policy = ""
    if profile is not None:
        policy = f"""
---
apiVersion: sluice.dev/v1alpha1
kind: InferencePoolPolicy
metadata: {{name: {pool}-policy, namespace: default}}
spec:
  targetRefs: [{{group: inference.networking.k8s.io, kind: InferencePool, name: {pool}}}]
  profile: {profile}
"""
    routes = f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: llm, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs: [{{group: inference.networking.k8s.io, kind: InferencePool, name: {pool}}}]
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: {pool}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: {pool}}}}}
  targetPorts: [{{number: 8000}}]
  endpointPickerRef: {{name: epp, port: {{number: 9002}}, failureMode: {failure_mode}}}
---
apiVersion: v1
kind: Service
metadata: {{name: epp, namespace: default}}
spec:
  ports: [{{name: grpc, port: 9002}}]
{policy}{extra}
"""
    return gateway_yaml(port, routes, "---\n" + yaml.safe_dump_all(slices))


async def wait_scraped(gw: RunningGateway, count: int) -> None:
    """Wait until ``count`` endpoints have been scraped at least once."""
    async with asyncio.timeout(5):
        while len(gw.ctx.pools.scraper.states) < count:  # noqa: ASYNC110 - tasks start on apply
            await asyncio.sleep(0)
        for state in list(gw.ctx.pools.scraper.states.values()):
            await state.first_scrape.wait()


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait, inside a timeout, for state another task or process updates (a gauge, a scrape).
    There is no event to wait on for these, so it re-checks after yielding to the loop."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - no event exists for this state
            await asyncio.sleep(0.002)


def gauge(gw: RunningGateway, name: str, **labels: str) -> float:
    return gw.ctx.metrics.registry.get_sample_value(name, labels) or 0.0


def raw_post(path: str, document: dict[str, object], host: str = "127.0.0.1") -> bytes:
    """An HTTP/1.1 POST of ``document`` as JSON, as bytes to write on an open connection."""
    import json

    body = json.dumps(document).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body
