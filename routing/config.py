"""Parse Kubernetes resource documents into the frozen model (``routing.model``).

Rules: every problem is collected, none stops the walk; each names file, document and field
path. Unknown kinds are skipped; unknown fields of known kinds are errors, as ``kubectl apply``
(strict field validation) would say; Kubernetes fields Sluice has no use for are accepted and
ignored. Defaults live here and only here. This module never reads files: ``gateway/`` does
that and hands over the decoded YAML.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from routing import model as m
from routing.errors import ConfigError, ConfigIssue
from routing.inference_config import (
    parse_inference_model,
    parse_objective,
    parse_pool_policy,
    parse_preset,
    parse_rewrite,
)
from routing.reader import IssueSink, Reader
from routing.rolloutconfig import RolloutSpec, parse_rollout
from routing.routeconfig import parse_httproute
from routing.tlsconfig import parse_listener_tls, parse_secret
from routing.trafficconfig import parse_traffic_policy

__all__ = ["RawDocument", "parse_config"]

DEFAULT_NAMESPACE = "default"
_META_IGNORED = (
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "managedFields",
    "finalizers",
    "ownerReferences",
    "generateName",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RawDocument:
    """One decoded YAML document and where it came from."""

    file: str
    index: int
    data: object


def parse_config(docs: Sequence[RawDocument]) -> tuple[m.Config, tuple[ConfigIssue, ...]]:
    """The model of ``docs`` and its warnings; raises ``ConfigError`` listing every issue."""
    kept: dict[tuple[str, str, str], tuple[int, object]] = {}  # (kind, ns, name) → the last
    issues: list[ConfigIssue] = []
    for order, doc in enumerate(docs):
        sink = IssueSink(file=doc.file, document=doc.index)
        parsed = _parse_document(doc, order, sink)
        if parsed is not None:
            kind = doc.data.get("kind") if isinstance(doc.data, dict) else None
            _keep_last(kept, str(kind), order, parsed, sink)
        issues.extend(sink.issues)
    if any(i.severity == "error" for i in issues):
        raise ConfigError(tuple(issues))
    objects = [o for _, o in sorted(kept.values(), key=lambda entry: entry[0])]
    config = m.Config(
        namespaces=tuple(o for o in objects if isinstance(o, m.Namespace)),
        gateway_classes=tuple(o for o in objects if isinstance(o, m.GatewayClass)),
        gateways=tuple(o for o in objects if isinstance(o, m.Gateway)),
        routes=tuple(o for o in objects if isinstance(o, m.HTTPRoute)),
        grants=tuple(o for o in objects if isinstance(o, m.ReferenceGrant)),
        services=tuple(o for o in objects if isinstance(o, m.Service)),
        slices=tuple(o for o in objects if isinstance(o, m.EndpointSlice)),
        pools=tuple(o for o in objects if isinstance(o, m.InferencePool)),
        objectives=tuple(o for o in objects if isinstance(o, m.InferenceObjective)),
        rewrites=tuple(o for o in objects if isinstance(o, m.ModelRewrite)),
        inference_models=tuple(o for o in objects if isinstance(o, m.InferenceModelRule)),
        presets=tuple(o for o in objects if isinstance(o, m.PresetDoc)),
        pool_policies=tuple(o for o in objects if isinstance(o, m.InferencePoolPolicy)),
        traffic_policies=tuple(o for o in objects if isinstance(o, m.TrafficPolicy)),
        rollouts=tuple(o for o in objects if isinstance(o, RolloutSpec)),
        pods=tuple(o for o in objects if isinstance(o, m.Pod)),
        secrets=tuple(o for o in objects if isinstance(o, m.Secret)),
    )
    return config, tuple(issues)


def _keep_last(
    kept: dict[tuple[str, str, str], tuple[int, object]],
    kind: str,
    order: int,
    parsed: object,
    sink: IssueSink,
) -> None:
    """Two objects of one kind, namespace and name: the later document replaces the earlier,
    as ``kubectl apply`` of both would leave it, with a warning naming both places. Presets
    are exempt: a user's preset replaces a built-in one of its name on purpose."""
    meta = getattr(parsed, "meta", None)
    if not isinstance(meta, m.Meta) or isinstance(parsed, m.PresetDoc):
        kept[(kind, "", f"\x00{order}")] = (order, parsed)  # never a duplicate
        return
    key = (kind, meta.namespace, meta.name)
    earlier = kept.get(key)
    if earlier is not None:
        first = getattr(earlier[1], "meta", meta)
        where = f"{first.source} document {first.document}"
        name = meta.key if meta.namespace else meta.name
        sink.warn("metadata.name", f"{kind} {name} is also defined in {where}: this one is used")
    kept[key] = (order, parsed)


