"""Traffic shaping on real sockets: caps, fairness, cancellation, shedding, scale from zero."""

from __future__ import annotations

import asyncio
import collections

import httpx
import pytest

from loadtests.fleet import EngineProfile, Fleet, FleetSpec, ReplicaSpec, ReplicaStats
from tests.component.harness import (
    free_port,
    gateway_on,
    gauge,
    pool_yaml,
    raw_post,
    until,
    wait_scraped,
)

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
QUEUE = "sluice_gateway_queue_length"
POOL = "default/llama"


def _policy(body: str) -> str:
    return f"""
---
apiVersion: sluice.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: shaping, namespace: default}}
spec:
  targetRefs: [{{group: inference.networking.k8s.io, kind: InferencePool, name: llama}}]
{body}
"""


OBJECTIVES = """
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: batch, namespace: default}
spec: {priority: -1, poolRef: {name: llama}}
"""


def _fleet(n: int, time_scale: float = 0.05, **profile) -> Fleet:
    spec = ReplicaSpec(profile=EngineProfile(**profile)) if profile else ReplicaSpec()
    return Fleet(FleetSpec(replicas=(spec,) * n, time_scale=time_scale))


def _completion(prompt: str, max_tokens: int = 4) -> dict:
    return {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True}


@pytest.mark.single_loop
async def test_backend_concurrency_never_exceeds_the_caps_under_a_burst_of_500(tmp_path):
    port = free_port()
    policy = _policy("  concurrency: {maxPerEndpoint: 6}\n  queue: {maxRequests: 1000}")
    async with (
        _fleet(4) as fleet,
        gateway_on(
            tmp_path, pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}), extra=policy)
        ) as gw,
        httpx.AsyncClient(limits=httpx.Limits(max_connections=600), timeout=60) as client,
    ):
        await wait_scraped(gw, 4)
        responses = await asyncio.gather(
            *(
                client.post(f"http://127.0.0.1:{port}/v1/completions", json=_completion(f"b{i}"))
                for i in range(500)
            )
        )
        stats = [r.stats for r in fleet.replicas]
    assert [r.status_code for r in responses] == [200] * 500
    assert max(s.max_in_flight for s in stats) <= 6, [s.max_in_flight for s in stats]
    assert sum(s.served for s in stats) == 500


@pytest.mark.single_loop
async def test_light_tenant_gets_its_fair_share_while_both_are_backlogged(tmp_path):
    port = free_port()
    policy = _policy("  concurrency: {maxPerEndpoint: 2}")
    async with (
        _fleet(1) as fleet,
        gateway_on(
            tmp_path, pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}), extra=policy)
        ) as gw,
        httpx.AsyncClient(limits=httpx.Limits(max_connections=300), timeout=60) as client,
    ):
        await wait_scraped(gw, 1)
        done: list[str] = []

        async def send(tenant: str, i: int) -> None:
            resp = await client.post(
                f"http://127.0.0.1:{port}/v1/completions",
                json=_completion(f"{tenant} {i}"),
                headers={"x-gateway-inference-fairness-id": tenant},
            )
            assert resp.status_code == 200
            done.append(tenant)

        # the heavy tenant sends 10x the light one's requests; once it is backlogged in the
        # gateway's queue, the light one sends its burst: from then on both are backlogged
        heavy = [asyncio.create_task(send("heavy", i)) for i in range(200)]
        await until(lambda: gauge(gw, QUEUE, pool=POOL) >= 50, timeout_s=10)
        await asyncio.gather(*(send("light", i) for i in range(20)), *heavy)
    lights = [i for i, tenant in enumerate(done) if tenant == "light"]
    while_backlogged = collections.Counter(done[lights[0] : lights[-1] + 1])
    share = while_backlogged["light"] / sum(while_backlogged.values())
    assert share >= 0.45, while_backlogged


