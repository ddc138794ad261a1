"""A Kubernetes API server in memory, on 127.0.0.1, for list-and-watch clients.

It serves what ``kubectl`` and client-go rely on: paged lists (``limit``/``continue``) whose
items carry no kind or apiVersion, watches from a resourceVersion that stream one JSON event
per line, 410 Gone (as an ERROR event) for a version older than the history kept, 404 for a
resource it does not serve, 401 without the right bearer token. Tests change objects with
``put``/``delete``, cut every watch with ``drop_watches`` and forget history with
``compact``. Its plural names are written out here, not taken from Sluice's table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PLURALS = {
    "Namespace": "namespaces",
    "Service": "services",
    "Pod": "pods",
    "Secret": "secrets",
    "EndpointSlice": "endpointslices",
    "GatewayClass": "gatewayclasses",
    "Gateway": "gateways",
    "HTTPRoute": "httproutes",
    "ReferenceGrant": "referencegrants",
    "InferencePool": "inferencepools",
    "InferenceObjective": "inferenceobjectives",
    "InferenceModelRewrite": "inferencemodelrewrites",
    "InferenceModel": "inferencemodels",
    "TrafficPolicy": "trafficpolicies",
    "InferencePoolPolicy": "inferencepoolpolicies",
    "ModelServerPreset": "modelserverpresets",
    "Rollout": "rollouts",
    "Lease": "leases",
}
CORE_AND_GATEWAY = frozenset(
    {
        "v1/namespaces",
        "v1/services",
        "v1/pods",
        "v1/secrets",
        "discovery.k8s.io/v1/endpointslices",
        "gateway.networking.k8s.io/v1/gatewayclasses",
        "gateway.networking.k8s.io/v1/gateways",
        "gateway.networking.k8s.io/v1/httproutes",
        "gateway.networking.k8s.io/v1beta1/referencegrants",
        "coordination.k8s.io/v1/leases",  # Sluice writes its Lease; it does not watch them
    }
)
INFERENCE = frozenset(
    {
        "inference.networking.k8s.io/v1/inferencepools",
        "inference.networking.x-k8s.io/v1alpha2/inferenceobjectives",
        "inference.networking.x-k8s.io/v1alpha2/inferencemodelrewrites",
    }
)


@dataclass
class _Watch:
    resource: str
    namespace: str | None
    fields: dict[str, str] = field(default_factory=dict)
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)


class FakeKubeApi:
    def __init__(
        self, served: Iterable[str] = CORE_AND_GATEWAY | INFERENCE, token: str | None = None
    ) -> None:
        self.served = frozenset(served)  # "group/version/plural" ("v1/pods" for the core)
        self.token = token
        self.version = 100
        self.oldest = 0  # watches from an older version get 410 Gone
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []
        self.watches: list[_Watch] = []
        self.lists: list[str] = []  # resource of each list request, in order
        self.paths: list[str] = []  # the path of every request
        self.watching = asyncio.Condition()
        self.failing = False  # answer every request 500, as an API server in trouble
        self.failing_resources: set[str] = set()  # answer these 500 (a broken CRD webhook)
        self.refused = asyncio.Event()  # set once a request was answered 500
        self.not_found = asyncio.Event()  # set once a resource not served was asked for
        self.empty_watches = False  # end every watch at once, with no event
        self.url = ""
        self.patches: list[tuple[str, dict[str, Any]]] = []  # (path, patch) of each write
        self.patched = asyncio.Condition()

    # ---- what tests call

    def put(self, *objs: dict[str, Any]) -> None:
        """Create or replace each of ``objs`` (full objects, with kind and apiVersion)."""
        for obj in objs:
            resource = _resource_of(obj)
            meta = obj.setdefault("metadata", {})
            key = (meta.get("namespace", ""), meta["name"])
            bucket = self.objects.setdefault(resource, {})
            event = "MODIFIED" if key in bucket else "ADDED"
            self.version += 1
            meta["resourceVersion"] = str(self.version)
            meta.setdefault("creationTimestamp", "2026-12-01T00:00:00Z")
            meta["managedFields"] = [{"manager": "kubectl", "operation": "Apply"}]
            bucket[key] = obj
            self._emit(event, resource, obj)

    def delete(self, obj: dict[str, Any]) -> None:
        resource = _resource_of(obj)
        meta = obj["metadata"]
        gone = self.objects.get(resource, {}).pop((meta.get("namespace", ""), meta["name"]))
        self.version += 1
        gone["metadata"]["resourceVersion"] = str(self.version)
        self._emit("DELETED", resource, gone)

    def compact(self) -> None:
        """Forget the event history: a watch from any version seen so far gets 410 Gone."""
        self.history.clear()
        self.oldest = self.version

    def drop_watches(self) -> None:
        for watch in self.watches:
            watch.queue.put_nowait(None)

    async def wait_watches(self, count: int) -> None:
        async with self.watching:
            await self.watching.wait_for(lambda: len(self.watches) >= count)

    # ---- the server

    def _emit(self, event: str, resource: str, obj: dict[str, Any]) -> None:
        self.history.append((self.version, event, resource, obj))
        ns = obj["metadata"].get("namespace", "")
        for watch in self.watches:
            if (
                watch.resource == resource
                and watch.namespace in (None, ns)
                and _selected(obj, watch.fields)
            ):
                watch.queue.put_nowait({"type": event, "object": obj})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            return _status(401, "Unauthorized")
        if self.failing:
            self.refused.set()
            return _status(500, "etcdserver: request timed out")
        if not request.path.startswith(("/api/", "/apis/")):
            return _status(404, "not found")
        resource, ns, rest = _locate(request.path)
        namespace = ns or None  # None: every namespace
        if len(rest) == 2 and resource in self.served:  # one object, by name
            obj = self.objects.get(resource, {}).get((namespace or "", rest[1]))
            if obj is None:
                return _status(404, f"{resource} {rest[1]} not found")
            return web.json_response(obj)
        if len(rest) != 1 or resource not in self.served:
            self.not_found.set()
            return _status(404, f"the server could not find the requested resource {resource}")
        if resource in self.failing_resources:
            self.refused.set()
            return _status(500, "conversion webhook for this kind failed")
        if request.query.get("watch") in ("1", "true"):
            return await self._watch(request, resource, namespace)
        return self._list(request, resource, namespace)

    async def _patch(self, request: web.Request) -> web.Response:
        """A merge patch of an object's ``status`` subresource, as the API server takes it:
        only status changes, and a resourceVersion in the patch must be the object's."""
        if request.headers.get("Content-Type") != "application/merge-patch+json":
            return _status(415, "unsupported media type")
        resource, namespace, rest = _locate(request.path)
        if len(rest) != 3 or rest[2] != "status":
            return _status(405, "only status is written here")
        obj = self.objects.get(resource, {}).get((namespace, rest[1]))
        if obj is None:
            return _status(404, f"{resource} {namespace}/{rest[1]} not found")
        patch = await request.json()
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
            return _status(409, "the object has been modified; please apply your changes")
        self.patches.append((request.path, patch))
        obj["status"] = _merge(obj.get("status") or {}, patch.get("status") or {})
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self._emit("MODIFIED", resource, obj)
        async with self.patched:
            self.patched.notify_all()
        return web.json_response(obj)

    async def _write(self, request: web.Request) -> web.Response:
        """Create (POST to the collection) or replace (PUT to the object, conditional on a
        resourceVersion in it) a whole object: what a Lease needs."""
        resource, namespace, _ = _locate(request.path)
        if resource not in self.served:
            return _status(404, f"the server could not find the requested resource {resource}")
        obj = await request.json()
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = namespace
        bucket = self.objects.setdefault(resource, {})
        key = (namespace, meta["name"])
        if request.method == "POST":
            if key in bucket:
                return _status(409, f"{meta['name']} already exists")
        else:
            old = bucket.get(key)
            if old is None:
                return _status(404, f"{meta['name']} not found")
            wanted = meta.get("resourceVersion")
            if wanted is not None and wanted != old["metadata"]["resourceVersion"]:
                return _status(409, "the object has been modified; please apply your changes")
        self.version += 1
        meta["resourceVersion"] = str(self.version)
        event = "ADDED" if key not in bucket else "MODIFIED"
        bucket[key] = obj
        self._emit(event, resource, obj)
        return web.json_response(obj, status=201 if request.method == "POST" else 200)

    async def wait_patches(self, count: int) -> None:
        async with self.patched:
            await self.patched.wait_for(lambda: len(self.patches) >= count)

    def _list(self, request: web.Request, resource: str, ns: str | None) -> web.Response:
        self.lists.append(resource)
        fields = _field_selector(request)
        items = [
            {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
            for (obj_ns, _), obj in sorted(self.objects.get(resource, {}).items())
            if (ns is None or obj_ns == ns) and _selected(obj, fields)
        ]
        start = int(request.query.get("continue") or 0)
        limit = int(request.query.get("limit") or len(items) or 1)
        page = items[start : start + limit]
        meta: dict[str, str] = {"resourceVersion": str(self.version)}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        return web.json_response({"kind": "List", "metadata": meta, "items": page})

    async def _watch(
        self, request: web.Request, resource: str, ns: str | None
    ) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or self.version)
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        if self.empty_watches:
            return response
        if since < self.oldest:
            gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            return response
        watch = _Watch(resource=resource, namespace=ns, fields=_field_selector(request))
        for version, event, res, obj in self.history:
            if (
                version > since
                and res == resource
                and ns in (None, obj["metadata"].get("namespace", ""))
                and _selected(obj, watch.fields)
            ):
                watch.queue.put_nowait({"type": event, "object": obj})
        self.watches.append(watch)
        async with self.watching:
            self.watching.notify_all()
        try:
            while (event := await watch.queue.get()) is not None:
                await response.write(json.dumps(event).encode() + b"\n")
        finally:
            self.watches.remove(watch)
        return response


