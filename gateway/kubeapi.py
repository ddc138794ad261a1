"""Talking to a Kubernetes API server: where it is and how to authenticate, the resources
Sluice reads, and JSON over HTTP (a list page, a watch's stream of events).

Rules: read only (GET); an answer other than 200 is a ``KubeError`` carrying the status and
the server's message; one watch event may not exceed ``MAX_EVENT_BYTES``; ``slim`` keeps of
an object only what Sluice reads, so memory stays bounded by what a table needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.tls import pem_file
from routing import model as m
from routing.tlsconfig import CERT_KEY, PRIVATE_KEY_KEY

__all__ = ["RESOURCES", "ApiClient", "ApiServer", "KubeError", "Resource", "slim"]

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
WATCH_TIMEOUT_S = 300  # asked of the server; it ends the watch, and we resume
MAX_EVENT_BYTES = 8 * 1024 * 1024  # etcd caps an object at 1.5 MiB; this is a guard
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class KubeError(Exception):
    """The API answered something Sluice cannot use (status code or body); status 0: no
    answer yet (the settings, a kubeconfig, are wrong)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    field_selector: str = ""  # asked of the API with every list and watch

    @property
    def label(self) -> str:
        """kind.group, as kubectl names a resource (the metrics' ``resource`` label)."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"


RESOURCES = (
    Resource("", "v1", "Namespace", "namespaces", namespaced=False),
    Resource("", "v1", "Service", "services"),
    Resource("", "v1", "Pod", "pods"),
    # HTTPS listeners' certificates: TLS Secrets only, not every Secret of the cluster
    Resource("", "v1", "Secret", "secrets", field_selector="type=kubernetes.io/tls"),
    Resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    Resource(m.GATEWAY_GROUP, "v1", "GatewayClass", "gatewayclasses", namespaced=False),
    Resource(m.GATEWAY_GROUP, "v1", "Gateway", "gateways"),
    Resource(m.GATEWAY_GROUP, "v1", "HTTPRoute", "httproutes"),
    Resource(m.GATEWAY_GROUP, "v1beta1", "ReferenceGrant", "referencegrants"),
    Resource(m.INFERENCE_GROUP, "v1", "InferencePool", "inferencepools"),
    Resource(m.INFERENCE_X_GROUP, "v1alpha2", "InferencePool", "inferencepools"),
    Resource(m.INFERENCE_X_GROUP, "v1alpha2", "InferenceObjective", "inferenceobjectives"),
    Resource(m.INFERENCE_X_GROUP, "v1alpha2", "InferenceModelRewrite", "inferencemodelrewrites"),
    Resource(m.INFERENCE_X_GROUP, "v1alpha2", "InferenceModel", "inferencemodels"),
    Resource(m.SLUICE_GROUP, "v1alpha1", "ModelServerPreset", "modelserverpresets", False),
    Resource(m.SLUICE_GROUP, "v1alpha1", "InferencePoolPolicy", "inferencepoolpolicies"),
    Resource(m.SLUICE_GROUP, "v1alpha1", "TrafficPolicy", "trafficpolicies"),
    Resource(m.SLUICE_GROUP, "v1alpha1", "Rollout", "rollouts"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiServer:
    """Where the API is and how to authenticate. The token file is read again for every
    request: projected service-account tokens are rotated by the kubelet."""

    url: str
    token_file: str | None = None
    ca_file: str | None = None
    namespace: str = "default"  # Sluice's own (its pod's): where its Lease lives
    # from a kubeconfig (gateway.kubeconfig): a fixed token, the CA and a client
    # certificate as PEM text, and whether the server's certificate goes unchecked
    token: str | None = field(default=None, repr=False)
    ca_data: str | None = None
    client_certificate: str | None = None
    client_key: str | None = field(default=None, repr=False)
    insecure: bool = False

    @classmethod
    def in_cluster(cls) -> ApiServer:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise KubeError(0, "KUBERNETES_SERVICE_HOST is not set: not running in a pod")
        host = f"[{host}]" if ":" in host else host
        namespace = "default"
        with (
            contextlib.suppress(OSError),
            open(f"{SERVICE_ACCOUNT_DIR}/namespace", encoding="utf-8") as fh,
        ):
            namespace = fh.read().strip() or namespace
        return cls(
            url=f"https://{host}:{port}",
            token_file=f"{SERVICE_ACCOUNT_DIR}/token",
            ca_file=f"{SERVICE_ACCOUNT_DIR}/ca.crt",
            namespace=namespace,
        )

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token_file:
            with open(self.token_file, encoding="utf-8") as fh:
                headers["Authorization"] = f"Bearer {fh.read().strip()}"
        elif self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.url.startswith("https:"):
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.client_certificate and self.client_key:
            pem = f"{self.client_key.strip()}\n{self.client_certificate.strip()}\n".encode()
            with pem_file(pem) as path:
                ctx.load_cert_chain(path)
        return ctx


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """What Sluice keeps of an object: Pods only their labels, IPs and readiness; Secrets
    only their certificate and key (``tls.crt``, ``tls.key``), no other data; others
    everything but managedFields and the last-applied annotation."""
    meta = obj.get("metadata") or {}
    if obj.get("kind") == "Secret":
        data = obj.get("data") or {}
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                k: meta[k] for k in ("name", "namespace", "creationTimestamp") if k in meta
            },
            "type": obj.get("type") or "Opaque",
            "data": {k: data[k] for k in (CERT_KEY, PRIVATE_KEY_KEY) if k in data},
        }
    if obj.get("kind") == "Pod":
        status = obj.get("status") or {}
        kept = ("name", "namespace", "labels", "creationTimestamp", "deletionTimestamp")
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {k: meta[k] for k in kept if k in meta},
            "status": {
                "phase": status.get("phase"),
                "podIP": status.get("podIP"),
                "podIPs": status.get("podIPs") or [],
                "conditions": [
                    c for c in status.get("conditions") or () if c.get("type") == "Ready"
                ],
            },
        }
    meta = {k: v for k, v in meta.items() if k != "managedFields"}
    annotations = meta.get("annotations")
    if annotations and _LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != _LAST_APPLIED}
    return {**obj, "metadata": meta}


class ApiClient:
    """GET requests to one API server, on one connection pool."""

    def __init__(self, api: ApiServer, *, request_timeout_s: float) -> None:
        self.api = api
        self._request_timeout_s = request_timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self.api.ssl_context() or False)
            self._session = aiohttp.ClientSession(self.api.url, connector=connector)
        return self._session

    async def get_json(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self._request_timeout_s)
        async with self._http().get(
            path, params=params, headers=self.api.headers(), timeout=timeout
        ) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise KubeError(resp.status, _status_message(body))
            data = json.loads(body)
        if not isinstance(data, dict):
            raise KubeError(resp.status, "expected a JSON object")
        return data

    async def patch_json(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386), as ``kubectl patch --type merge`` sends it."""
        return await self.send_json("PATCH", path, patch, "application/merge-patch+json")

    async def send_json(
        self, method: str, path: str, body: dict[str, Any], content_type: str = "application/json"
    ) -> dict[str, Any]:
        """A write (POST, PUT, PATCH); the object the API answers with."""
        timeout = aiohttp.ClientTimeout(total=self._request_timeout_s)
        headers = self.api.headers() | {"Content-Type": content_type}
        async with self._http().request(
            method, path, data=json.dumps(body).encode(), headers=headers, timeout=timeout
        ) as resp:
            data = await resp.read()
            if resp.status not in (200, 201):
                raise KubeError(resp.status, _status_message(data))
        answer = json.loads(data)
        return answer if isinstance(answer, dict) else {}

    async def stream_json(
        self, path: str, params: dict[str, str]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The watch's events, one JSON object per line, until the server ends it."""
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._request_timeout_s, sock_read=WATCH_TIMEOUT_S + 30
        )
        async with self._http().get(
            path, params=params, headers=self.api.headers(), timeout=timeout
        ) as resp:
            if resp.status != 200:
                raise KubeError(resp.status, _status_message(await resp.read()))
            buffer = bytearray()
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        event = json.loads(line)
                        if isinstance(event, dict):
                            yield event
                if len(buffer) > MAX_EVENT_BYTES:
                    raise KubeError(resp.status, f"a watch event over {MAX_EVENT_BYTES} bytes")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _status_message(body: bytes) -> str:
    """The ``message`` of a Kubernetes Status body, or the body's start."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, str):
        return message
    return body[:200].decode("utf-8", "replace")