async def test_a_queued_request_whose_client_leaves_never_reaches_a_backend(tmp_path):
    port = free_port()
    policy = _policy("  concurrency: {maxPerEndpoint: 1}")
    async with (
        _fleet(1, time_scale=1.0) as fleet,
        gateway_on(
            tmp_path, pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}), extra=policy)
        ) as gw,
        httpx.AsyncClient(timeout=60) as client,
    ):
        await wait_scraped(gw, 1)
        url = f"http://127.0.0.1:{port}/v1/completions"
        first = asyncio.create_task(client.post(url, json=_completion("long", max_tokens=60)))
        replica = fleet.replicas[0]
        async with asyncio.timeout(5):
            await replica.wait_for_requests(1)
        queued = asyncio.create_task(client.post(url, json=_completion("queued")))
        await until(lambda: gauge(gw, QUEUE, pool=POOL) == 1)
        queued.cancel()  # the client goes away while its request waits in the queue
        await until(lambda: gauge(gw, QUEUE, pool=POOL) == 0)
        async with asyncio.timeout(30):
            assert (await first).status_code == 200
        assert replica.stats.received == 1
        cancelled = gauge(
            gw, "sluice_rejected_requests_total", pool=POOL, reason="client_cancelled"
        )
        assert cancelled == 1


async def test_sheddable_requests_get_429_while_the_pool_is_saturated(tmp_path):
    port = free_port()
    policy = _policy("  saturation: {queueDepthThreshold: 1, kvCacheThreshold: 0.99}")
    async with (
        _fleet(1, time_scale=1.0, max_num_seqs=2) as fleet,
        gateway_on(
            tmp_path,
            pool_yaml(
                port, fleet.endpoint_slices_yaml({"app": "llama"}), extra=policy + OBJECTIVES
            ),
        ) as gw,
        httpx.AsyncClient(timeout=60) as client,
    ):
        await wait_scraped(gw, 1)
        url = f"http://127.0.0.1:{port}/v1/completions"
        busy = [
            asyncio.create_task(client.post(url, json=_completion(f"fill {i}", max_tokens=40)))
            for i in range(5)
        ]
        state = next(iter(gw.ctx.pools.scraper.states.values()))
        await until(lambda: bool(state.metrics and (state.metrics.waiting or 0) >= 1))
        shed = await client.post(
            url, json=_completion("batch job"), headers={"x-gateway-inference-objective": "batch"}
        )
        kept = asyncio.create_task(client.post(url, json=_completion("interactive")))
        async with asyncio.timeout(60):
            results = await asyncio.gather(*busy, kept)
    assert shed.status_code == 429
    assert int(shed.headers["retry-after"]) >= 1
    assert shed.json()["error"]["code"] == "saturated"
    assert all(r.status_code == 200 for r in results)


async def _paced_traffic(
    tmp_path, *, streamed: int, whole: int, spec: FleetSpec | None = None
) -> tuple[list[ReplicaStats], dict[str, float | None]]:
    """Two replicas (``spec``, else a100s at time_scale 0.2), maxPrefillPerEndpoint 1:
    ``streamed`` streamed requests at once (the pool learns prefill time from their first
    tokens), then ``whole`` non-streamed ones at once; every answer must be 200. The
    replicas' counters at the end, and the prefill estimates for 600 prompt tokens: each
    replica's endpoint in the replicas' order, then the pool's under "pool"."""
    tmp_path.mkdir(exist_ok=True)
    port = free_port()
    policy = _policy("  concurrency: {maxPerEndpoint: 32, maxPrefillPerEndpoint: 1}")
    async with (
        Fleet(spec) if spec is not None else _fleet(2, time_scale=0.2) as fleet,
        gateway_on(
            tmp_path, pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}), extra=policy)
        ) as gw,
        httpx.AsyncClient(limits=httpx.Limits(max_connections=100), timeout=60) as client,
    ):
        await wait_scraped(gw, 2)
        url = f"http://127.0.0.1:{port}/v1/completions"

        async def stream(i: int) -> int:
            body = {**_completion(f"paced {i} " * 150, max_tokens=2), "stream": True}
            async with client.stream("POST", url, json=body) as resp:
                await resp.aread()
                return resp.status_code

        assert await asyncio.gather(*(stream(i) for i in range(streamed))) == [200] * streamed
        burst = [client.post(url, json=_completion(f"whole {i} " * 150, 2)) for i in range(whole)]
        assert [r.status_code for r in await asyncio.gather(*burst)] == [200] * whole
        pools = gw.ctx.pools
        estimates = {
            r.url: pools.endpoint_prefill_for(f"127.0.0.1:{r.port}").estimate(600)
            for r in fleet.replicas
        }
        estimates["pool"] = pools.prefill_for(POOL).estimate(600)
        return [r.stats for r in fleet.replicas], estimates


