"""InferencePool routing on real sockets against the simulated fleet."""

from __future__ import annotations

import asyncio
import collections
import gzip
import json

import httpx
import pytest

from gateway.inference import OFF_LOOP_BYTES
from loadtests.fleet import Engine, Fleet, FleetSpec, ReplicaSpec
from tests.component.harness import (
    free_port,
    gateway_on,
    gauge,
    pool_yaml,
    raw_post,
    wait_scraped,
)

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SERVED = "x-gateway-destination-endpoint-served"


def _fleet(n: int = 4, **kw) -> Fleet:
    return Fleet(FleetSpec(replicas=tuple(ReplicaSpec(**kw) for _ in range(n)), time_scale=0.05))


def _chat(content: str, **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 4,
            **extra}  # fmt: skip


@pytest.mark.single_loop
@pytest.mark.parametrize("same_prompt", [True, False], ids=["same-prompt", "distinct-prompts"])
async def test_burst_of_200_into_idle_pool_is_spread_evenly(tmp_path, same_prompt):
    port = free_port()
    async with (
        _fleet() as fleet,
        gateway_on(tmp_path, pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}))) as gw,
    ):
        await wait_scraped(gw, 4)
        prompt = "You are a helpful assistant. " * 40
        async with httpx.AsyncClient(
            limits=httpx.Limits(max_connections=250), timeout=30
        ) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        json=_chat(prompt if same_prompt else f"{i}: {prompt}"),
                    )
                    for i in range(200)
                )
            )
        # the decisions' traces, as /metrics exports them
        pool = "default/llama"
        counted = {
            key: gauge(gw, "sluice_endpoint_picks_total", pool=pool, endpoint=key)
            for key in gw.ctx.pools.view(gw.ctx.pools.current(pool)).keys
        }
        guarded = gauge(gw, "sluice_pick_filtered_endpoints_total", pool=pool, filter="hot-spot")
        picks = gauge(gw, "sluice_picks_total", pool=pool, result="ok")
    assert all(r.status_code == 200 for r in responses)
    per_endpoint = collections.Counter(r.headers[SERVED] for r in responses)
    assert len(per_endpoint) == 4, per_endpoint
    mean = 200 / 4
    assert max(per_endpoint.values()) / mean <= 1.5, per_endpoint
    assert picks == 200
    assert counted == {key: float(n) for key, n in per_endpoint.items()}
    if same_prompt:  # prefix affinity pulls the burst to one endpoint: the guard spreads it
        assert guarded > 0


async def test_same_prefix_goes_to_the_same_endpoint_when_load_allows(tmp_path):
    port = free_port()
    async with (
        _fleet() as fleet,
        gateway_on(tmp_path, pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}))) as gw,
        httpx.AsyncClient(timeout=30) as client,
    ):
        await wait_scraped(gw, 4)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        served = set()
        for group in ("alpha", "beta"):
            system = f"System prompt for group {group}. " * 30
            for i in range(3):
                resp = await client.post(url, json=_chat(f"{system} question {i}"))
                assert resp.status_code == 200
                served.add((group, resp.headers[SERVED]))
        prompt_blocks = gauge(gw, "sluice_pick_prompt_blocks_total", pool="default/llama")
        prefix_blocks = gauge(gw, "sluice_pick_prefix_blocks_total", pool="default/llama")
    by_group = collections.defaultdict(set)
    for group, endpoint in served:
        by_group[group].add(endpoint)
    assert all(len(endpoints) == 1 for endpoints in by_group.values()), by_group
    # the second and third request of each group were predicted to hit the cached prefix
    assert 0 < prefix_blocks < prompt_blocks


