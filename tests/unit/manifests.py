"""Small YAML manifests and the calls that turn them into a routing table, shared by the tests.

Tests write the Kubernetes objects they need as YAML text (the form users write), decode it with
``yaml.safe_load_all`` exactly as ``gateway/`` does, and hand it to ``routing``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import pytest
import yaml

from routing import (
    ConfigError,
    ConfigIssue,
    MatchEntry,
    RawDocument,
    RequestFacts,
    RoutingTable,
    build_table,
    match_request,
    parse_config,
)
from routing import model as m

FILE = "t.yaml"

GATEWAY_CLASS = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
"""

# One Gateway, one HTTP listener on port 80 without a hostname, open to every namespace.
GATEWAY = (
    GATEWAY_CLASS
    + """
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: sluice
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: All}}
"""
)


# The head of an HTTPRoute document, up to an empty "spec:" the caller completes.
ROUTE_HEAD = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
"""


def route_rule(rule: str) -> str:
    """An HTTPRoute document whose only rule is ``rule`` (YAML block, indented as a rule)."""
    body = "\n".join("    " + line for line in rule.strip("\n").splitlines())
    return ROUTE_HEAD + "  rules:\n  -\n" + body + "\n"


def route_filter(body: str) -> str:
    """An HTTPRoute whose only rule has one filter ``body`` (YAML flow mapping)."""
    return route_rule(f"filters: [{body}]")


def gateway_doc(listener: str) -> str:
    """A Gateway ``default/gw`` of class ``sluice`` whose listeners are ``listener`` (flow)."""
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: sluice
  listeners: [{listener}]
"""


def pool_doc(spec: str) -> str:
    """A v1 InferencePool ``default/pool`` whose spec is ``spec`` (YAML block)."""
    body = "\n".join("  " + line for line in spec.strip("\n").splitlines())
    return f"""
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: pool}}
spec:
{body}
"""


# yaml.safe_load_all as gateway/ calls it, with libyaml's parser when present: the same
# SafeConstructor and Resolver, so the same values, ten times faster.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _decoded(text: str) -> tuple[object, ...]:
    # Decoding is most of a test's time and many tests share a manifest; routing only reads
    # the decoded values, so one decoding per text serves them all.
    return tuple(yaml.load_all(text, Loader=_LOADER))


def documents(text: str) -> list[RawDocument]:
    return [RawDocument(file=FILE, index=i, data=data) for i, data in enumerate(_decoded(text))]


def parse(text: str) -> tuple[m.Config, tuple[ConfigIssue, ...]]:
    return parse_config(documents(text))


def config_of(text: str) -> m.Config:
    return parse(text)[0]


def issues_of(text: str) -> tuple[ConfigIssue, ...]:
    """The issues of a config that must be rejected."""
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value.issues


def errors_of(text: str) -> set[tuple[int, str]]:
    """(document, field path) of every error of a config that must be rejected."""
    return {(i.document, i.path) for i in issues_of(text) if i.severity == "error"}


def error_paths(text: str) -> set[tuple[int, str]]:
    """(document, field path) of every error; empty when the config is accepted."""
    try:
        parse(text)
    except ConfigError as exc:
        return {(i.document, i.path) for i in exc.issues if i.severity == "error"}
    return set()


def table_of(text: str) -> RoutingTable:
    return build_table(config_of(text))


def route(
    name: str,
    spec: str,
    *,
    namespace: str = "default",
    created: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """One HTTPRoute document; ``spec`` is the YAML body of ``spec`` (flow or block style)."""
    meta: dict[str, object] = {"name": name, "namespace": namespace}
    if created is not None:
        meta["creationTimestamp"] = created
    if labels:
        meta["labels"] = dict(labels)
    body = "\n".join("  " + line for line in spec.strip("\n").splitlines())
    return (
        "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        f"metadata: {yaml.safe_dump(meta, default_flow_style=True).strip()}\n"
        f"spec:\n{body}\n"
    )


def simple_route(
    name: str,
    match: str,
    *,
    rule: str = "r0",
    namespace: str = "default",
    created: str | None = None,
    hostnames: str = "[]",
    parent: str = "{name: gw, namespace: default}",
) -> str:
    """An HTTPRoute with one named rule holding one match (given as a YAML flow mapping)."""
    return route(
        name,
        f"""
parentRefs: [{parent}]
hostnames: {hostnames}
rules:
- name: {rule}
  matches: [{match}]
""",
        namespace=namespace,
        created=created,
    )


def request(
    path: str = "/",
    *,
    method: str = "GET",
    host: str = "example.com",
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
) -> RequestFacts:
    return RequestFacts(
        method=method, path=path, query=dict(query or {}), headers=dict(headers or {}), host=host
    )


def match(table: RoutingTable, req: RequestFacts, port: int = 80) -> MatchEntry:
    return match_request(table, port, req)


def winner(table: RoutingTable, req: RequestFacts, port: int = 80) -> str:
    """``namespace/route:rule-name`` of the rule that answers ``req``."""
    rule = match_request(table, port, req).rule
    return f"{rule.route}:{rule.name}"
