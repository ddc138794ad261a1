"""A/B splits and rollouts on real sockets: sticky variants, overrides, automatic rollback,
shadow copies that the primary never waits for, state kept across reloads."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from gateway.app import RunningGateway
from tests.component.harness import (
    backend,
    free_port,
    gateway_on,
    gateway_yaml,
    service_yaml,
    until,
)

ROUTE = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: llm, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - name: chat
    backendRefs:
    - {name: v1, port: 80, weight: 100}
    - {name: v2, port: 80, weight: 0}
"""


def _rollout(
    steps: str, analysis: str = "", shadow: str = "", sticky: str = "{header: x-user-id}"
) -> str:
    return f"""
---
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: v2-rollout, namespace: default}}
spec:
  targetRef: {{group: gateway.networking.k8s.io, kind: HTTPRoute, name: llm}}
  baseline: v1
  candidate: v2
  sticky: {sticky}
  override: {{header: x-sluice-variant}}
  steps: {steps}
{analysis}{shadow}"""


def _named(name: str, status: int = 200):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=name, status=status)

    return handler


def _config(port: int, v1: int, v2: int, rollout: str) -> str:
    services = service_yaml("v1", [v1]) + service_yaml("v2", [v2])
    return gateway_yaml(port, ROUTE + rollout, services)


@contextlib.asynccontextmanager
async def _split(
    tmp_path: Path, rollout: str
) -> AsyncIterator[tuple[httpx.AsyncClient, str, RunningGateway]]:
    """A gateway splitting / between backends answering "v1" and "v2" under ``rollout``: a
    client, the URL and the gateway."""
    port = free_port()
    async with (
        backend(_named("v1")) as a,
        backend(_named("v2")) as b,
        gateway_on(tmp_path, _config(port, a.port, b.port, rollout)) as gw,
        httpx.AsyncClient() as client,
    ):
        yield client, f"http://127.0.0.1:{port}/", gw


async def test_assignment_is_sticky_per_user_and_the_variant_is_named(tmp_path):
    rollout = _rollout("[{weight: 30, duration: 1h}]")
    async with _split(tmp_path, rollout) as (client, url, _):
        first, second = {}, {}
        for round_ in (first, second):
            for user in range(300):
                resp = await client.get(url, headers={"x-user-id": f"user-{user}"})
                assert resp.headers["x-sluice-variant"] == resp.text
                round_[user] = resp.text
        forced = await client.get(url, headers={"x-user-id": "u", "x-sluice-variant": "v2"})
    assert first == second  # every user kept their variant
    share = sum(1 for v in first.values() if v == "v2") / len(first)
    assert 0.2 <= share <= 0.4  # 30 % ± 3σ for 300 users
    assert forced.text == "v2"


async def test_a_client_without_a_sticky_key_gets_the_sticky_cookie(tmp_path):
    rollout = _rollout("[{weight: 50, duration: 1h}]", sticky="{cookie: sluice-ab}")
    async with _split(tmp_path, rollout) as (fresh, url, _):
        variants = set()
        for _ in range(40):  # new clients: each gets a cookie and keeps its first variant
            fresh.cookies.clear()
            first = await fresh.get(url)
            set_cookie = first.headers["set-cookie"]
            name, _, attributes = set_cookie.partition("; ")
            assert name.startswith("sluice-ab=")
            assert set(attributes.split("; ")) == {
                "Path=/", "Max-Age=604800", "HttpOnly", "SameSite=Lax"
            }  # fmt: skip
            again = [await fresh.get(url) for _ in range(3)]  # the cookie jar sends it back
            assert {r.text for r in again} == {first.text}
            assert all("set-cookie" not in r.headers for r in again)  # a key: no new cookie
            variants.add(first.text)
    assert variants == {"v1", "v2"}  # assigned at the rollout's weight, not all alike