async def test_unknown_model_is_404_and_models_lists_adapters(tmp_path):
    port = free_port()
    async with (
        _fleet(2, adapters=("sql-lora",)) as fleet,
        gateway_on(tmp_path, pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}))) as gw,
        httpx.AsyncClient(timeout=30) as client,
    ):
        await wait_scraped(gw, 2)
        missing = await client.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json={**_chat("hi"), "model": "nope"}
        )
        models = await client.get(f"http://127.0.0.1:{port}/v1/models")
        bad_json = await client.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", content=b"{not json"
        )
        zipped = await client.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            content=gzip.compress(json.dumps(_chat("hi")).encode()),
            headers={"Content-Encoding": "gzip"},
        )
        deep = b"[" * 100_000 + b"]" * 100_000  # deeper than the JSON parser goes
        too_deep = await client.post(f"http://127.0.0.1:{port}/v1/chat/completions", content=deep)
        after = await client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=_chat("hi"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert {m["id"] for m in models.json()["data"]} == {MODEL, "sql-lora"}
    assert bad_json.status_code == 400
    assert zipped.status_code == 415
    assert zipped.json()["error"]["code"] == "unsupported_content_encoding"
    assert too_deep.status_code == 400
    assert "nested too deeply" in too_deep.json()["error"]["message"]
    assert after.status_code == 200


async def test_epp_selection_header_is_honoured(tmp_path):
    port = free_port()
    async with (
        _fleet(3) as fleet,
        gateway_on(tmp_path, pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}))) as gw,
        httpx.AsyncClient(timeout=30) as client,
    ):
        await wait_scraped(gw, 3)
        wanted = f"127.0.0.1:{fleet.replicas[2].port}"
        for i in range(5):
            resp = await client.post(
                f"http://127.0.0.1:{port}/v1/completions",
                json={"model": MODEL, "prompt": f"p{i}", "max_tokens": 2},
                headers={"test-epp-endpoint-selection": wanted},
            )
            assert resp.headers[SERVED] == wanted


async def test_a_route_filter_can_remove_the_epp_selection_test_hook(tmp_path):
    # the hook is read as the route's filters leave the request: removed at the edge, a
    # client cannot pin every request to one endpoint past its caps
    port = free_port()
    rule = (
        "  - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: llama}]"
    )
    strip = rule + (
        "\n    filters: [{type: RequestHeaderModifier,"
        " requestHeaderModifier: {remove: [test-epp-endpoint-selection]}}]"
    )
    async with _fleet(3) as fleet:
        text = pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}))
        assert rule in text
        async with (
            gateway_on(tmp_path, text.replace(rule, strip)) as gw,
            httpx.AsyncClient(timeout=30) as client,
        ):
            await wait_scraped(gw, 3)
            wanted = f"127.0.0.1:{fleet.replicas[2].port}"
            served = set()
            for i in range(12):
                resp = await client.post(
                    f"http://127.0.0.1:{port}/v1/completions",
                    json={"model": MODEL, "prompt": f"p{i}", "max_tokens": 2},
                    headers={"test-epp-endpoint-selection": wanted},
                )
                served.add(resp.headers[SERVED])
    assert served != {wanted}  # spread by the picker (all 12 on one endpoint: ~1e-5 by chance)


@pytest.mark.parametrize(
    ("engine", "has_kv"),
    [
        (Engine.VLLM, True),
        (Engine.SGLANG, True),
        (Engine.TGI, False),
        (Engine.TRITON, True),
        (Engine.TRTLLM, True),
        (Engine.LLAMACPP, None),
    ],
    ids=lambda v: str(v),
)
async def test_each_engine_preset_reads_its_server_signals(tmp_path, engine, has_kv):
    port = free_port()
    async with (
        _fleet(2, engine=engine) as fleet,
        gateway_on(tmp_path, pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}))) as gw,
        httpx.AsyncClient(timeout=30) as client,
    ):
        await wait_scraped(gw, 2)
        states = gw.ctx.pools.scraper.states
        for replica in fleet.replicas:
            metrics = states[f"127.0.0.1:{replica.port}"].metrics
            assert metrics is not None
            assert metrics.waiting == 0
            assert metrics.running == 0
            if has_kv is not None:
                assert (metrics.kv_usage is not None) is has_kv
        resp = await client.post(
            f"http://127.0.0.1:{port}/v1/completions",
            json={"model": MODEL, "prompt": "hello", "max_tokens": 2},
        )
        assert resp.status_code == 200


def _slice(name: str, port: int | None, labels: dict, ready: bool = True) -> dict:
    doc = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "llama", **labels}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
    }
    if port is not None:
        doc["ports"] = [{"name": "http", "port": port}]
    return doc


