"""The cluster as a config source: Sluice lists and watches a Kubernetes API server (a fake
one on 127.0.0.1, tests/component/fakekube.py) and routes by what it holds, as it changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import trustme
import yaml
from aiohttp import web

from gateway.app import RunningGateway, running_gateway
from gateway.kube import ClusterSource
from gateway.kubeapi import RESOURCES, ApiClient, ApiServer, KubeError
from loadtests.fleet import Fleet, FleetSpec, ReplicaSpec
from loadtests.targets import running_process, sluice_command
from tests.component.fakekube import CORE_AND_GATEWAY, FakeKubeApi, running_api
from tests.component.harness import backend, free_port, gauge

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SERVED = "x-gateway-destination-endpoint-served"
GW = "gateway.networking.k8s.io/v1"


def _meta(name: str, namespace: str | None = "default", **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _gateway(port: int, cls: str = "sluice", name: str = "gw") -> dict[str, Any]:
    listener = {"name": "http", "port": port, "protocol": "HTTP"}
    return {"apiVersion": GW, "kind": "Gateway", "metadata": _meta(name),
            "spec": {"gatewayClassName": cls, "listeners": [listener]}}  # fmt: skip


def _class(name: str, controller: str) -> dict[str, Any]:
    return {"apiVersion": GW, "kind": "GatewayClass", "metadata": _meta(name, None),
            "spec": {"controllerName": controller}}  # fmt: skip


def _route(name: str, backend_ref: dict[str, Any], prefix: str = "/", gw: str = "gw") -> dict:
    return {"apiVersion": GW, "kind": "HTTPRoute", "metadata": _meta(name),
            "spec": {"parentRefs": [{"name": gw}],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
                                "backendRefs": [backend_ref]}]}}  # fmt: skip


def _service(name: str, port: int) -> list[dict[str, Any]]:
    """A Service and the EndpointSlice the cluster keeps for it (one address: 127.0.0.1)."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, app=name),
         "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "selector": {"app": name},
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                             "targetPort": 8080}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": _meta(f"{name}-abcde", **{"kubernetes.io/service-name": name, "app": name}),
         "addressType": "IPv4",
         "endpoints": [{"addresses": ["127.0.0.1"],
                        "conditions": {"ready": True, "serving": True, "terminating": False},
                        "nodeName": "node-1", "targetRef": {"kind": "Pod", "name": f"{name}-0"}}],
         "ports": [{"name": "http", "port": port, "protocol": "TCP"}]},
    ]  # fmt: skip


def _pool(ports: list[int]) -> dict[str, Any]:
    return {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
            "metadata": _meta("llama"),
            "spec": {"selector": {"matchLabels": {"app": "llama"}},
                     "targetPorts": [{"number": p} for p in ports],
                     "endpointPickerRef": {"name": "unused-epp", "port": {"number": 9002},
                                           "failureMode": "FailOpen"}}}  # fmt: skip


def _pod(name: str, *, ready: bool, app: str = "llama") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": _meta(name, app=app),
            "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                       "conditions": [{"type": "Initialized", "status": "True"},
                                      {"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "vllm", "restartCount": 0}]}}  # fmt: skip


def _epp_service() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta("unused-epp"),
            "spec": {"ports": [{"name": "grpc", "port": 9002}]}}  # fmt: skip


@contextlib.asynccontextmanager
async def _gateway_on(api: FakeKubeApi, **api_kw: Any) -> AsyncIterator[RunningGateway]:
    cluster = ClusterSource(ApiServer(url=api.url, **api_kw), retry_s=0.05)
    async with running_gateway(
        [], address="127.0.0.1", admin_port=0, watch_interval_s=None, seed=1, cluster=cluster
    ) as gw:
        yield gw


async def _until(gw: RunningGateway, done: Callable[[], bool]) -> None:
    """Wait, reload by reload, until ``done()`` holds (the watch has delivered a change)."""
    async with asyncio.timeout(10):
        while not done():
            await gw.reloader.wait_attempts(gw.reloader.attempts + 1)


def _ok_backend(text: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=text)

    return backend(handler)