async def test_the_sticky_cookie_is_secure_when_the_client_came_over_https(tmp_path):
    rollout = _rollout("[{weight: 50, duration: 1h}]", sticky="{cookie: sluice-ab}")
    async with _split(tmp_path, rollout) as (client, url, _):
        # a TLS-terminating proxy in front says the client's hop was HTTPS
        behind_tls = await client.get(url, headers={"X-Forwarded-Proto": "https, http"})
        client.cookies.clear()
        plain = await client.get(url, headers={"X-Forwarded-Proto": "http"})
    assert behind_tls.headers["set-cookie"].endswith("; SameSite=Lax; Secure")
    assert "Secure" not in plain.headers["set-cookie"]


async def test_a_failing_candidate_is_rolled_back_automatically(tmp_path):
    port = free_port()
    rollout = _rollout(
        "[{weight: 50, duration: 1h}, {weight: 100, duration: 0s}]",
        analysis="  analysis: {interval: 6s, minSamples: 20, maxErrorRateRatio: 2.0,"
        " maxErrorRateIncrease: 0.05}\n",
    )
    async with (
        backend(_named("v1")) as a,
        backend(_named("v2", 500)) as b,
        gateway_on(tmp_path, _config(port, a.port, b.port, rollout)) as gw,
        httpx.AsyncClient() as client,
    ):
        live = gw.ctx.rollouts.live["default/v2-rollout"]
        assert live.weight == 50
        url = f"http://127.0.0.1:{port}/"
        user = 0
        async with asyncio.timeout(20):  # one analysis interval (6 s) plus margin
            while live.weight != 0:
                await client.get(url, headers={"x-user-id": f"u{user}"})
                user += 1
                gw.ctx.rollouts.tick()
        status = (await client.get(f"http://127.0.0.1:{gw.admin_port}/rollouts")).json()
        after = {(await client.get(url, headers={"x-user-id": f"u{i}"})).text for i in range(50)}
    assert status["rollouts"]["default/v2-rollout"]["phase"] == "RolledBack"
    assert after == {"v1"}


async def test_rollout_state_survives_a_reload(tmp_path):
    rollout = _rollout("[{weight: 20, duration: 1h}]")
    async with _split(tmp_path, rollout) as (client, _, gw):
        admin = f"http://127.0.0.1:{gw.admin_port}"
        paused = await client.post(f"{admin}/rollouts/default/v2-rollout/pause")
        assert paused.json()["phase"] == "Paused"
        live = gw.ctx.rollouts.live["default/v2-rollout"]
        config = tmp_path / "config.yaml"
        config.write_text(config.read_text() + "\n")  # the same config, a changed file
        assert (await gw.reloader.reload()).ok
        # an unchanged Rollout keeps its object, and with it the analysis window it is
        # filling (a cluster rebuilds the table whenever a pod comes or goes)
        assert gw.ctx.rollouts.live["default/v2-rollout"] is live
        status = (await client.get(f"{admin}/rollouts")).json()["rollouts"]["default/v2-rollout"]
    assert status["phase"] == "Paused"
    assert status["weight"] == 20


async def test_operator_actions_report_unix_times_and_a_finished_rollout_refuses_them(tmp_path):
    rollout = _rollout("[{weight: 20, duration: 1h}]")
    async with _split(tmp_path, rollout) as (client, _, gw):
        actions = f"http://127.0.0.1:{gw.admin_port}/rollouts/default/v2-rollout"
        before = time.time()
        paused = await client.post(f"{actions}/pause")
        again = await client.post(f"{actions}/pause")  # already paused: nothing changes
        promoted = await client.post(f"{actions}/promote")
        aborted = await client.post(f"{actions}/abort")
        after = time.time()
        status = (await client.get(f"http://127.0.0.1:{gw.admin_port}/rollouts")).json()
    assert (paused.status_code, again.status_code, promoted.status_code) == (200, 200, 200)
    assert promoted.json()["phase"] == "Promoted"
    assert aborted.status_code == 409
    assert aborted.json()["error"]["code"] == "rollout_finished"
    assert "is Promoted: abort does not apply" in aborted.json()["error"]["message"]
    shown = status["rollouts"]["default/v2-rollout"]
    assert shown["phase"] == "Promoted"
    assert before - 60 <= shown["startedAt"] <= shown["updatedAt"] <= after + 1  # Unix seconds
    assert before - 1 <= promoted.json()["updatedAt"] <= after + 1