def _lws(name: str, group: int, worker: int) -> dict:
    return {
        "leaderworkerset.sigs.k8s.io/name": name,
        "leaderworkerset.sigs.k8s.io/group-index": str(group),
        "leaderworkerset.sigs.k8s.io/worker-index": str(worker),
    }


async def test_multi_host_groups_route_to_healthy_group_leaders_only(tmp_path):
    port = free_port()
    async with _fleet(4) as fleet:
        p = [r.port for r in fleet.replicas]
        slices = [
            _slice("g0-leader", p[0], _lws("big", 0, 0)),
            _slice("g0-worker", p[1], _lws("big", 0, 1)),
            _slice("g1-leader", p[2], _lws("big", 1, 0)),
            _slice("g1-worker", p[3], _lws("big", 1, 1), ready=False),
        ]
        async with (
            gateway_on(tmp_path, pool_yaml(port, slices)) as gw,
            httpx.AsyncClient(timeout=30) as client,
        ):
            await wait_scraped(gw, 2)  # leaders only are scraped
            url = f"http://127.0.0.1:{port}/v1/completions"
            body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
            served = {(await client.post(url, json=body)).headers[SERVED] for _ in range(8)}
            assert served == {f"127.0.0.1:{p[0]}"}
            slices[3] = _slice("g1-worker", p[3], _lws("big", 1, 1), ready=True)
            (tmp_path / "config.yaml").write_text(pool_yaml(port, slices))
            assert (await gw.reloader.reload()).ok
            await wait_scraped(gw, 2)
            served = set()
            for i in range(12):
                resp = await client.post(url, json={**body, "prompt": f"distinct {i}"})
                served.add(resp.headers[SERVED])
            assert served == {f"127.0.0.1:{p[0]}", f"127.0.0.1:{p[2]}"}
            # the group's leader was out of rotation: the series counting its picks starts
            # with this config; an endpoint that leaves the pool loses its series
            leader = f"127.0.0.1:{p[2]}"
            labels = {"pool": "default/llama", "endpoint": leader}
            assert gauge(gw, "sluice_endpoint_picks_total", **labels) > 0
            (tmp_path / "config.yaml").write_text(pool_yaml(port, slices[:2]))
            assert (await gw.reloader.reload()).ok
            assert (
                gw.ctx.metrics.registry.get_sample_value("sluice_endpoint_picks_total", labels)
                is None
            )


async def test_several_target_ports_are_several_endpoints(tmp_path):
    port = free_port()
    async with _fleet(2) as fleet:
        ports = [r.port for r in fleet.replicas]
        text = pool_yaml(port, [_slice("pod-a", None, {})]).replace(
            "targetPorts: [{number: 8000}]",
            f"targetPorts: [{{number: {ports[0]}}}, {{number: {ports[1]}}}]",
        )
        async with gateway_on(tmp_path, text) as gw, httpx.AsyncClient(timeout=30) as client:
            await wait_scraped(gw, 2)
            served = set()
            for i in range(10):
                resp = await client.post(
                    f"http://127.0.0.1:{port}/v1/completions",
                    json={"model": MODEL, "prompt": f"rank {i}", "max_tokens": 2},
                )
                served.add(resp.headers[SERVED])
    assert served == {f"127.0.0.1:{p}" for p in ports}


@pytest.mark.parametrize(("mode", "status"), [("FailOpen", 200), ("FailClose", 503)])
async def test_missing_signals_fail_open_or_closed(tmp_path, mode, status):
    from aiohttp import web

    from tests.component.harness import backend

    async def no_metrics(request: web.Request) -> web.Response:
        if request.path == "/metrics":
            return web.Response(status=404)
        return web.json_response({"object": "text_completion", "choices": []})

    port = free_port()
    async with backend(no_metrics) as be:
        slices = [_slice("plain", be.port, {})]
        async with (
            gateway_on(tmp_path, pool_yaml(port, slices, failure_mode=mode)) as gw,
            httpx.AsyncClient(timeout=30) as client,
        ):
            await wait_scraped(gw, 1)
            resp = await client.post(
                f"http://127.0.0.1:{port}/v1/completions",
                json={"model": MODEL, "prompt": "x", "max_tokens": 2},
            )
            registry = gw.ctx.metrics.registry
            pool = {"pool": "default/llama"}
            fail_open = registry.get_sample_value("sluice_pick_fail_open_total", pool)
            refused = registry.get_sample_value("sluice_picks_total", {**pool, "result": "none"})
    assert resp.status_code == status
    # FailOpen picks without signals (counted); FailClose refuses (a pick with no endpoint)
    assert (fail_open, refused) == ((1.0, 0.0) if mode == "FailOpen" else (0.0, 1.0))


