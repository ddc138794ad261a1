"""Frozen model of the Kubernetes resources Sluice reads.

These are the parsed resources, one class per kind, in Python spelling. Only
``routing/config.py`` knows the YAML spelling; only ``routing/table.py`` turns them into the
compiled routing table. Nothing here does I/O or holds live state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from routing.autoscale import AutoscaleSpec
from routing.pipeline import Profile
from routing.presets import Preset

if TYPE_CHECKING:  # rolloutconfig reads this module's constants when it loads
    from routing.rolloutconfig import RolloutSpec

__all__ = [
    "AllowedFrom",
    "BackendRef",
    "Config",
    "CorsPolicy",
    "EndpointSlice",
    "Gateway",
    "GatewayClass",
    "HTTPRoute",
    "HeaderMatch",
    "HeaderModifier",
    "InferencePool",
    "Listener",
    "ListenerTLS",
    "MatchKind",
    "Meta",
    "Namespace",
    "ObjectRef",
    "ParentRef",
    "PathKind",
    "PathMatch",
    "PathModifier",
    "QueryMatch",
    "ReferenceGrant",
    "RequestMirror",
    "RequestRedirect",
    "RetryPolicy",
    "RouteFilter",
    "RouteMatch",
    "RouteRule",
    "Secret",
    "Service",
    "ServicePort",
    "SliceEndpoint",
    "SlicePort",
    "Timeouts",
    "URLRewrite",
]

CORE_GROUP = ""
GATEWAY_GROUP = "gateway.networking.k8s.io"
INFERENCE_GROUP = "inference.networking.k8s.io"
INFERENCE_X_GROUP = "inference.networking.x-k8s.io"
SLUICE_GROUP = "sluice.dev"


class PathKind(enum.StrEnum):
    EXACT = "Exact"
    PREFIX = "PathPrefix"
    REGEX = "RegularExpression"


class MatchKind(enum.StrEnum):
    EXACT = "Exact"
    REGEX = "RegularExpression"


class AllowedFrom(enum.StrEnum):
    SAME = "Same"
    ALL = "All"
    SELECTOR = "Selector"


class PathModifierKind(enum.StrEnum):
    FULL = "ReplaceFullPath"
    PREFIX = "ReplacePrefixMatch"


@dataclass(frozen=True, slots=True, kw_only=True)
class Meta:
    """Object identity plus where it came from (file, document index) for error messages."""

    name: str
    namespace: str
    labels: tuple[tuple[str, str], ...] = ()
    creation: str = ""
    source: str = ""
    document: int = 0
    generation: int = 0  # metadata.generation (a cluster's), for status' observedGeneration

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelSelector:
    match_labels: tuple[tuple[str, str], ...] = ()
    # (key, operator, values) with operator In, NotIn, Exists, DoesNotExist
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels):
            return False
        for key, op, values in self.match_expressions:
            present = key in labels
            if op == "In" and not (present and labels[key] in values):
                return False
            if op == "NotIn" and present and labels[key] in values:
                return False
            if op == "Exists" and not present:
                return False
            if op == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class Namespace:
    meta: Meta


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayClass:
    meta: Meta
    controller_name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerTLS:
    """A listener's ``tls``: ``Terminate`` with the Secrets holding its certificates."""

    mode: str = "Terminate"
    certificate_refs: tuple[ObjectRef, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Secret:
    """A Secret's certificate (``tls.crt``: PEM, leaf first, then its chain) and private key
    (``tls.key``: PEM); its other keys are not read."""

    meta: Meta
    type: str
    certificate: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)  # never in a log line


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    name: str
    port: int
    protocol: str
    hostname: str | None = None
    allowed_from: AllowedFrom = AllowedFrom.SAME
    allowed_selector: LabelSelector | None = None
    allowed_kinds: tuple[tuple[str, str], ...] = ()
    tls: ListenerTLS | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Gateway:
    meta: Meta
    class_name: str
    listeners: tuple[Listener, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ParentRef:
    group: str = GATEWAY_GROUP
    kind: str = "Gateway"
    name: str
    namespace: str | None = None
    section_name: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PathMatch:
    kind: PathKind = PathKind.PREFIX
    value: str = "/"


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderMatch:
    kind: MatchKind = MatchKind.EXACT
    name: str
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryMatch:
    kind: MatchKind = MatchKind.EXACT
    name: str
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteMatch:
    path: PathMatch = field(default_factory=PathMatch)
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryMatch, ...] = ()
    method: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderModifier:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PathModifier:
    kind: PathModifierKind
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRedirect:
    scheme: str | None = None
    hostname: str | None = None
    path: PathModifier | None = None
    port: int | None = None
    status_code: int = 302