@pytest.mark.single_loop
async def test_pods_of_a_pool_come_and_go_with_the_cluster(tmp_path):
    """A request for a pool whose only pod is not ready is held (scale from zero); the pod
    turning Ready in the API releases it to that pod's ranks (the pool's targetPorts)."""
    port = free_port()
    spec = FleetSpec(replicas=(ReplicaSpec(), ReplicaSpec()), time_scale=0.05)
    async with Fleet(spec) as fleet, running_api(FakeKubeApi()) as api:
        ranks = [r.port for r in fleet.replicas]
        api.put(
            _class("sluice", "sluice.dev/gateway-controller"),
            _gateway(port),
            _route(
                "llm",
                {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "llama"},
            ),
            _pool(ranks),
            _epp_service(),
            _pod("llama-0", ready=False),
            _pod("other-0", ready=True, app="other"),
        )
        async with _gateway_on(api) as gw, httpx.AsyncClient(timeout=30) as client:
            target = gw.ctx.pools.current("default/llama")
            assert target is not None
            assert [(e.key, e.ready) for e in target.endpoints] == [
                (f"127.0.0.1:{p}", False) for p in ranks
            ]
            activated = asyncio.Event()
            gw.ctx.admission.activation_listeners.append(
                lambda pool, active: activated.set() if active else None
            )
            body = {"model": MODEL, "prompt": "cold start", "max_tokens": 2}
            held = asyncio.create_task(
                client.post(f"http://127.0.0.1:{port}/v1/completions", json=body)
            )
            async with asyncio.timeout(5):
                await activated.wait()
            assert not held.done()
            api.put(_pod("llama-0", ready=True))
            async with asyncio.timeout(30):
                answer = await held
            assert answer.status_code == 200
            assert answer.headers[SERVED] in {f"127.0.0.1:{p}" for p in ranks}
            # a pod update that changes nothing Sluice reads rebuilds nothing, nor does a
            # change to a pod no pool selects or a Service nothing names
            rebuilds = gw.cluster.rebuilds if gw.cluster else -1
            api.put(_pod("other-0", ready=False, app="other"), *_service("unused", 1))
            ready = _pod("llama-0", ready=True)
            ready["status"]["containerStatuses"][0]["restartCount"] = 3
            api.put(ready)
            api.delete(_pod("llama-0", ready=True))
            await _until(gw, lambda: not gw.ctx.pools.current("default/llama").endpoints)
            assert gw.cluster is not None
            assert gw.cluster.rebuilds == rebuilds + 1


async def test_routes_services_and_bad_objects_follow_the_api(tmp_path, caplog):
    """Routes and Services are applied as they change; a broken HTTPRoute is left out (with
    its error) while the rest applies; a Gateway of another controller is not served; one
    whose port cannot be bound is left out, and blocks nothing else."""
    caplog.set_level(logging.WARNING, "sluice")
    port, foreign_port = free_port(), free_port()
    async with (
        _ok_backend("blue") as blue,
        _ok_backend("green") as green,
        running_api(FakeKubeApi()) as api,
    ):
        taken = socket.create_server(("127.0.0.1", 0))  # another process holds this port
        taken_port = taken.getsockname()[1]
        api.put(_gateway(taken_port, name="taken"))
        api.put(
            _class("sluice", "sluice.dev/gateway-controller"),
            _class("istio", "istio.io/gateway-controller"),
            _gateway(port),
            _gateway(foreign_port, cls="istio", name="theirs"),
            *_service("blue", blue.port),
            *_service("green", green.port),
            _route("app", {"name": "blue", "port": 80}),
        )
        async with _gateway_on(api) as gw, httpx.AsyncClient(timeout=10) as client:
            url = f"http://127.0.0.1:{port}/hello"
            assert (await client.get(url)).text == "blue"
            assert foreign_port not in gw.ctx.holder.table.ports
            bad = _route("bad", {"name": "green", "port": 80}, prefix="/bad")
            bad["spec"]["rules"][0]["colour"] = "red"
            api.put(bad)
            api.put(_route("app", {"name": "green", "port": 80}))
            await _until(gw, lambda: _served_text(gw) == ("green",))
            assert (await client.get(url)).text == "green"
            assert (await client.get(f"http://127.0.0.1:{port}/bad/x")).text == "green"  # "/"
            result = gw.reloader.last_result
            assert result is not None
            assert result.ok
            bad_name = "kubernetes:HTTPRoute.gateway.networking.k8s.io/default/bad"
            assert any(i.file == bad_name and i.path.endswith("colour") for i in result.issues), (
                result.issues
            )
            assert bad_name in caplog.text
            assert f"port {taken_port}: warning: cannot listen" in caplog.text
            assert any(i.path == f"port {taken_port}" for i in result.issues)
            admin = f"http://127.0.0.1:{gw.admin_port}/readyz"
            ready = await client.get(admin)  # the other Gateways stay in rotation
            assert ready.status_code == 200
            assert ready.json()["unbound"] == [taken_port]
            taken.close()  # the port is free now: tried again without any change
            await _until(gw, lambda: taken_port in gw.listeners.ports)
            assert (await client.get(admin)).json()["unbound"] == []
    assert "theirs" not in str(gw.ctx.holder.table.ports)