REWRITE = """
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: sql-split, namespace: default}
spec:
  poolRef: {name: llama}
  rules:
  - matches: [{model: {type: Exact, value: sql}}]
    targets: [{modelRewrite: sql-lora, weight: 1}]
"""


async def test_model_rewrite_reaches_the_server_and_models_lists_it(tmp_path):
    port = free_port()
    async with (
        _fleet(1, adapters=("sql-lora",)) as fleet,
        gateway_on(
            tmp_path, pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}), extra=REWRITE)
        ) as gw,
        httpx.AsyncClient(timeout=30) as client,
    ):
        await wait_scraped(gw, 1)
        resp = await client.post(
            f"http://127.0.0.1:{port}/v1/completions",
            json={"model": "sql", "prompt": "SELECT", "max_tokens": 2},
        )
        models = await client.get(f"http://127.0.0.1:{port}/v1/models")
    assert resp.status_code == 200
    assert [r.model for r in fleet.replicas[0].requests] == ["sql-lora"]
    assert "sql" in {m["id"] for m in models.json()["data"]}


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    return head


async def test_undecodable_header_bytes_and_odd_model_names_are_not_errors(tmp_path):
    # an API key or session id with bytes that are not UTF-8 is hashed as those bytes, and a
    # model name that is not valid text (a lone surrogate from a JSON escape) answers 404 as
    # any unknown model does; /metrics stays readable throughout
    port = free_port()
    async with (
        _fleet(2) as fleet,
        gateway_on(tmp_path, pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}))) as gw,
        httpx.AsyncClient(timeout=30) as client,
    ):
        await wait_scraped(gw, 2)
        good = raw_post("/v1/chat/completions", _chat("hi"))
        head, _, body = good.partition(b"\r\n\r\n")
        heads = [
            await _raw(port, head + b"\r\nAuthorization: Bearer \xff\xfe\r\n\r\n" + body),
            await _raw(port, head + b"\r\nX-Session-Id: \xff\r\n\r\n" + body),
        ]
        odd = await client.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            content=b'{"model": "\\udcff", "messages": []}',
        )
        metrics = await client.get(f"http://127.0.0.1:{gw.admin_port}/metrics")
    assert [h.split(b"\r\n", 1)[0] for h in heads] == [b"HTTP/1.1 200 OK"] * 2
    assert odd.status_code == 404
    assert metrics.status_code == 200


async def test_large_bodies_are_read_and_rewritten_off_the_loop_with_the_same_answers(tmp_path):
    # bodies past OFF_LOOP_BYTES take the worker-thread path: same answers as small ones
    port = free_port()
    many = [{"role": "user", "content": ""}] * 40_000  # ~1 MB of tiny messages
    async with (
        _fleet(2) as fleet,
        gateway_on(tmp_path, pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}))) as gw,
        httpx.AsyncClient(timeout=30) as client,
    ):
        await wait_scraped(gw, 2)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        unknown = await client.post(url, json={"model": "nope", "messages": many})
        padded = {**_chat("hi"), "metadata": {"pad": "x" * 300_000}}  # large, few tokens
        served = await client.post(url, json=padded)
        deep = await client.post(
            url, content=b'{"pad": "' + b"x" * 300_000 + b'", "a": ' + b"[" * 100_000
        )
    assert len(json.dumps({"model": "nope", "messages": many})) > OFF_LOOP_BYTES
    assert unknown.status_code == 404
    assert served.status_code == 200, served.text
    assert deep.status_code == 400