def _parse_document(doc: RawDocument, order: int, sink: IssueSink) -> object | None:
    if doc.data is None:
        return None
    if not isinstance(doc.data, dict):
        sink.error("", "a document must be a Kubernetes object (a mapping)")
        return None
    kind, api = doc.data.get("kind"), doc.data.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api, str):
        sink.error("kind" if not isinstance(kind, str) else "apiVersion", "required field")
        return None
    entry = _PARSERS.get(kind)
    group = api.rpartition("/")[0]
    if entry is None or group not in entry[0]:
        return None  # a kind Sluice does not serve: ignored, as the contract says
    reader = Reader(doc.data, "", sink)
    reader.ignore("kind", "apiVersion", "status")
    meta = _parse_meta(reader.mapping("metadata"), doc, order, cluster_scoped=kind in _CLUSTER)
    obj = entry[1](reader, meta)
    reader.finish()
    return obj


def _parse_meta(r: Reader, doc: RawDocument, order: int, *, cluster_scoped: bool) -> m.Meta:
    r.ignore(*_META_IGNORED)
    name = r.req_str("name")
    namespace = r.string("namespace") or ("" if cluster_scoped else DEFAULT_NAMESPACE)
    raw_creation = r.raw("creationTimestamp")
    # an unquoted RFC 3339 timestamp is decoded by YAML into a datetime
    creation = raw_creation.isoformat() if hasattr(raw_creation, "isoformat") else ""
    if isinstance(raw_creation, str):
        creation = raw_creation
    elif raw_creation is not None and not creation:
        r.sink.error(r.sub("creationTimestamp"), "expected an RFC 3339 timestamp")
    meta = m.Meta(
        name=name,
        namespace=namespace,
        labels=r.str_map("labels"),
        # Routes without a timestamp keep file order: a later document is "younger".
        creation=creation or f"~{order:08d}",
        source=doc.file,
        document=doc.index,
        generation=generation if isinstance(generation := r.raw("generation"), int) else 0,
    )
    r.finish()
    return meta


def _parse_namespace(r: Reader, meta: m.Meta) -> m.Namespace:
    r.ignore("spec")
    return m.Namespace(meta=meta)


def _parse_pod(r: Reader, meta: m.Meta) -> m.Pod:
    """Only what a pool needs; the rest of a Pod (spec, most of status) is not read."""
    r.ignore("spec")
    raw_meta = r.raw("metadata")
    terminating = isinstance(raw_meta, dict) and raw_meta.get("deletionTimestamp") is not None
    status = r.raw("status")
    if not isinstance(status, dict) or status.get("phase") in ("Succeeded", "Failed"):
        # a finished pod keeps its IP in status, which a new pod may be given
        return m.Pod(meta=meta, ips=(), ready=False)
    ips = [p.get("ip") for p in status.get("podIPs") or () if isinstance(p, dict)]
    ips = ips or [status.get("podIP")]
    ready = any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    return m.Pod(
        meta=meta,
        ips=tuple(ip for ip in ips if isinstance(ip, str) and ip),
        ready=ready and not terminating,
    )


def _parse_gateway_class(r: Reader, meta: m.Meta) -> m.GatewayClass:
    spec = r.mapping("spec")
    controller = spec.req_str("controllerName")
    spec.ignore("parametersRef", "description")
    spec.finish()
    return m.GatewayClass(meta=meta, controller_name=controller)


def _parse_gateway(r: Reader, meta: m.Meta) -> m.Gateway:
    spec = r.mapping("spec")
    class_name = spec.req_str("gatewayClassName")
    listeners = spec.list_of("listeners", _parse_listener)
    if not listeners:
        spec.sink.error(spec.sub("listeners"), "a Gateway needs at least one listener")
    names = [listener.name for listener in listeners]
    for dup in {n for n in names if names.count(n) > 1}:
        spec.sink.error(spec.sub("listeners"), f"listener name {dup!r} is used twice")
    spec.ignore("addresses", "infrastructure", "backendTLS", "allowedListeners", "tls")
    spec.finish()
    return m.Gateway(meta=meta, class_name=class_name, listeners=listeners)