@pytest.mark.single_loop
async def test_shadow_copies_go_to_the_candidate_and_the_primary_never_waits(tmp_path):
    port = free_port()
    hang = asyncio.Event()
    shadow_seen = asyncio.Event()

    async def hanging(request: web.Request) -> web.Response:
        shadow_seen.set()
        await hang.wait()  # the shadow target never answers while the test runs
        return web.Response(text="late")

    rollout = _rollout(
        "[{weight: 0, duration: 1h}]",
        shadow="  shadow: {percent: 100, target: v2, maxInFlight: 4, maxBytes: 1024}\n",
    )
    async with (
        backend(_named("v1")) as a,
        backend(hanging) as b,
        gateway_on(tmp_path, _config(port, a.port, b.port, rollout)) as gw,
        httpx.AsyncClient() as client,
    ):
        url = f"http://127.0.0.1:{port}/"
        async with asyncio.timeout(5):  # the primary answers although its shadow hangs
            answers = [
                (await client.get(url, headers={"x-user-id": f"u{i}"})).text for i in range(10)
            ]
            await shadow_seen.wait()
        registry = gw.ctx.metrics.registry
        dropped = registry.get_sample_value("sluice_shadow_requests_total", {"result": "dropped"})
        hang.set()
    assert answers == ["v1"] * 10
    assert len(b.seen) == 4  # bounded: maxInFlight copies in flight, the rest dropped
    assert dropped == 6


TWO_POOLS = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: llm, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - name: chat
    backendRefs:
    - {group: inference.networking.k8s.io, kind: InferencePool, name: v1, weight: 1}
    - {group: inference.networking.k8s.io, kind: InferencePool, name: v2, weight: 0}
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: v1, namespace: default}
spec:
  selector: {matchLabels: {app: v1}}
  targetPorts: [{number: 8000}]
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: v2, namespace: default}
spec:
  selector: {matchLabels: {app: v2}}
  targetPorts: [{number: 8000}]
---
apiVersion: sluice.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: short-queue, namespace: default}
spec:
  targetRefs:
  - {group: inference.networking.k8s.io, kind: InferencePool, name: v1}
  - {group: inference.networking.k8s.io, kind: InferencePool, name: v2}
  queue: {ttl: 500ms}
"""


async def test_a_candidate_pool_that_is_down_is_rolled_back(tmp_path):
    import yaml

    from loadtests.fleet import Fleet, FleetSpec, ReplicaSpec

    port = free_port()
    rollout = _rollout(
        "[{weight: 50, duration: 1h}, {weight: 100, duration: 0s}]",
        analysis="  analysis: {interval: 6s, minSamples: 10, maxErrorRateRatio: 2.0,"
        " maxErrorRateIncrease: 0.05}\n",
    )
    async with Fleet(FleetSpec(replicas=(ReplicaSpec(),), time_scale=0.05)) as fleet:
        slices = "---\n" + yaml.safe_dump_all(fleet.endpoint_slices_yaml({"app": "v1"}))
        text = gateway_yaml(port, TWO_POOLS + rollout, slices)
        async with gateway_on(tmp_path, text) as gw, httpx.AsyncClient(timeout=30) as client:
            live = gw.ctx.rollouts.live["default/v2-rollout"]
            body = {"model": "meta-llama/Llama-3.1-8B-Instruct", "prompt": "hi", "max_tokens": 2}
            url = f"http://127.0.0.1:{port}/v1/completions"
            statuses: set[int] = set()
            batch = 0
            async with asyncio.timeout(20):  # within the analysis interval (6 s) plus margin
                while live.status.phase != "RolledBack":
                    answers = await asyncio.gather(
                        *(
                            client.post(url, json=body, headers={"x-user-id": f"u{batch}-{i}"})
                            for i in range(20)
                        )
                    )
                    statuses |= {r.status_code for r in answers}
                    batch += 1
                    gw.ctx.rollouts.tick()
    assert statuses == {200, 503}


MODEL_SPLIT = """
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: chat-split, namespace: default}
spec:
  poolRef: {name: v1}
  rules:
  - matches: [{model: {type: Exact, value: chat}}]
    targets: [{modelRewrite: model-a, weight: 1}, {modelRewrite: model-b, weight: 0}]