@contextlib.asynccontextmanager
async def running_api(
    api: FakeKubeApi, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[FakeKubeApi]:
    """Serve ``api`` on 127.0.0.1 (over TLS with ``ssl_context``, as a real API server)."""
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", api._handle)
    app.router.add_route("PATCH", "/{tail:.*}", api._patch)
    app.router.add_route("POST", "/{tail:.*}", api._write)
    app.router.add_route("PUT", "/{tail:.*}", api._write)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    scheme = "https" if ssl_context else "http"
    api.url = f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield api
    finally:
        api.drop_watches()
        await runner.cleanup()


def _resource_of(obj: dict[str, Any]) -> str:
    return f"{obj['apiVersion']}/{PLURALS[obj['kind']]}"


def _status(code: int, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "message": message}  # fmt: skip
    return web.json_response(body, status=code)


def _field_selector(request: web.Request) -> dict[str, str]:
    """``fieldSelector=a=b,c.d=e`` as {"a": "b", "c.d": "e"} (equality only)."""
    raw = request.query.get("fieldSelector") or ""
    return dict(term.split("=", 1) for term in raw.split(",") if "=" in term)


def _selected(obj: dict[str, Any], fields: dict[str, str]) -> bool:
    for path, wanted in fields.items():
        value: Any = obj
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if str(value) != wanted:
            return False
    return True


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386: mappings merge, null deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _locate(path: str) -> tuple[str, str, list[str]]:
    """A request's path as (group/version/plural, namespace or "", what follows the plural:
    [plural, name, subresource...])."""
    parts = path.strip("/").split("/")
    parts = parts[1:] if parts[0] == "apis" else ["", *parts[1:]]
    group, version, rest = parts[0], parts[1], parts[2:]
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":  # not the list of Namespaces itself
        namespace, rest = rest[1], rest[2:]
    return f"{group}/{version}/{rest[0]}".lstrip("/"), namespace, rest