def _parse_listener(r: Reader) -> m.Listener:
    name = r.req_str("name")
    if not r.has("port"):
        r.sink.error(r.sub("port"), "required field is missing")
    port = r.number("port", 0, lo=1, hi=65535) or 0
    protocol = r.req_str("protocol")
    if protocol and protocol not in ("HTTP", "HTTPS"):
        r.sink.warn(r.sub("protocol"), f"protocol {protocol} is not served; listener skipped")
    hostname = r.string("hostname")
    tls = None
    if r.has("tls"):
        tls = parse_listener_tls(r.mapping("tls"), protocol)
        if protocol == "HTTP":
            r.sink.error(r.sub("tls"), "an HTTP listener takes no tls")
    elif protocol == "HTTPS":
        r.sink.error(r.sub("tls"), "an HTTPS listener needs tls with its certificateRefs")
    r.raw("tls")
    allowed = r.mapping("allowedRoutes")
    ns = allowed.mapping("namespaces")
    raw_from = ns.string("from", "Same") or "Same"
    try:
        allowed_from = m.AllowedFrom(raw_from)
    except ValueError:
        ns.sink.error(ns.sub("from"), f"must be Same, All or Selector, not {raw_from!r}")
        allowed_from = m.AllowedFrom.SAME
    selector = _parse_selector(ns.mapping("selector")) if ns.has("selector") else None
    if allowed_from is m.AllowedFrom.SELECTOR and selector is None:
        ns.sink.error(ns.sub("selector"), "from: Selector needs a selector")
    ns.finish()
    kinds = allowed.list_of("kinds", _parse_route_kind)
    allowed.finish()
    return m.Listener(
        name=name,
        port=port,
        protocol=protocol,
        hostname=hostname.lower() if hostname else None,
        allowed_from=allowed_from,
        allowed_selector=selector,
        allowed_kinds=kinds,
        tls=tls,
    )


def _parse_route_kind(r: Reader) -> tuple[str, str]:
    return (r.string("group", m.GATEWAY_GROUP) or m.GATEWAY_GROUP, r.req_str("kind"))


def _parse_selector(r: Reader) -> m.LabelSelector:
    def expression(e: Reader) -> tuple[str, str, tuple[str, ...]]:
        op = e.req_str("operator")
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            e.sink.error(e.sub("operator"), f"unknown operator {op!r}")
        return (e.req_str("key"), op, e.str_list("values"))

    selector = m.LabelSelector(
        match_labels=r.str_map("matchLabels"),
        match_expressions=r.list_of("matchExpressions", expression),
    )
    r.finish()
    return selector


def _parse_reference_grant(r: Reader, meta: m.Meta) -> m.ReferenceGrant:
    spec = r.mapping("spec")

    def source(e: Reader) -> tuple[str, str, str]:
        return (e.string("group", "") or "", e.req_str("kind"), e.req_str("namespace"))

    def target(e: Reader) -> tuple[str, str, str | None]:
        return (e.string("group", "") or "", e.req_str("kind"), e.string("name"))

    grant = m.ReferenceGrant(
        meta=meta, grants_from=spec.list_of("from", source), grants_to=spec.list_of("to", target)
    )
    spec.finish()
    return grant


def _parse_service(r: Reader, meta: m.Meta) -> m.Service:
    spec = r.mapping("spec")

    def port(e: Reader) -> m.ServicePort:
        target = e.raw("targetPort")
        sp = m.ServicePort(
            name=e.string("name", "") or "",
            port=e.number("port", 0, lo=1, hi=65535) or 0,
            target_port=target if isinstance(target, int | str) else None,
            app_protocol=e.string("appProtocol"),
        )
        e.ignore("protocol", "nodePort")
        return sp

    ports = spec.list_of("ports", port)
    spec.ignore(
        "selector", "type", "clusterIP", "clusterIPs", "sessionAffinity", "ipFamilies",
        "ipFamilyPolicy", "externalName", "externalTrafficPolicy", "internalTrafficPolicy",
        "publishNotReadyAddresses", "loadBalancerIP", "sessionAffinityConfig",
        "healthCheckNodePort",
        "allocateLoadBalancerNodePorts", "loadBalancerClass", "loadBalancerSourceRanges",
        "externalIPs", "trafficDistribution",
    )  # fmt: skip
    spec.finish()
    return m.Service(meta=meta, ports=ports)


def _parse_endpoint_slice(r: Reader, meta: m.Meta) -> m.EndpointSlice:
    def endpoint(e: Reader) -> m.SliceEndpoint:
        cond = e.mapping("conditions")
        ready = cond.flag("ready", True)
        cond.ignore("serving", "terminating")
        cond.finish()
        e.ignore("hostname", "nodeName", "zone", "targetRef", "hints", "deprecatedTopology")
        return m.SliceEndpoint(
            addresses=e.str_list("addresses"), ready=ready, labels=e.str_map("labels")
        )

    def port(e: Reader) -> m.SlicePort:
        e.ignore("protocol", "appProtocol")
        return m.SlicePort(name=e.string("name", "") or "", port=e.number("port", 0, lo=1) or 0)

    slice_ = m.EndpointSlice(
        meta=meta,
        address_type=r.string("addressType", "IPv4") or "IPv4",
        endpoints=r.list_of("endpoints", endpoint),
        ports=r.list_of("ports", port),
    )
    return slice_


