"""The gateway under test: its generated config, its process, and the admin calls a reconciler
makes (`POST /reload` after rewriting the EndpointSlices, `GET /autoscaling/{ns}/{pool}`).

Each policy gets its own `sluice serve` process on free ports of 127.0.0.1, started and stopped
here (SIGTERM, then SIGKILL); readiness is polled in a bounded loop.
"""

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from ..benchsupport import write_atomically
from ..fleet import ENGINE_TYPE_LABEL, Replica
from ..targets import HOST, running_process, sluice_serve

NAMESPACE = "default"
READY_TIMEOUT_S = 30.0
ADMIN_TIMEOUT_S = 5.0


def static_docs(
    *, port: int, pool: str, traffic: Mapping[str, Any], request_timeout_s: float
) -> list[dict[str, Any]]:
    """Gateway → HTTPRoute (/v1) → InferencePool, and the pool's TrafficPolicy."""
    ns = {"namespace": NAMESPACE}
    return [
        _doc("gateway.networking.k8s.io/v1", "GatewayClass", {"name": "sluice"},
             {"controllerName": "sluice.dev/gateway-controller"}),
        _doc("gateway.networking.k8s.io/v1", "Gateway", {"name": "closed-loop", **ns},
             {"gatewayClassName": "sluice",
              "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}]}),
        _doc("gateway.networking.k8s.io/v1", "HTTPRoute", {"name": "llm", **ns},
             {"parentRefs": [{"name": "closed-loop"}],
              "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                         "backendRefs": [{"group": "inference.networking.k8s.io",
                                          "kind": "InferencePool", "name": pool}],
                         "timeouts": {"request": f"{request_timeout_s:g}s"}}]}),
        _doc("inference.networking.k8s.io/v1", "InferencePool", {"name": pool, **ns},
             {"selector": {"matchLabels": {"app": pool}}, "targetPorts": [{"number": 8000}]}),
        _doc("sluice.dev/v1alpha1", "TrafficPolicy", {"name": f"{pool}-traffic", **ns},
             dict(traffic)),
    ]  # fmt: skip


def endpoint_slices(pool: str, replicas: Sequence[Replica]) -> list[dict[str, Any]]:
    """One ready EndpointSlice per serving replica, labelled with the pool's selector."""
    return [
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{pool}-{r.name}",
                "namespace": NAMESPACE,
                "labels": {"app": pool, ENGINE_TYPE_LABEL: str(r.spec.engine)},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": r.port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [HOST], "conditions": {"ready": True}}],
        }
        for r in replicas
    ]


def _doc(api: str, kind: str, meta: Mapping[str, str], spec: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": dict(meta), "spec": dict(spec)}


class ReloadError(RuntimeError):
    """The gateway refused a config the reconciler wrote."""


class GatewayLink:
    """Writes the config (static documents + the serving replicas' EndpointSlices) and, once
    the gateway runs, asks it to reload; reads its autoscaling recommendation."""

    def __init__(
        self, *, config_path: Path, static: Sequence[Mapping[str, Any]], pool: str, admin_port: int
    ) -> None:
        self.config_path = config_path
        self.static = tuple(static)
        self.pool = pool
        self.admin_url = f"http://{HOST}:{admin_port}"
        self.session: aiohttp.ClientSession | None = None  # set while the gateway runs
        self.reloads = 0

    def write(self, replicas: Sequence[Replica]) -> None:
        docs = [*self.static, *endpoint_slices(self.pool, replicas)]
        write_atomically(self.config_path, yaml.safe_dump_all(docs, sort_keys=False))

    async def publish(self, replicas: Sequence[Replica]) -> None:
        """Write the config; reload the gateway if it runs. ReloadError if it refuses."""
        self.write(replicas)
        if self.session is None:
            return
        async with self.session.post(f"{self.admin_url}/reload") as resp:
            body = await resp.json()
        self.reloads += 1
        if not body.get("ok"):
            raise ReloadError(f"reload refused: {body.get('issues')}")

    async def autoscaling(self) -> dict[str, Any]:
        assert self.session is not None
        url = f"{self.admin_url}/autoscaling/{NAMESPACE}/{self.pool}"
        async with self.session.get(url) as resp:
            resp.raise_for_status()
            body: dict[str, Any] = await resp.json()
        return body


@contextlib.asynccontextmanager
async def running_gateway(link: GatewayLink, port: int, log_path: Path) -> AsyncIterator[int]:
    """`sluice serve` on the link's config (no file watch: the reconciler reloads); yields its
    pid once /readyz answers, with `link.session` set until it stops."""
    admin_port = int(link.admin_url.rsplit(":", 1)[1])
    cmd = sluice_serve(link.config_path, admin_port)
    ready = f"{link.admin_url}/readyz"
    timeout = aiohttp.ClientTimeout(total=ADMIN_TIMEOUT_S)
    async with (
        running_process(cmd, log_path, ready, READY_TIMEOUT_S) as proc,
        aiohttp.ClientSession(timeout=timeout) as session,
    ):
        link.session = session
        try:
            yield proc.pid
        finally:
            link.session = None