---
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: model-b-rollout, namespace: default}
spec:
  targetRef: {group: inference.networking.x-k8s.io, kind: InferenceModelRewrite, name: chat-split}
  baseline: model-a
  candidate: model-b
  sticky: {cookie: sluice-ab}
  steps: [{weight: 50, duration: 1h}]
"""


async def test_two_rollouts_on_one_request_give_one_cookie_and_agree_on_it(tmp_path):
    # a route Rollout (pools v1/v2, all on v1 for now) and a model Rollout inside v1 name the
    # same cookie: a new client gets one cookie, and its later requests, carrying it, get the
    # model its first request got
    import yaml

    from loadtests.fleet import Fleet, FleetSpec, ReplicaSpec

    port = free_port()
    route = _rollout("[{weight: 0, duration: 1h}]", sticky="{cookie: sluice-ab}")
    replica = ReplicaSpec(adapters=("model-a", "model-b"))
    async with Fleet(FleetSpec(replicas=(replica,), time_scale=0.05)) as fleet:
        slices = "---\n" + yaml.safe_dump_all(fleet.endpoint_slices_yaml({"app": "v1"}))
        text = gateway_yaml(port, TWO_POOLS + route + MODEL_SPLIT, slices)
        async with gateway_on(tmp_path, text), httpx.AsyncClient(timeout=30) as client:
            url = f"http://127.0.0.1:{port}/v1/completions"
            body = {"model": "chat", "prompt": "hi", "max_tokens": 2}
            models = set()
            for _ in range(30):
                client.cookies.clear()
                first = await client.post(url, json=body)
                assert first.status_code == 200, first.text
                assert len(first.headers.get_list("set-cookie")) == 1
                model = first.json()["model"]
                again = [(await client.post(url, json=body)).json()["model"] for _ in range(2)]
                assert again == [model, model]
                models.add(model)
    assert models == {"model-a", "model-b"}


async def test_shadow_copies_carry_the_body_and_only_the_baselines_requests(tmp_path):
    # a POST through a Service split: each copy reaches the candidate with the same body,
    # promptly (not after the mirror timeout), and requests the candidate already serves
    # are not copied to it again
    port = free_port()
    copies: list[bytes] = []

    async def candidate(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("x-user-id", "").startswith("forced"):
            return web.Response(text="v2")  # served, not a copy
        copies.append(body)
        return web.Response(text="v2")

    rollout = _rollout(
        "[{weight: 0, duration: 1h}]", shadow="  shadow: {percent: 100, target: v2}\n"
    )
    async with (
        backend(_named("v1")) as a,
        backend(candidate) as b,
        gateway_on(tmp_path, _config(port, a.port, b.port, rollout)) as gw,
        httpx.AsyncClient() as client,
    ):
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        bodies = [f'{{"model": "m", "messages": [], "user": "u{i}"}}'.encode() for i in range(5)]
        for i, body in enumerate(bodies):
            resp = await client.post(url, content=body, headers={"x-user-id": f"u{i}"})
            assert resp.text == "v1"
        forced = await client.post(
            url, content=b'{"x": 1}', headers={"x-user-id": "forced", "x-sluice-variant": "v2"}
        )
        registry = gw.ctx.metrics.registry

        def sent() -> float:
            value = registry.get_sample_value("sluice_shadow_requests_total", {"result": "sent"})
            return value or 0.0

        await until(lambda: sent() == 5.0, timeout_s=20)
    assert forced.text == "v2"
    assert sorted(copies) == sorted(bodies)  # one copy of each baseline request, body intact
    assert sum(1 for r in b.seen if r.headers.get("x-user-id") == "forced") == 1  # no copy


POOL_SLICE = """
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {app}-slice, namespace: default, labels: {{app: {app}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
"""


async def test_a_route_rollout_between_pools_sends_one_shadow_copy_to_the_candidate(tmp_path):
    port = free_port()

    async def answer(request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.Response(status=404)  # no /metrics: signals unknown, FailOpen
        return web.json_response({"model": (await request.json())["model"], "choices": []})

    rollout = _rollout(
        "[{weight: 0, duration: 1h}]", shadow="  shadow: {percent: 100, target: v2}\n"
    )
    async with (
        backend(answer) as a,
        backend(answer) as b,
        gateway_on(
            tmp_path,
            gateway_yaml(
                port,
                TWO_POOLS + rollout,
                POOL_SLICE.format(app="v1", port=a.port) + POOL_SLICE.format(app="v2", port=b.port),
            ),
        ) as gw,
        httpx.AsyncClient(timeout=30) as client,
    ):
        url = f"http://127.0.0.1:{port}/v1/completions"
        for i in range(6):
            body = {"model": "m", "prompt": "hi", "max_tokens": 2}
            resp = await client.post(url, json=body, headers={"x-user-id": f"u{i}"})
            assert resp.status_code == 200, resp.text
        registry = gw.ctx.metrics.registry
        await until(
            lambda: (
                registry.get_sample_value("sluice_shadow_requests_total", {"result": "sent"}) == 6.0
            ),
            timeout_s=20,
        )
    baseline = [r for r in a.seen if r.method == "POST"]
    candidate = [r for r in b.seen if r.method == "POST"]
    assert len(baseline) == 6  # the client's requests only: no copy back to the baseline
    assert len(candidate) == 6  # one copy of each


async def test_a_model_rollout_copies_with_the_candidate_model_inside_the_pool(tmp_path):
    port = free_port()
    models: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.Response(status=404)  # no /metrics or model list: FailOpen
        model = (await request.json())["model"]
        models.append(model)
        return web.json_response({"model": model, "choices": []})

    split = MODEL_SPLIT.replace("[{weight: 50, duration: 1h}]", "[{weight: 0, duration: 1h}]")
    split += "  shadow: {percent: 100, target: model-b}\n"
    async with (
        backend(answer) as a,
        gateway_on(
            tmp_path,
            gateway_yaml(port, TWO_POOLS + split, POOL_SLICE.format(app="v1", port=a.port)),
        ) as gw,
        httpx.AsyncClient(timeout=30) as client,
    ):
        url = f"http://127.0.0.1:{port}/v1/completions"
        for _ in range(4):
            body = {"model": "chat", "prompt": "hi", "max_tokens": 2}
            resp = await client.post(url, json=body)
            assert resp.json()["model"] == "model-a"
        registry = gw.ctx.metrics.registry
        await until(
            lambda: (
                registry.get_sample_value("sluice_shadow_requests_total", {"result": "sent"}) == 4.0
            ),
            timeout_s=20,
        )
    assert sorted(models) == ["model-a"] * 4 + ["model-b"] * 4


async def test_a_split_between_services_names_the_variant_and_records_its_metrics(tmp_path):
    # a plain weighted split (no Rollout) of streamed OpenAI requests between two Services:
    # every answer names its variant, and TTFT / TPOT / end-to-end are recorded per variant
    port = free_port()

    def streaming(name: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for token in ("a", "b", "c"):
                chunk = f'data: {{"model": "{name}", "choices": [{{"text": "{token}"}}]}}\n\n'
                await resp.write(chunk.encode())
            await resp.write(b"data: [DONE]\n\n")
            return resp

        return handler

    split = ROUTE.replace("weight: 100}", "weight: 50}").replace("weight: 0}", "weight: 50}")
    async with backend(streaming("v1")) as a, backend(streaming("v2")) as b:
        services = service_yaml("v1", [a.port]) + service_yaml("v2", [b.port])
        async with (
            gateway_on(tmp_path, gateway_yaml(port, split, services)) as gw,
            httpx.AsyncClient() as client,
        ):
            url = f"http://127.0.0.1:{port}/v1/completions"
            body = {"model": "llama", "prompt": "hi", "stream": True}
            variants = [
                (await client.post(url, json=body)).headers["x-sluice-variant"] for _ in range(40)
            ]
            plain = await client.get(f"http://127.0.0.1:{port}/health")
            # a model name that is not valid text (a JSON escape of a lone surrogate) is a
            # label too: /metrics must stay encodable
            odd = await client.post(url, content=b'{"model": "\\udcff", "stream": true}')
            metrics = await client.get(f"http://127.0.0.1:{gw.admin_port}/metrics")
            registry = gw.ctx.metrics.registry
            counts = {
                v: registry.get_sample_value(
                    "sluice_time_to_first_token_seconds_count", {"model": "llama", "variant": v}
                )
                for v in ("v1", "v2")
            }
            tpot = registry.get_sample_value(
                "sluice_time_per_output_token_seconds_count", {"model": "llama", "variant": "v1"}
            )
    assert set(variants) == {"v1", "v2"}
    assert counts == {v: float(variants.count(v)) for v in ("v1", "v2")}
    assert tpot == float(variants.count("v1"))
    assert plain.headers["x-sluice-variant"] in {"v1", "v2"}  # not an OpenAI request: no metrics
    assert odd.status_code == 200
    assert metrics.status_code == 200
    assert 'model="\ufffd' in metrics.text


async def test_a_service_rollout_analyses_ttft(tmp_path):
    # the Rollout's analysis compares TTFT for Service variants too: a slow candidate is
    # rolled back on TTFT alone (no errors)
    port = free_port()

    def streaming(delay: asyncio.Event | None):
        async def handler(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            if delay is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):  # the candidate's first token is late
                        await delay.wait()
            await resp.write(b'data: {"choices": [{"text": "a"}]}\n\ndata: [DONE]\n\n')
            return resp

        return handler

    rollout = _rollout(
        "[{weight: 50, duration: 1h}, {weight: 100, duration: 0s}]",
        analysis="  analysis: {interval: 1s, minSamples: 10, maxTTFTp95Ratio: 2.0}\n",
    )
    never = asyncio.Event()
    async with (
        backend(streaming(None)) as a,
        backend(streaming(never)) as b,
        gateway_on(tmp_path, _config(port, a.port, b.port, rollout)) as gw,
        httpx.AsyncClient(timeout=30) as client,
    ):
        url = f"http://127.0.0.1:{port}/v1/completions"
        body = {"model": "llama", "prompt": "hi", "stream": True}
        live = gw.ctx.rollouts.live["default/v2-rollout"]
        batch = 0
        async with asyncio.timeout(30):
            while live.status.phase != "RolledBack":
                answers = await asyncio.gather(
                    *(
                        client.post(url, json=body, headers={"x-user-id": f"u{batch}-{i}"})
                        for i in range(30)
                    )
                )
                assert {r.status_code for r in answers} == {200}
                batch += 1
                gw.ctx.rollouts.tick()
        message = live.status.message
    assert "TTFT" in message, message
