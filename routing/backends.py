"""Resolve backendRefs to targets, the Kubernetes way, outside a cluster.

Service: backendRef port → Service port (its name) → EndpointSlices labelled
``kubernetes.io/service-name`` in the same namespace → the slice port with the same name →
ready addresses × that port. The Service's targetPort is not where the backend listens.
InferencePool: its Pods when the config has them (always when it comes from a cluster's API):
each pod IP on each of the pool's targetPorts is an endpoint (one per port, as for
data-parallel ranks), carrying the pod's labels. Otherwise EndpointSlices whose labels match
the pool's selector stand in for its Pods: each ready address is a pod, served on the slice's
ports when the slice lists any, else on the pool's targetPorts.
Cross-namespace references need a ReferenceGrant in the target namespace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from routing import model as m

__all__ = [
    "ACCEPTED_CONTROLLERS",
    "Endpoint",
    "InvalidTarget",
    "PoolTarget",
    "Resolver",
    "ServiceTarget",
    "Target",
    "is_pod_selected",
    "reads_object",
    "referenced_objects",
    "unserved_reason",
]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ENGINE_LABEL = "inference.networking.k8s.io/engine-type"


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    address: str
    port: int
    labels: tuple[tuple[str, str], ...] = ()
    # Pool endpoints keep not-ready members so a multi-host group can be judged as a whole;
    # they are never picked.
    ready: bool = True

    @property
    def key(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    def label(self, name: str, default: str = "") -> str:
        for k, v in self.labels:
            if k == name:
                return v
        return default


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceTarget:
    name: str
    endpoints: tuple[Endpoint, ...]
    app_protocol: str | None = None

    @property
    def ready_endpoints(self) -> tuple[Endpoint, ...]:
        return self.endpoints


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolTarget:
    name: str
    endpoints: tuple[Endpoint, ...]
    pool: m.InferencePool

    @property
    def ready_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.ready)


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidTarget:
    name: str
    reason: str
    # the Gateway API's reason for a route's ResolvedRefs=False
    code: str = "BackendNotFound"  # or RefNotPermitted, InvalidKind


Target = ServiceTarget | PoolTarget | InvalidTarget


class Resolver:
    """Indexes services, slices, pools and grants of one config for reference resolution."""

    def __init__(self, config: m.Config) -> None:
        self._services = {s.meta.key: s for s in config.services}
        self._pools = {p.meta.key: p for p in config.pools}
        self._slices = config.slices
        self._pods = config.pods if config.pools_select_pods else None
        self._grants = config.grants
        self._cache: dict[tuple[str, m.ObjectRef], Target] = {}

    def resolve(self, ref: m.ObjectRef, *, from_kind: str, from_ns: str) -> Target:
        """The target of ``ref`` written in a ``from_kind`` object of namespace ``from_ns``."""
        cache_key = (f"{from_kind}/{from_ns}", ref)
        if cache_key not in self._cache:
            self._cache[cache_key] = self._resolve(ref, from_kind, from_ns)
        return self._cache[cache_key]

    def _resolve(self, ref: m.ObjectRef, from_kind: str, from_ns: str) -> Target:
        ns = ref.namespace or from_ns
        label = f"{ns}/{ref.name}"
        if ns != from_ns and not self.is_permitted(ref, ns, from_kind=from_kind, from_ns=from_ns):
            reason = f"no ReferenceGrant in {ns} allows {label}"
            return InvalidTarget(name=label, reason=reason, code="RefNotPermitted")
        if ref.group == "" and ref.kind == "Service":
            return self._service(ref, ns)
        if ref.kind == "InferencePool" and ref.group in (m.INFERENCE_GROUP, m.INFERENCE_X_GROUP):
            return self._pool(label)
        reason = f"unsupported backend kind {ref.group}/{ref.kind}"
        return InvalidTarget(name=label, reason=reason, code="InvalidKind")

    def is_permitted(self, ref: m.ObjectRef, ns: str, *, from_kind: str, from_ns: str) -> bool:
        for grant in self._grants:
            if grant.meta.namespace != ns:
                continue
            source_ok = any(
                g == m.GATEWAY_GROUP and k == from_kind and n == from_ns
                for g, k, n in grant.grants_from
            )
            target_ok = any(
                g == ref.group and k == ref.kind and (n is None or n == ref.name)
                for g, k, n in grant.grants_to
            )
            if source_ok and target_ok:
                return True
        return False

    def _service(self, ref: m.ObjectRef, ns: str) -> Target:
        label = f"{ns}/{ref.name}"
        service = self._services.get(label)
        if service is None:
            return InvalidTarget(name=label, reason=f"Service {label} not found")
        if ref.port is None:
            return InvalidTarget(name=label, reason="a Service backendRef needs a port")
        port = next((p for p in service.ports if p.port == ref.port), None)
        if port is None:
            return InvalidTarget(name=label, reason=f"Service {label} has no port {ref.port}")
        endpoints: list[Endpoint] = []
        for slice_ in self._slices:
            labels = slice_.meta.label_map()
            if slice_.meta.namespace != ns or labels.get(SERVICE_NAME_LABEL) != ref.name:
                continue
            slice_port = next((p for p in slice_.ports if p.name == port.name), None)
            if slice_port is None:
                continue
            endpoints.extend(
                Endpoint(address=address, port=slice_port.port, labels=ep.labels)
                for ep in slice_.endpoints
                if ep.ready
                for address in ep.addresses
            )
        return ServiceTarget(
            name=f"{label}:{ref.port}",
            endpoints=_unique(endpoints),
            app_protocol=port.app_protocol,
        )

    def _pool(self, label: str) -> Target:
        pool = self._pools.get(label)
        if pool is None:
            return InvalidTarget(name=label, reason=f"InferencePool {label} not found")
        # Sluice is the endpoint picker (DESIGN.md), so an endpointPickerRef is not called;
        # but one naming a Service that does not exist is an unresolved reference
        # (ResolvedRefs=False, InvalidExtensionRef), and the pool does not serve.
        picker = pool.endpoint_picker
        if picker is not None and picker.group == "" and picker.kind == "Service":
            picker_key = f"{pool.meta.namespace}/{picker.name}"
            if picker_key not in self._services:
                return InvalidTarget(
                    name=label, reason=f"endpointPickerRef: Service {picker_key} not found"
                )
        return PoolTarget(name=label, endpoints=self.pool_endpoints(pool), pool=pool)

    def pool_endpoints(self, pool: m.InferencePool) -> tuple[Endpoint, ...]:
        if self._pods is not None:
            return self._pod_endpoints(pool, self._pods)
        endpoints: list[Endpoint] = []
        for slice_ in self._slices:
            if slice_.meta.namespace != pool.meta.namespace:
                continue
            if not pool.selector.match_labels and not pool.selector.match_expressions:
                continue
            labels = slice_.meta.label_map()
            if not pool.selector.matches(labels):
                continue
            ports = [p.port for p in slice_.ports] or list(pool.target_ports)
            for ep in slice_.endpoints:
                merged = tuple(sorted({**labels, **dict(ep.labels)}.items()))
                endpoints.extend(
                    Endpoint(address=a, port=p, labels=merged, ready=ep.ready)
                    for a in ep.addresses
                    for p in ports
                )
        return _unique(endpoints)

    @staticmethod
    def _pod_endpoints(pool: m.InferencePool, pods: tuple[m.Pod, ...]) -> tuple[Endpoint, ...]:
        if not pool.selector.match_labels and not pool.selector.match_expressions:
            return ()  # an empty selector selects nothing here, as for slices
        endpoints = [
            Endpoint(address=ip, port=port, labels=tuple(sorted(pod.meta.labels)), ready=pod.ready)
            for pod in pods
            if pod.meta.namespace == pool.meta.namespace and pod.ips
            if pool.selector.matches(pod.meta.label_map())
            for ip in pod.ips[:1]  # dual-stack pods: one endpoint per pod, on its first IP
            for port in pool.target_ports
        ]
        return _unique(endpoints)


def is_pod_selected(
    pools: Iterable[m.InferencePool], namespace: str, labels: Mapping[str, str]
) -> bool:
    """Whether a pod with these labels in ``namespace`` belongs to any of ``pools``."""
    return any(
        p.meta.namespace == namespace
        and bool(p.selector.match_labels or p.selector.match_expressions)
        and p.selector.matches(dict(labels))
        for p in pools
    )


ACCEPTED_CONTROLLERS = frozenset({"sluice.dev/gateway-controller", "sluice/gateway-controller"})


def unserved_reason(config: m.Config, gateway: m.Gateway) -> str | None:
    """Why Sluice does not serve ``gateway`` (None: it does): its GatewayClass names another
    controller, or, in a cluster, is not there (a Gateway of a class not yet there is
    nobody's to serve)."""
    cls = next((c for c in config.gateway_classes if c.meta.name == gateway.class_name), None)
    if cls is None:
        return f"no GatewayClass {gateway.class_name}" if config.from_cluster else None
    if cls.controller_name not in ACCEPTED_CONTROLLERS:
        return f"class {gateway.class_name} belongs to {cls.controller_name}"
    return None


def referenced_objects(config: m.Config) -> frozenset[tuple[str, str, str]]:
    """(kind, namespace, name) of every Service a route's backendRef or mirror, or a pool's
    endpointPickerRef, names, and of every Secret a listener's certificateRef names: the
    only Services (and their EndpointSlices) and Secrets a table reads."""
    out: set[tuple[str, str, str]] = set()

    def add(ref: m.ObjectRef, namespace: str) -> None:
        if ref.group == m.CORE_GROUP and ref.kind in ("Service", "Secret"):
            out.add((ref.kind, ref.namespace or namespace, ref.name))

    for route in config.routes:
        ns = route.meta.namespace
        for rule in route.rules:
            filters = list(rule.filters)
            for backend in rule.backend_refs:
                add(backend.ref, ns)
                filters.extend(backend.filters)
            for f in filters:
                if f.mirror is not None:
                    add(f.mirror.backend, ns)
    for pool in config.pools:
        if pool.endpoint_picker is not None:
            add(pool.endpoint_picker, pool.meta.namespace)
    for gateway in config.gateways:
        if unserved_reason(config, gateway) is not None:
            continue  # another controller's certificates are not Sluice's to read
        for listener in gateway.listeners:
            for ref in listener.tls.certificate_refs if listener.tls else ():
                if ref.kind == "Secret":
                    add(ref, gateway.meta.namespace)
    return frozenset(out)


def reads_object(
    config: m.Config,
    referenced: frozenset[tuple[str, str, str]],
    kind: str,
    namespace: str,
    name: str,
    labels: Mapping[str, str],
) -> bool:
    """Whether a table built from ``config`` (whose ``referenced_objects`` are
    ``referenced``) reads this Pod, Service, EndpointSlice or Secret; True for every other
    kind."""
    if kind == "Pod":
        return is_pod_selected(config.pools, namespace, labels)
    if kind in ("Service", "Secret"):
        return (kind, namespace, name) in referenced
    if kind == "EndpointSlice":
        return ("Service", namespace, labels.get(SERVICE_NAME_LABEL, "")) in referenced
    return True


def _unique(endpoints: list[Endpoint]) -> tuple[Endpoint, ...]:
    """One endpoint per address and port; a ready one wins (an IP a finished pod held may
    belong to a new pod now)."""
    seen: dict[str, Endpoint] = {}
    for ep in endpoints:
        if ep.key not in seen or (ep.ready and not seen[ep.key].ready):
            seen[ep.key] = ep
    return tuple(seen.values())
