"""KEDA external scaler (``externalscaler.ExternalScaler``) over gRPC, on its own port.

A ScaledObject's trigger names the pool in its metadata (``pool: name`` or
``pool: namespace/name``; the namespace defaults to the ScaledObject's). The metric is the
recommended replica count with a target of 1 per replica, so KEDA's HPA (AverageValue)
arrives at exactly Sluice's recommendation, safety margin included. ``IsActive`` is true while
the pool has demand — queued (also at zero replicas: the activation signal), in flight, or
measured above zero — and false when idle, so KEDA can scale it to zero after its cooldown;
``StreamIsActive`` pushes every change as it happens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import grpc

from gateway.admission import Admissions
from gateway.autoscaling import Autoscaling
from gateway.kedaproto import (
    MetricSpec,
    MetricValue,
    ScaledObjectRef,
    decode_metrics_request,
    decode_ref,
    encode_bool_response,
    encode_metric_specs,
    encode_metric_values,
)
from routing.autoscale import Recommendation
from routing.table import RoutingTable

__all__ = ["METRIC_NAME", "KedaScaler"]

log = logging.getLogger("sluice.keda")
SERVICE = "externalscaler.ExternalScaler"
METRIC_NAME = "sluice-desired-replicas"


class KedaScaler:
    def __init__(
        self, autoscaling: Autoscaling, admission: Admissions, table: Callable[[], RoutingTable]
    ) -> None:
        self._autoscaling = autoscaling
        self._admission = admission
        self._table = table
        self._subscribers: dict[str, list[asyncio.Queue[bool]]] = {}
        self._server: grpc.aio.Server | None = None
        admission.activation_listeners.append(self._on_activation)
        autoscaling.listeners.append(self._on_recommendation)

    async def start(self, address: str) -> int:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((self._handlers(),))
        port = int(server.add_insecure_port(address))
        await server.start()
        self._server = server
        log.info("KEDA external scaler on %s (port %d)", address, port)
        return port

    async def close(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=1.0)

    def _handlers(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "IsActive": grpc.unary_unary_rpc_method_handler(
                    self._is_active, decode_ref, encode_bool_response
                ),
                "StreamIsActive": grpc.unary_stream_rpc_method_handler(
                    self._stream_is_active, decode_ref, encode_bool_response
                ),
                "GetMetricSpec": grpc.unary_unary_rpc_method_handler(
                    self._metric_spec, decode_ref, encode_metric_specs
                ),
                "GetMetrics": grpc.unary_unary_rpc_method_handler(
                    self._metrics, decode_metrics_request, encode_metric_values
                ),
            },
        )

    def pool_key(self, ref: ScaledObjectRef) -> str:
        name = ref.metadata.get("pool") or ref.name
        return name if "/" in name else f"{ref.namespace or 'default'}/{name}"

    def is_active(self, pool: str) -> bool:
        settings = self._table().pools.get(pool)
        if settings is None:
            return False
        state = self._admission.pool(settings)
        if state.queue.queued or state.queue.in_flight:
            return True
        latest = self._autoscaling.latest.get(pool)
        # demand, not the recommendation: that stays at 1 or more while a pool has replicas
        # (it never halves below one), so a pool KEDA may scale to zero would never get there
        return latest is not None and latest[1].active

    def desired(self, pool: str) -> float:
        latest = self._autoscaling.latest.get(pool)
        return float(latest[1].desired) if latest is not None else 0.0

    async def _known(self, ref: ScaledObjectRef, context: object) -> str:
        """The pool a ScaledObject names; NOT_FOUND when no such pool is configured (a typo
        must not read as an idle pool: KEDA would scale its deployment to zero)."""
        pool = self.pool_key(ref)
        if pool not in self._table().pools:
            await cast(grpc.aio.ServicerContext[Any, Any], context).abort(
                grpc.StatusCode.NOT_FOUND, f"no InferencePool {pool} is configured"
            )
        return pool

    async def _is_active(self, ref: ScaledObjectRef, context: object) -> bool:
        return self.is_active(await self._known(ref, context))

    async def _stream_is_active(self, ref: ScaledObjectRef, context: object) -> AsyncIterator[bool]:
        pool = await self._known(ref, context)
        queue: asyncio.Queue[bool] = asyncio.Queue(maxsize=64)
        self._subscribers.setdefault(pool, []).append(queue)
        try:
            last = self.is_active(pool)
            yield last
            while True:
                active = await queue.get()
                if active != last:
                    last = active
                    yield active
        finally:
            self._subscribers[pool].remove(queue)

    async def _metric_spec(self, ref: ScaledObjectRef, context: object) -> list[MetricSpec]:
        return [MetricSpec(name=METRIC_NAME, target=1.0)]

    async def _metrics(
        self, request: tuple[ScaledObjectRef, str], context: object
    ) -> list[MetricValue]:
        ref, metric = request
        pool = await self._known(ref, context)
        return [MetricValue(name=metric or METRIC_NAME, value=self.desired(pool))]

    def _on_activation(self, pool: str, active: bool) -> None:
        self._push(pool)

    def _on_recommendation(self, pool: str, recommendation: Recommendation) -> None:
        self._push(pool)

    def _push(self, pool: str) -> None:
        subscribers = self._subscribers.get(pool)
        if not subscribers:
            return
        active = self.is_active(pool)
        for queue in subscribers:
            if not queue.full():
                queue.put_nowait(active)
