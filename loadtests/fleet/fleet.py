"""A fleet of simulated replicas in one process, and its description as Kubernetes EndpointSlices.

`Fleet` only starts and stops replicas and describes them; all behaviour lives in `Replica`.
"""

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from .replica import Replica
from .spec import FleetSpec

ENGINE_TYPE_LABEL = "inference.networking.k8s.io/engine-type"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"


class Fleet:
    """Start with `async with Fleet(spec) as fleet:`; replicas bind port 0 unless their spec
    sets one, so read `fleet.replicas[i].port` / `.url` after entering."""

    def __init__(self, spec: FleetSpec, *, host: str = "127.0.0.1") -> None:
        self.spec = spec
        self.host = host
        self.replicas = tuple(
            Replica(r, index=i, seed=spec.seed, time_scale=spec.time_scale, host=host)
            for i, r in enumerate(spec.replicas)
        )
        names = [r.name for r in self.replicas]
        ports = [r.spec.port for r in self.replicas if r.spec.port]
        if len(set(names)) != len(names) or len(set(ports)) != len(ports):
            raise ValueError("replica names and fixed ports must be unique")

    async def start(self) -> None:
        try:
            for replica in self.replicas:
                await replica.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for replica in self.replicas:
            await replica.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def replica(self, name: str) -> Replica:
        for replica in self.replicas:
            if replica.name == name:
                return replica
        raise KeyError(name)

    def endpoint_slices_yaml(
        self,
        service_or_pool_labels: Mapping[str, str] | None = None,
        *,
        namespace: str = "default",
        name_prefix: str = "fleet",
        port_name: str = "http",
    ) -> list[dict[str, Any]]:
        """`discovery.k8s.io/v1` EndpointSlice documents (YAML-ready dicts), one per replica.

        Every replica listens on its own port, so each gets a slice with that port. Labels:
        `service_or_pool_labels` (e.g. `{"kubernetes.io/service-name": "llama"}` for a Service,
        or an InferencePool's selector labels) plus the replica's engine type. Dump them with
        `yaml.safe_dump_all(...)`.
        """
        base = dict(service_or_pool_labels or {})
        return [
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name_prefix}-{replica.name}",
                    "namespace": namespace,
                    "labels": {
                        **base,
                        ENGINE_TYPE_LABEL: str(replica.spec.engine),
                        MANAGED_BY_LABEL: "sluice-fleet",
                    },
                },
                "addressType": "IPv6" if ":" in self._address else "IPv4",
                "ports": [{"name": port_name, "port": replica.port, "protocol": "TCP"}],
                "endpoints": [
                    {
                        "addresses": [self._address],
                        "conditions": {"ready": True, "serving": True, "terminating": False},
                    }
                ],
            }
            for replica in self.replicas
        ]

    @property
    def _address(self) -> str:
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