def _parse_inference_pool(r: Reader, meta: m.Meta) -> m.InferencePool:
    spec = r.mapping("spec")
    sel = spec.mapping("selector")
    if sel.has("matchLabels"):  # v1 shape: selector.matchLabels
        selector = m.LabelSelector(match_labels=sel.str_map("matchLabels"))
        sel.finish()
    else:  # v1alpha2 shape: selector is the label map itself
        selector = m.LabelSelector(match_labels=spec.str_map("selector"))
    ports: list[int] = []
    for path, item in spec.items("targetPorts"):
        pr = Reader(item, path, spec.sink)
        ports.append(pr.number("number", 0, lo=1, hi=65535) or 0)
        pr.finish()
    if spec.has("targetPortNumber"):  # v1alpha2
        ports.append(spec.number("targetPortNumber", 0, lo=1, hi=65535) or 0)
    else:
        spec.raw("targetPortNumber")
    if not ports:
        spec.sink.error(spec.sub("targetPorts"), "an InferencePool needs at least one target port")
    picker, failure = _parse_picker_ref(spec)
    spec.finish()
    return m.InferencePool(
        meta=meta,
        selector=selector,
        target_ports=tuple(ports),
        endpoint_picker=picker,
        failure_mode=failure,
    )


def _parse_picker_ref(spec: Reader) -> tuple[m.ObjectRef | None, str]:
    key = "endpointPickerRef" if spec.has("endpointPickerRef") else "extensionRef"
    spec.raw("endpointPickerRef")
    spec.raw("extensionRef")
    if not spec.has(key):
        # No endpoint picker named: Sluice itself picks, and missing signals should degrade
        # to balancing on its own counts (FailOpen), not refuse traffic. A pool that names
        # an endpointPickerRef keeps the Inference Extension's default, FailClose.
        return None, "FailOpen"
    r = spec.mapping(key)
    failure = r.string("failureMode", "FailClose") or "FailClose"
    if failure not in ("FailOpen", "FailClose"):
        r.sink.error(r.sub("failureMode"), "must be FailOpen or FailClose")
    port_reader = r.opt_mapping("port")
    port = None
    if port_reader is not None:
        port = port_reader.number("number", None, lo=1, hi=65535)
        port_reader.finish()
    ref = m.ObjectRef(
        group=r.string("group", "") or "",
        kind=r.string("kind", "Service") or "Service",
        name=r.req_str("name"),
        port=port if port is not None else r.number("portNumber", None, lo=1, hi=65535),
    )
    r.finish()
    return ref, failure


_Parser = Callable[[Reader, m.Meta], object]
_CLUSTER = frozenset({"Namespace", "GatewayClass", "ModelServerPreset"})
_PARSERS: dict[str, tuple[frozenset[str], _Parser]] = {
    "Namespace": (frozenset({""}), _parse_namespace),
    "GatewayClass": (frozenset({m.GATEWAY_GROUP}), _parse_gateway_class),
    "Gateway": (frozenset({m.GATEWAY_GROUP}), _parse_gateway),
    "HTTPRoute": (frozenset({m.GATEWAY_GROUP}), parse_httproute),
    "ReferenceGrant": (frozenset({m.GATEWAY_GROUP}), _parse_reference_grant),
    "Service": (frozenset({""}), _parse_service),
    "Pod": (frozenset({""}), _parse_pod),
    "Secret": (frozenset({""}), parse_secret),
    "EndpointSlice": (frozenset({"discovery.k8s.io"}), _parse_endpoint_slice),
    "InferencePool": (
        frozenset({m.INFERENCE_GROUP, m.INFERENCE_X_GROUP}),
        _parse_inference_pool,
    ),
    "InferenceObjective": (frozenset({m.INFERENCE_X_GROUP, m.INFERENCE_GROUP}), parse_objective),
    "InferenceModelRewrite": (frozenset({m.INFERENCE_X_GROUP, m.INFERENCE_GROUP}), parse_rewrite),
    "InferenceModel": (frozenset({m.INFERENCE_X_GROUP}), parse_inference_model),
    "ModelServerPreset": (frozenset({m.SLUICE_GROUP}), parse_preset),
    "InferencePoolPolicy": (frozenset({m.SLUICE_GROUP}), parse_pool_policy),
    "TrafficPolicy": (frozenset({m.SLUICE_GROUP}), parse_traffic_policy),
    "Rollout": (frozenset({m.SLUICE_GROUP}), parse_rollout),
}