@dataclass(frozen=True, slots=True, kw_only=True)
class URLRewrite:
    hostname: str | None = None
    path: PathModifier | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectRef:
    """A backendRef-like reference: group/kind/namespace/name/port."""

    group: str = CORE_GROUP
    kind: str = "Service"
    name: str
    namespace: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestMirror:
    backend: ObjectRef
    # fraction of requests mirrored, as numerator/denominator (percent p → p/100)
    numerator: int = 100
    denominator: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class CorsPolicy:
    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age_s: int = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteFilter:
    """One HTTPRoute filter; exactly one of the optional fields is set, per ``type``."""

    type: str
    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None
    redirect: RequestRedirect | None = None
    rewrite: URLRewrite | None = None
    mirror: RequestMirror | None = None
    cors: CorsPolicy | None = None
    extension: ObjectRef | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendRef:
    ref: ObjectRef
    weight: int = 1
    filters: tuple[RouteFilter, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    request_s: float | None = None  # None: no limit set; 0 disables
    backend_request_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    attempts: int = 1
    codes: tuple[int, ...] = ()
    backoff_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRule:
    name: str | None = None
    matches: tuple[RouteMatch, ...] = ()
    filters: tuple[RouteFilter, ...] = ()
    backend_refs: tuple[BackendRef, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPRoute:
    meta: Meta
    parent_refs: tuple[ParentRef, ...]
    hostnames: tuple[str, ...]
    rules: tuple[RouteRule, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferenceGrant:
    meta: Meta
    # (group, kind, namespace)
    grants_from: tuple[tuple[str, str, str], ...]
    # (group, kind, name or None for every name)
    grants_to: tuple[tuple[str, str, str | None], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePort:
    name: str
    port: int
    target_port: int | str | None = None
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    meta: Meta
    ports: tuple[ServicePort, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceEndpoint:
    addresses: tuple[str, ...]
    ready: bool = True
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SlicePort:
    name: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointSlice:
    meta: Meta
    address_type: str
    endpoints: tuple[SliceEndpoint, ...]
    ports: tuple[SlicePort, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Pod:
    """A v1 Pod, as much of it as an InferencePool needs: its labels (in ``meta``), its IPs,
    and whether it takes traffic (condition Ready is True and it is not terminating)."""

    meta: Meta
    ips: tuple[str, ...]
    ready: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class InferencePool:
    meta: Meta
    selector: LabelSelector
    target_ports: tuple[int, ...]
    endpoint_picker: ObjectRef | None = None
    failure_mode: str = "FailOpen"
    api_version: str = "v1"


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceObjective:
    meta: Meta
    priority: int
    pool: str  # pool name, same namespace


@dataclass(frozen=True, slots=True, kw_only=True)
class RewriteRule:
    models: tuple[str, ...]  # exact model names; empty matches every model
    targets: tuple[tuple[str, int], ...]  # (model, weight)
    source: tuple[str, int] = ("", 0)  # (InferenceModelRewrite namespace/name, rule index)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRewrite:
    meta: Meta
    pool: str
    rules: tuple[RewriteRule, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceModelRule:
    """The older InferenceModel: a model name with a criticality and weighted targets."""

    meta: Meta
    model_name: str
    priority: int
    targets: tuple[tuple[str, int], ...]
    pool: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PresetDoc:
    meta: Meta
    preset: Preset
    aliases: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class InferencePoolPolicy:
    meta: Meta
    pools: tuple[str, ...]
    profile: Profile
    scrape_interval_s: float = 0.05
    scrape_timeout_s: float = 1.0
    staleness_s: float = 0.5
    failure_mode: str | None = None  # None: the pool's own endpointPickerRef.failureMode
    prefix_block_chars: int = 64
    prefix_max_blocks: int = 256
    prefix_capacity_blocks: int = 31_250
    max_candidates: int = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddingBatching:
    """Coalesce /v1/embeddings requests of one model into one upstream call."""

    enabled: bool = True
    max_batch_size: int = 32  # inputs per upstream call
    max_batch_tokens: int = 16_384  # estimated input tokens per upstream call
    max_queue_delay_s: float = 0.005  # how long the first request of a batch may wait


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficLimits:
    """Concurrency caps, the gateway queue and the saturation detector of a pool (or of one
    model in it, as an override)."""

    max_per_endpoint: int | None = None  # guidance: ~110% of the server's max batch
    max_per_model: int | None = None
    # prefill pacing: requests awaiting their first token (streamed: seen; others: estimated),
    # per ready endpoint
    max_prefill_per_endpoint: int | None = None
    # sheddable requests only while in-flight requests are below this fraction of the slots
    sheddable_limit: float | None = None
    # adapt that fraction to keep non-sheddable TTFT p90 under this (routing.sheddable)
    sheddable_ttft_objective_s: float | None = None
    queue_max_requests: int = 1_000
    queue_max_bytes: int = 256 * 1024 * 1024
    queue_ttl_s: float = 30.0
    queue_depth_threshold: float = 5.0
    kv_cache_threshold: float = 0.8
    headroom: float = 0.0  # allowed burst above the thresholds, as a fraction
    batch_target: int | None = None  # LLM packing: per-endpoint in-flight target for affinity


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficPolicy:
    """Sluice's TrafficPolicy (see routing/trafficconfig.py)."""

    meta: Meta
    pools: tuple[str, ...]
    limits: TrafficLimits
    model_limits: tuple[tuple[str, TrafficLimits], ...] = ()
    fairness_header: str = "x-gateway-inference-fairness-id"
    embeddings: EmbeddingBatching = field(default_factory=EmbeddingBatching)
    autoscaling: AutoscaleSpec | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Every resource read from the config files (and the Kubernetes API), in file order.

    ``from_cluster``: the resources come from a cluster's API (``sluice serve --kubernetes``),
    so InferencePools select Pods, and a Gateway is served only if its GatewayClass is there
    and names Sluice's controller. Pools also select Pods when the files hold any Pod."""

    namespaces: tuple[Namespace, ...] = ()
    gateway_classes: tuple[GatewayClass, ...] = ()
    gateways: tuple[Gateway, ...] = ()
    routes: tuple[HTTPRoute, ...] = ()
    grants: tuple[ReferenceGrant, ...] = ()
    services: tuple[Service, ...] = ()
    slices: tuple[EndpointSlice, ...] = ()
    pools: tuple[InferencePool, ...] = ()
    objectives: tuple[InferenceObjective, ...] = ()
    rewrites: tuple[ModelRewrite, ...] = ()
    inference_models: tuple[InferenceModelRule, ...] = ()
    presets: tuple[PresetDoc, ...] = ()
    pool_policies: tuple[InferencePoolPolicy, ...] = ()
    traffic_policies: tuple[TrafficPolicy, ...] = ()
    rollouts: tuple[RolloutSpec, ...] = ()
    pods: tuple[Pod, ...] = ()
    secrets: tuple[Secret, ...] = ()
    from_cluster: bool = False

    @property
    def pools_select_pods(self) -> bool:
        return self.from_cluster or bool(self.pods)