@pytest.mark.single_loop
async def test_prefill_pacing_paces_non_streamed_requests_by_their_estimated_prefill(tmp_path):
    """A non-streamed answer's first token is invisible. Once the pool has seen streamed
    first tokens, a non-streamed request holds a prefill slot for its estimated prefill time,
    so a burst of them reaches each replica about one prefill at a time; with no estimate yet
    (no streamed traffic seen) the same burst is not paced and floods the replicas."""
    paced = [
        s.max_awaiting_first for s in (await _paced_traffic(tmp_path, streamed=12, whole=24))[0]
    ]
    unpaced = [
        s.max_awaiting_first
        for s in (await _paced_traffic(tmp_path / "u", streamed=0, whole=24))[0]
    ]
    assert max(paced) <= 2, paced  # an estimate is no exact bound: a short one lets two overlap
    assert max(unpaced) >= 6, unpaced  # 24 requests at once over 2 replicas


@pytest.mark.single_loop
async def test_scale_from_zero_holds_requests_until_an_endpoint_appears(tmp_path):
    port = free_port()
    async with _fleet(1) as fleet:
        empty = pool_yaml(port, [])
        async with gateway_on(tmp_path, empty) as gw, httpx.AsyncClient(timeout=60) as client:
            activated = asyncio.Event()
            gw.ctx.admission.activation_listeners.append(
                lambda pool, active: activated.set() if active else None
            )
            url = f"http://127.0.0.1:{port}/v1/completions"
            # the connection is open before the clock starts: what is measured is the
            # gateway's time to signal, not TCP set-up on a loaded machine
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            loop = asyncio.get_running_loop()
            first_sent = loop.time()
            writer.write(raw_post("/v1/completions", _completion("cold 0")))
            async with asyncio.timeout(5):
                await activated.wait()
            assert loop.time() - first_sent <= 0.1
            pending = [
                asyncio.create_task(client.post(url, json=_completion(f"cold {i}")))
                for i in range(1, 10)
            ]
            gauge = gw.ctx.metrics.registry.get_sample_value(
                "sluice_pool_activation", {"pool": "default/llama"}
            )
            assert gauge == 1
            await asyncio.sleep(2)  # the scenario: the pool's first replica is ready 2 s later
            (tmp_path / "config.yaml").write_text(
                pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}))
            )
            assert (await gw.reloader.reload()).ok
            async with asyncio.timeout(30):
                results = await asyncio.gather(*pending)
        async with asyncio.timeout(30):
            first = await reader.readuntil(b"\r\n")
        writer.close()
    assert first.startswith(b"HTTP/1.1 200")
    assert [r.status_code for r in results] == [200] * 9


@pytest.mark.single_loop
async def test_prefill_pacing_bounds_requests_awaiting_their_first_token(tmp_path):
    """With maxPrefillPerEndpoint 1, a replica never holds two streamed requests that have
    not produced their first token; the rest wait in the gateway's priority queue."""
    stats, _ = await _paced_traffic(tmp_path, streamed=40, whole=0)
    assert sum(s.served for s in stats) == 40
    assert max(s.max_awaiting_first for s in stats) == 1, [s.max_awaiting_first for s in stats]


@pytest.mark.single_loop
async def test_each_endpoint_learns_its_own_prefill_speed(tmp_path):
    """Replicas on different accelerators prefill at different speeds: each endpoint's
    estimate follows its own (the pool's is their blend), so a non-streamed request on the
    slow replica holds its prefill slot longer."""
    # time_scale 1: prefill, not the event loop this test shares, makes the time to first token
    spec = FleetSpec(replicas=(ReplicaSpec(speed=1.0), ReplicaSpec(speed=0.2)), time_scale=1.0)
    _, estimates = await _paced_traffic(tmp_path, streamed=64, whole=0, spec=spec)
    pool = estimates.pop("pool")
    fast, slow = estimates.values()  # in the replicas' order
    assert fast is not None
    assert slow is not None
    assert pool is not None
    assert fast < pool < slow
    assert slow > 2 * fast, (fast, slow)  # 5x slower steps (measured ~5x, also on a busy CPU)