def _served_text(gw: RunningGateway) -> tuple[str, ...]:
    """The backendRef names of the HTTPRoute default/app in the running table."""
    return tuple(n for r in gw.ctx.holder.table.rules if r.route == "default/app"
                 for n in r.backend_names)  # fmt: skip


async def test_a_watch_too_old_lists_again_and_an_outage_keeps_the_last_table(tmp_path):
    """410 Gone: the watch lists again and sees what changed meanwhile. An API that fails
    leaves the running table serving; it resumes when the API is back. Resources the API
    does not serve (CRDs not installed) count as empty. The bearer token is sent."""
    port = free_port()
    async with (
        _ok_backend("blue") as blue,
        _ok_backend("green") as green,
        running_api(FakeKubeApi(served=CORE_AND_GATEWAY, token="s3cret")) as api,
    ):
        token = tmp_path / "token"
        token.write_text("s3cret\n")
        api.put(
            _class("sluice", "sluice/gateway-controller"),
            _gateway(port),
            *_service("blue", blue.port),
            *_service("green", green.port),
            _route("app", {"name": "blue", "port": 80}),
        )
        async with (
            _gateway_on(api, token_file=str(token)) as gw,
            httpx.AsyncClient(timeout=10) as client,
        ):
            url = f"http://127.0.0.1:{port}/"
            assert (await client.get(url)).text == "blue"
            await api.wait_watches(8)  # the core and Gateway API resources
            lists = api.lists.count("gateway.networking.k8s.io/v1/httproutes")
            # the watches end, the route changes and the history is forgotten before the
            # watches come back: they ask for a version the server no longer has
            api.drop_watches()
            api.put(_route("app", {"name": "green", "port": 80}))
            api.compact()
            await _until(gw, lambda: _served_text(gw) == ("green",))
            assert api.lists.count("gateway.networking.k8s.io/v1/httproutes") == lists + 1
            assert (await client.get(url)).text == "green"
            api.failing = True
            api.drop_watches()
            async with asyncio.timeout(5):
                await api.refused.wait()
            assert (await client.get(url)).text == "green"
            assert _total(gw, "sluice_kubernetes_errors_total") >= 1
            api.failing = False
            api.put(_route("app", {"name": "blue", "port": 80}))
            await _until(gw, lambda: _served_text(gw) == ("blue",))
            assert (await client.get(url)).text == "blue"
            route = {"resource": "HTTPRoute.gateway.networking.k8s.io"}
            assert gauge(gw, "sluice_kubernetes_objects", **route) == 1
            assert gauge(gw, "sluice_kubernetes_synced", **route) == 1
            absent = {"resource": "TrafficPolicy.sluice.dev"}  # its CRD is not installed
            registry = gw.ctx.metrics.registry
            assert registry.get_sample_value("sluice_kubernetes_synced", absent) == 0
            assert gauge(gw, "sluice_kubernetes_rebuilds_total") >= 2


def _total(gw: RunningGateway, name: str) -> float:
    return sum(
        sample.value
        for family in gw.ctx.metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    )


