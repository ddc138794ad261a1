"""Autoscaler signals on real sockets: KEDA's gRPC contract, the metrics-api JSON, /metrics."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest

from gateway.app import running_gateway
from gateway.kedaproto import (
    ScaledObjectRef,
    decode_bool_response,
    decode_metric_specs,
    decode_metric_values,
    encode_metrics_request,
    encode_ref,
)
from loadtests.fleet import Fleet, FleetSpec, ReplicaSpec
from tests.component.harness import free_port, pool_yaml, raw_post, wait_scraped

SERVICE = "/externalscaler.ExternalScaler/"
REF = ScaledObjectRef(name="llama-scaler", namespace="default", metadata={"pool": "llama"})


def _is_active(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(
        SERVICE + "IsActive", request_serializer=encode_ref,
        response_deserializer=decode_bool_response,
    )  # fmt: skip


def _get_metrics(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(
        SERVICE + "GetMetrics", request_serializer=lambda r: encode_metrics_request(*r),
        response_deserializer=decode_metric_values,
    )  # fmt: skip


async def _start(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return running_gateway(
        [str(path)],
        address="127.0.0.1",
        admin_port=0,
        watch_interval_s=None,
        keda_address="127.0.0.1:0",
        autoscaling_interval_s=0.05,
    )


@pytest.mark.single_loop
async def test_first_request_at_zero_replicas_activates_the_keda_scaler_within_100ms(tmp_path):
    port = free_port()
    async with (
        await _start(tmp_path, pool_yaml(port, [])) as gw,
        grpc.aio.insecure_channel(f"127.0.0.1:{gw.keda_port}") as channel,
    ):
        is_active = _is_active(channel)
        stream = channel.unary_stream(
            SERVICE + "StreamIsActive", request_serializer=encode_ref,
            response_deserializer=decode_bool_response,
        )(REF)  # fmt: skip
        assert await is_active(REF) is False
        async with asyncio.timeout(5):
            assert await stream.read() is False  # the current state, first
        # the connection is open before the clock starts (TCP set-up is not the scaler's)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        writer.write(
            raw_post("/v1/completions", {"model": "m", "prompt": "wake up", "max_tokens": 2})
        )
        async with asyncio.timeout(5):
            pushed = await stream.read()
        pushed_after = loop.time() - sent
        assert pushed is True
        assert pushed_after <= 0.1, pushed_after
        assert await is_active(REF) is True
        stream.cancel()
        writer.close()


@pytest.mark.single_loop
async def test_metric_spec_metrics_api_and_pool_metrics_agree(tmp_path):
    port = free_port()
    policy = """
---
apiVersion: sluice.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: t, namespace: default}
spec:
  targetRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: llama}]
  autoscaling: {targetPerReplica: 4, headroom: 0.5, minReplicas: 1, maxReplicas: 8}
"""
    fleet = Fleet(FleetSpec(replicas=(ReplicaSpec(),) * 2, time_scale=0.05))
    async with (
        fleet,
        await _start(
            tmp_path, pool_yaml(port, fleet.endpoint_slices_yaml({"app": "llama"}), extra=policy)
        ) as gw,
        grpc.aio.insecure_channel(f"127.0.0.1:{gw.keda_port}") as channel,
    ):
        await wait_scraped(gw, 2)
        gw.ctx.autoscaling.sample()
        specs = await channel.unary_unary(
            SERVICE + "GetMetricSpec", request_serializer=encode_ref,
            response_deserializer=decode_metric_specs,
        )(REF)  # fmt: skip
        values = await _get_metrics(channel)((REF, specs[0].name))
        # idle with replicas: not active, so a ScaledObject with minReplicaCount 0 can take
        # the pool to zero after its cooldown (the recommendation alone never goes below 1)
        active = await _is_active(channel)(REF)
        async with httpx.AsyncClient() as client:
            api = (
                await client.get(f"http://127.0.0.1:{gw.admin_port}/autoscaling/default/llama")
            ).json()
            text = (await client.get(f"http://127.0.0.1:{gw.admin_port}/metrics")).text
    assert specs[0].target == 1.0
    assert values[0].value == api["desiredReplicas"] == 1  # idle: minReplicas
    assert active is False
    assert api["readyReplicas"] == 2
    assert api["headroom"] == 0.5
    assert 'inference_pool_ready_pods{name="default/llama"} 2.0' in text
    assert 'sluice_pool_desired_replicas{pool="default/llama"} 1.0' in text


async def test_a_scaled_object_naming_no_configured_pool_gets_not_found(tmp_path):
    # a typo must not read as an idle pool (inactive, 0 replicas): KEDA would scale the
    # deployment to zero
    port = free_port()
    typo = ScaledObjectRef(name="s", namespace="default", metadata={"pool": "lama"})
    async with (
        await _start(tmp_path, pool_yaml(port, [])) as gw,
        grpc.aio.insecure_channel(f"127.0.0.1:{gw.keda_port}") as channel,
    ):
        is_active = _is_active(channel)
        metrics = _get_metrics(channel)
        with pytest.raises(grpc.aio.AioRpcError) as inactive:
            await is_active(typo)
        with pytest.raises(grpc.aio.AioRpcError) as valued:
            await metrics((typo, "sluice-desired-replicas"))
        assert await is_active(REF) is False  # the configured pool still answers
    assert inactive.value.code() == grpc.StatusCode.NOT_FOUND
    assert "default/lama" in (inactive.value.details() or "")
    assert valued.value.code() == grpc.StatusCode.NOT_FOUND