SHED_GAUGE = "sluice_pool_sheddable_limit_ratio"


def _shedding_policy(objective: str, extra: str = "") -> str:
    return _policy(
        "  concurrency: {maxPerEndpoint: 20, sheddableLimit: 0.25, "
        f"sheddableTTFTObjective: {objective}}}{extra}"
    )


async def _adaptive_shedding(
    tmp_path, objective: str, *, sheddable: bool, reloads: tuple[str, ...] = ()
) -> list[float]:
    """One replica, 20 slots, sheddableLimit 0.25 adapted to ``objective``. Rounds of eight
    streamed requests at once (sheddable ones, or critical ones), at most 40 rounds, until the
    limit moves; then a reload to each of ``reloads`` (TrafficPolicy documents), each followed
    by one request (admission takes a pool's new settings with its next request). The limit's
    values seen, in order."""
    port = free_port()
    policy = _shedding_policy(objective)
    headers = {"x-gateway-inference-objective": "batch"} if sheddable else {}
    async with (
        _fleet(1, time_scale=0.5) as fleet,
        gateway_on(
            tmp_path,
            pool_yaml(
                port, fleet.endpoint_slices_yaml({"app": "llama"}), extra=policy + OBJECTIVES
            ),
        ) as gw,
        httpx.AsyncClient(limits=httpx.Limits(max_connections=50), timeout=60) as client,
    ):
        await wait_scraped(gw, 1)
        url = f"http://127.0.0.1:{port}/v1/completions"

        async def stream(i: int) -> int:
            body = {**_completion(f"adaptive {i}", max_tokens=8), "stream": True}
            async with client.stream("POST", url, json=body, headers=headers) as resp:
                await resp.aread()
                return resp.status_code

        seen = [gauge(gw, SHED_GAUGE, pool=POOL)]
        async with asyncio.timeout(60):
            for round_no in range(40):
                statuses = await asyncio.gather(*(stream(8 * round_no + i) for i in range(8)))
                assert set(statuses) <= ({200, 429} if sheddable else {200}), statuses
                seen.append(gauge(gw, SHED_GAUGE, pool=POOL))
                if seen[-1] != seen[0]:
                    break
        slices = fleet.endpoint_slices_yaml({"app": "llama"})
        for text in reloads:
            (tmp_path / "config.yaml").write_text(pool_yaml(port, slices, extra=text + OBJECTIVES))
            assert (await gw.reloader.reload()).ok
            assert await stream(-1) in (200, 429)  # a pool's admission takes its new settings
            seen.append(gauge(gw, SHED_GAUGE, pool=POOL))
        return seen


async def test_an_adaptive_sheddable_limit_grows_while_it_refuses_and_critical_work_is_fast(
    tmp_path,
):
    # eight sheddable requests at once against five slots: some are refused each round; no
    # critical request is slow (there are none), so the limit grows by a step each second
    # then a reload that leaves the limit's settings alone keeps where it has got to, and one
    # that changes them starts again from sheddableLimit
    reloads = (_shedding_policy("10s", "\n  queue: {maxRequests: 500}"), _shedding_policy("20s"))
    seen = await _adaptive_shedding(tmp_path, "10s", sheddable=True, reloads=reloads)
    assert seen[0] == 0.25
    assert seen[-3:] == [pytest.approx(0.30), pytest.approx(0.30), 0.25]


async def test_an_adaptive_sheddable_limit_shrinks_when_critical_ttft_exceeds_the_objective(
    tmp_path,
):
    # every critical first token takes longer than 1 ms: the p90 is over the objective
    seen = await _adaptive_shedding(tmp_path, "1ms", sheddable=False)
    assert seen[0] == 0.25
    assert seen[-1] == pytest.approx(0.25 * 0.75)