@pytest.mark.single_loop
async def test_sluice_serve_reads_a_cluster_by_its_api_url(tmp_path):
    """`sluice serve --kubernetes-api URL` with no config file: listens on the cluster's
    Gateway and routes by its objects; without either source it says what is missing."""
    port, admin = free_port(), free_port()
    async with _ok_backend("blue") as blue, running_api(FakeKubeApi()) as api:
        api.put(
            _class("sluice", "sluice.dev/gateway-controller"),
            _gateway(port),
            *_service("blue", blue.port),
            _route("app", {"name": "blue", "port": 80}),
        )
        cmd = [*sluice_command(), "serve", "--kubernetes-api", api.url, "--namespace", "default",
               "--address", "127.0.0.1", "--admin", f"127.0.0.1:{admin}"]  # fmt: skip
        async with (
            running_process(cmd, tmp_path / "sluice.log", f"http://127.0.0.1:{admin}/readyz", 20),
            httpx.AsyncClient(timeout=10) as client,
        ):
            assert (await client.get(f"http://127.0.0.1:{port}/")).text == "blue"
        assert "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes" in api.paths
        assert "/api/v1/namespaces" in api.paths  # cluster-scoped kinds: never namespaced
    bare = await asyncio.create_subprocess_exec(
        *sluice_command(), "serve", stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(20):
        _, err = await bare.communicate()
    assert bare.returncode == 2
    assert b"--config, --kubernetes or --kubeconfig is required" in err


def test_the_manifests_grant_and_define_every_watched_resource():
    """config/kubernetes: the ClusterRole lets Sluice list and watch every resource it asks
    for, the Deployment runs as the bound ServiceAccount, and crds.yaml defines every
    sluice.dev kind with the scope Sluice reads it at."""
    folder = Path(__file__).resolve().parents[2] / "config" / "kubernetes"
    docs = list(yaml.safe_load_all((folder / "sluice.yaml").read_text()))
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    granted = {(g, r) for rule in role["rules"] if {"list", "watch"} <= set(rule["verbs"])
               for g in rule["apiGroups"] for r in rule["resources"]}  # fmt: skip
    assert {(r.group, r.plural) for r in RESOURCES} <= granted
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    assert "--kubernetes" in pod["containers"][0]["args"]
    crds = {
        (d["spec"]["names"]["plural"], d["spec"]["scope"])
        for d in yaml.safe_load_all((folder / "crds.yaml").read_text())
    }
    assert crds == {
        (r.plural, "Namespaced" if r.namespaced else "Cluster")
        for r in RESOURCES
        if r.group == "sluice.dev"
    }


async def test_lists_are_paged_and_a_missing_kind_is_asked_for_again(tmp_path):
    """Lists follow `continue` page by page. The Inference Extension's CRDs installed after
    Sluice started: the pool kind, absent (404) at first, is listed again and served."""
    port = free_port()
    async with (
        _ok_backend("blue") as blue,
        running_api(FakeKubeApi(served=CORE_AND_GATEWAY)) as api,
    ):
        pods = [_pod(f"web-{i}", ready=True, app="web") for i in range(5)]
        api.put(_class("sluice", "sluice.dev/gateway-controller"), _gateway(port), *pods)
        api.put(*_service("blue", blue.port), _route("app", {"name": "blue", "port": 80}))
        cluster = ClusterSource(ApiServer(url=api.url), list_page=2, absent_retry_s=0.05)
        async with running_gateway(
            [], address="127.0.0.1", admin_port=0, watch_interval_s=None, cluster=cluster
        ) as gw:
            assert api.lists.count("v1/pods") == 3  # 5 pods, 2 a page
            assert len([d for d in cluster.documents() if d.data["kind"] == "Pod"]) == 5
            assert gw.ctx.pools.current("default/llama") is None
            api.served |= {"inference.networking.k8s.io/v1/inferencepools"}
            api.put(_pool([blue.port]), _epp_service(), _pod("llama-0", ready=True),
                    _route("app", {"group": "inference.networking.k8s.io",
                                   "kind": "InferencePool", "name": "llama"}))  # fmt: skip
            await _until(gw, lambda: gw.ctx.pools.current("default/llama") is not None)
            target = gw.ctx.pools.current("default/llama")
            assert [e.key for e in target.endpoints] == [f"127.0.0.1:{blue.port}"]


def test_in_cluster_settings_come_from_the_pod(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeError, match="not running in a pod"):
        ApiServer.in_cluster()
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    api = ApiServer.in_cluster()
    assert api.url == "https://[fd00::1]:6443"
    assert api.token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert isinstance(ApiServer(url="https://10.0.0.1:443").ssl_context(), ssl.SSLContext)
    assert ApiServer(url="http://127.0.0.1:8001").ssl_context() is None
    token = tmp_path / "token"
    token.write_text("first\n")
    with_token = ApiServer(url="http://127.0.0.1:8001", token_file=str(token))
    assert with_token.headers()["Authorization"] == "Bearer first"
    token.write_text("rotated")  # the kubelet rotates projected tokens: read on every request
    assert with_token.headers()["Authorization"] == "Bearer rotated"


async def test_objects_stand_through_api_errors_and_one_broken_kind_does_not_block_start():
    """A kind whose list keeps failing (500) is left to the background after a few tries at
    start-up; the rest serves. Pods listed once stay through a 404 and a 500 on later lists
    (client-go's informers do the same), so a pool keeps its endpoints."""
    port = free_port()
    async with _ok_backend("llama") as llama, running_api(FakeKubeApi()) as api:
        api.failing_resources = {"v1/namespaces"}
        api.put(_class("sluice", "sluice.dev/gateway-controller"), _gateway(port),
                _pool([llama.port]), _epp_service(), _pod("llama-0", ready=True),
                _route("llm", {"group": "inference.networking.k8s.io",
                               "kind": "InferencePool", "name": "llama"}))  # fmt: skip
        async with _gateway_on(api) as gw:
            endpoints = gw.ctx.pools.current("default/llama").endpoints
            assert [e.key for e in endpoints] == [f"127.0.0.1:{llama.port}"]
            api.failing_resources = set()
            api.served -= {"v1/pods"}
            api.not_found.clear()
            api.drop_watches()
            async with asyncio.timeout(10):
                await api.not_found.wait()  # the pods' relist after the dropped watch
            api.served |= {"v1/pods"}
            api.failing_resources = {"v1/pods"}
            api.refused.clear()
            async with asyncio.timeout(10):
                await api.refused.wait()  # the next relist: 500
            # any change rebuilds the table from what the store holds: the pods still
            api.put(_route("probe", {"name": "unused-epp", "port": 9002}, prefix="/probe"))
            await _until(gw, lambda: any(r.route == "default/probe" for r in
                                         gw.ctx.holder.table.rules))  # fmt: skip
            assert gw.ctx.pools.current("default/llama").endpoints == endpoints


async def test_a_watch_that_ends_at_once_backs_off():
    """client-go's rule: a watch that ends within a second with no event is a failure (and
    backs off), not a reason to ask again at once."""
    async with running_api(FakeKubeApi()) as api:
        api.put(_class("sluice", "sluice.dev/gateway-controller"))
        classes = next(r for r in RESOURCES if r.kind == "GatewayClass")
        cluster = ClusterSource(ApiServer(url=api.url), resources=(classes,))
        try:
            await cluster.start()
            api.empty_watches = True
            reflector = cluster.reflectors[0]
            with pytest.raises(KubeError, match="ended at once"):
                await reflector._watch()
        finally:
            await cluster.close()


async def test_the_api_is_reached_over_tls_verified_by_the_cluster_ca(tmp_path):
    """In a pod, the API is HTTPS and its certificate is checked against the service
    account's ca.crt: listing works with that CA and fails without it."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca_file = tmp_path / "ca.crt"
    ca.cert_pem.write_to_path(str(ca_file))
    async with running_api(FakeKubeApi(), ssl_context=server) as api:
        api.put(_class("sluice", "sluice.dev/gateway-controller"))
        trusted = ApiClient(ApiServer(url=api.url, ca_file=str(ca_file)), request_timeout_s=10)
        stranger = ApiClient(ApiServer(url=api.url), request_timeout_s=10)
        classes = next(r for r in RESOURCES if r.kind == "GatewayClass").path(None)
        try:
            listed = await trusted.get_json(classes, {})
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await stranger.get_json(classes, {})
        finally:
            await trusted.close()
            await stranger.close()
    assert [item["metadata"]["name"] for item in listed["items"]] == ["sluice"]


async def test_a_gateway_with_none_of_its_ports_bound_is_not_ready():
    """One unbindable port among others leaves the replica ready (see above); when it is
    the only one, the replica serves nothing and /readyz says so."""
    async with running_api(FakeKubeApi()) as api:
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            api.put(_class("sluice", "sluice.dev/gateway-controller"), _gateway(port))
            async with _gateway_on(api) as gw, httpx.AsyncClient(timeout=10) as client:
                ready = await client.get(f"http://127.0.0.1:{gw.admin_port}/readyz")
    assert ready.status_code == 503
    assert ready.json()["unbound"] == [port]
