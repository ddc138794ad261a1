"""Status written back to the cluster (gateway/kubestatus.py) against the in-memory API
server: conditions of Sluice's GatewayClass, Gateway, listeners and routes with the spec's
reasons, other controllers' route entries kept, nothing written twice, and changes
reported as they come."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any

import trustme

from gateway.app import running_gateway
from gateway.kube import ClusterSource
from gateway.kubeapi import ApiServer
from tests.component.fakekube import FakeKubeApi, running_api
from tests.component.harness import free_port, until

GW = "gateway.networking.k8s.io/v1"
ISTIO = "istio.io/gateway-controller"


def _meta(name: str, namespace: str | None = "default") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "generation": 1}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _class(name: str, controller: str) -> dict[str, Any]:
    return {"apiVersion": GW, "kind": "GatewayClass", "metadata": _meta(name, None),
            "spec": {"controllerName": controller}}  # fmt: skip


def _gateway(name: str, cls: str, listeners: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": GW, "kind": "Gateway", "metadata": _meta(name),
            "spec": {"gatewayClassName": cls, "listeners": listeners}}  # fmt: skip


def _route(name: str, parents: list[dict[str, Any]], backend: str) -> dict[str, Any]:
    return {"apiVersion": GW, "kind": "HTTPRoute", "metadata": _meta(name),
            "spec": {"parentRefs": parents,
                     "rules": [{"backendRefs": [{"name": backend, "port": 80}]}]}}  # fmt: skip


def _service(name: str) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name),
         "spec": {"ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {**_meta(f"{name}-1"), "labels": {"kubernetes.io/service-name": name}},
         "addressType": "IPv4", "endpoints": [{"addresses": ["127.0.0.1"]}],
         "ports": [{"name": "http", "port": free_port()}]},
    ]  # fmt: skip


async def _settled(writer: Any) -> None:
    async with asyncio.timeout(10):
        await writer.settled.wait()


def _events(cluster: ClusterSource, kind: str) -> int:
    return sum(sum(r.events.values()) for r in cluster.reflectors if r.resource.kind == kind)


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", ())}


def _status(api: FakeKubeApi, plural: str, name: str, ns: str = "default") -> dict[str, Any]:
    resource = f"gateway.networking.k8s.io/v1/{plural}"
    obj = api.objects[resource][("" if plural == "gatewayclasses" else ns, name)]
    return obj.get("status") or {}


def _ours(route_status: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in route_status.get("parents", ())
            if p["controllerName"] == "sluice.dev/gateway-controller"]  # fmt: skip


async def test_status_reports_what_is_served_and_is_written_only_when_it_changes():
    http, https, tcp = free_port(), free_port(), free_port()
    theirs_entry = {
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "theirs"},
        "controllerName": ISTIO,
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "", "lastTransitionTime": "2026-11-01T00:00:00Z"}],
    }  # fmt: skip
    app = _route("app", [{"name": "gw"}, {"name": "theirs"}], "svc")
    app["status"] = {"parents": [theirs_entry]}
    async with running_api(FakeKubeApi()) as api:
        api.put(
            _class("sluice", "sluice.dev/gateway-controller"),
            _class("istio", ISTIO),
            _gateway("gw", "sluice", [
                {"name": "web", "port": http, "protocol": "HTTP"},
                {"name": "secure", "port": https, "protocol": "HTTPS",
                 "tls": {"certificateRefs": [{"name": "cert"}]}},
                {"name": "raw", "port": tcp, "protocol": "TCP"},
            ]),
            _gateway("theirs", "istio", [{"name": "web", "port": 80, "protocol": "HTTP"}]),
            *_service("svc"),
            app,
            _route("broken", [{"name": "gw", "sectionName": "web"}], "nope"),
            _route("astray", [{"name": "gw", "sectionName": "nowhere"}], "svc"),
        )  # fmt: skip
        cluster = ClusterSource(ApiServer(url=api.url), retry_s=0.05)
        async with running_gateway(
            [], address="127.0.0.1", admin_port=0, watch_interval_s=None, cluster=cluster
        ) as gw:
            async with asyncio.timeout(10):
                await api.wait_patches(5)  # the class, the Gateway, three routes
            assert _conditions(_status(api, "gatewayclasses", "sluice")) == {
                "Accepted": ("True", "Accepted")
            }
            assert _status(api, "gatewayclasses", "istio") == {}  # another controller's
            assert _status(api, "gateways", "theirs") == {}
            status = _status(api, "gateways", "gw")
            assert _conditions(status) == {
                "Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed")
            }  # fmt: skip
            listeners = {x["name"]: x for x in status["listeners"]}
            assert listeners["web"]["attachedRoutes"] == 2  # app and broken, not astray
            assert _conditions(listeners["web"])["Programmed"] == ("True", "Programmed")
            secure = _conditions(listeners["secure"])
            assert secure["ResolvedRefs"] == ("False", "InvalidCertificateRef")
            assert secure["Programmed"] == ("False", "Invalid")
            assert _conditions(listeners["raw"])["Accepted"] == ("False", "UnsupportedProtocol")
            assert listeners["raw"]["supportedKinds"] == []
            app_status = _status(api, "httproutes", "app")
            assert theirs_entry in app_status["parents"]  # kept as it was
            [ours] = _ours(app_status)
            assert ours["parentRef"]["name"] == "gw"
            assert _conditions(ours) == {
                "Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")
            }  # fmt: skip
            assert all(c["observedGeneration"] == 1 for c in ours["conditions"])
            [broken] = _ours(_status(api, "httproutes", "broken"))
            assert _conditions(broken)["ResolvedRefs"] == ("False", "BackendNotFound")
            [astray] = _ours(_status(api, "httproutes", "astray"))
            assert _conditions(astray)["Accepted"] == ("False", "NoMatchingParent")
            accepted_at = status["conditions"][0]["lastTransitionTime"]

            # a new route: written for it, and the Gateway's count; nothing else again
            written = len(api.patches)
            api.put(_route("later", [{"name": "gw", "sectionName": "web"}], "svc"))
            async with asyncio.timeout(10):
                await api.wait_patches(written + 2)
            paths = [path for path, _ in api.patches[written:]]
            assert sorted(p.rsplit("/", 2)[-2] for p in paths) == ["gw", "later"]
            status = _status(api, "gateways", "gw")
            assert {x["name"]: x["attachedRoutes"] for x in status["listeners"]}["web"] == 3
            assert status["conditions"][0]["lastTransitionTime"] == accepted_at

            # the certificate arrives: the HTTPS listener is served and says so
            cert = trustme.CA().issue_cert("s.test")
            pem = {
                "tls.crt": cert.cert_chain_pems[0].bytes(),
                "tls.key": cert.private_key_pem.bytes(),
            }
            data = {k: base64.b64encode(v).decode() for k, v in pem.items()}
            api.put({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                     "metadata": _meta("cert"), "data": data})  # fmt: skip
            async with asyncio.timeout(10):
                while True:
                    listeners = {x["name"]: x for x in _status(api, "gateways", "gw")["listeners"]}
                    if _conditions(listeners["secure"])["Programmed"][0] == "True":
                        break
                    await api.wait_patches(len(api.patches) + 1)
            assert _conditions(listeners["secure"])["ResolvedRefs"] == ("True", "ResolvedRefs")
            # it settles, and comparing again writes nothing
            assert gw.status is not None
            await _settled(gw.status)
            before = len(api.patches)
            gw.status.changed()
            await _settled(gw.status)
            assert len(api.patches) == before
            assert "error" not in gw.status.writes  # (a 409 is possible: the watch behind)
            written = gw.ctx.metrics.registry.get_sample_value(
                "sluice_kubernetes_status_writes_total", {"result": "ok"}
            )
            assert written == gw.status.writes["ok"] == len(api.patches)  # settled: none in flight

            # another controller's write to a route's status changes nothing Sluice routes
            # by: no rebuild
            events = _events(cluster, "HTTPRoute")
            theirs_now = dict(api.objects["gateway.networking.k8s.io/v1/httproutes"][
                ("default", "app")])  # fmt: skip
            api.put({**theirs_now, "status": {"parents": [theirs_entry]}})
            await until(lambda: _events(cluster, "HTTPRoute") > events)
            assert not cluster.rebuild_pending

            # a route that leaves Sluice's Gateway loses Sluice's entry; one whose spec
            # Sluice cannot read is reported not accepted
            later = _route("later", [{"name": "theirs"}], "svc")
            astray = _route("astray", [{"name": "gw", "sectionName": "nowhere"}], "svc")
            astray["spec"]["rules"][0]["colour"] = "red"  # an unknown field: left out
            for changed in (later, astray):  # a spec update keeps the status (its subresource)
                changed["status"] = _status(api, "httproutes", changed["metadata"]["name"])
            api.put(later, astray)
            async with asyncio.timeout(10):
                while (
                    _ours(_status(api, "httproutes", "later"))
                    or _conditions(_ours(_status(api, "httproutes", "astray"))[0])["Accepted"][1]
                    != "UnsupportedValue"
                ):
                    await api.wait_patches(len(api.patches) + 1)
            assert "parents" in _status(api, "httproutes", "later")


async def test_no_status_is_written_when_asked_not_to():
    async with running_api(FakeKubeApi()) as api:
        api.put(
            _class("sluice", "sluice.dev/gateway-controller"),
            _gateway("gw", "sluice", [{"name": "web", "port": free_port(), "protocol": "HTTP"}]),
        )
        cluster = ClusterSource(ApiServer(url=api.url), retry_s=0.05)
        async with running_gateway(
            [], address="127.0.0.1", admin_port=0, watch_interval_s=None, cluster=cluster,
            write_status=False,
        ) as gw:  # fmt: skip
            assert gw.status is None
            assert await gw.reloader.reload()
        assert api.patches == []


async def test_one_replica_writes_status_and_another_takes_over_when_it_stops():
    """Two replicas: the one holding the Lease writes; the other writes nothing until the
    first stops (and releases the Lease), then reports the next change itself."""
    port = free_port()
    async with running_api(FakeKubeApi()) as api, contextlib.AsyncExitStack() as stack:
        api.put(
            _class("sluice", "sluice.dev/gateway-controller"),
            _gateway("gw", "sluice", [{"name": "web", "port": port, "protocol": "HTTP"}]),
        )

        async def replica() -> tuple[contextlib.AsyncExitStack, Any]:
            own = contextlib.AsyncExitStack()
            cluster = ClusterSource(ApiServer(url=api.url), retry_s=0.05)
            gw = await own.enter_async_context(running_gateway(
                [], address="127.0.0.1", admin_port=0, watch_interval_s=None, cluster=cluster,
                status_lease_s=1.5,
            ))  # fmt: skip
            return own, gw

        first_stack, first = await replica()
        await until(lambda: first.elector.is_leader)
        await _settled(first.status)
        second_stack, second = await replica()
        stack.push_async_callback(second_stack.aclose)
        written = len(api.patches)
        api.put(_route("r", [{"name": "gw"}], "svc"))
        async with asyncio.timeout(10):
            await api.wait_patches(written + 2)  # the route and the Gateway's count
        await _settled(first.status)
        assert not second.elector.is_leader
        assert second.status.writes == {}  # it stood by: compared nothing, wrote nothing
        assert not second.status.settled.is_set()
        lease = api.objects["coordination.k8s.io/v1/leases"][("default", "sluice-status-writer")]
        assert lease["spec"]["holderIdentity"] == first.elector.identity

        await first_stack.aclose()  # stops, releasing the Lease
        await until(lambda: second.elector.is_leader)
        written = len(api.patches)
        api.put(_route("r2", [{"name": "gw"}], "svc"))
        async with asyncio.timeout(10):
            await api.wait_patches(written + 2)
        await _settled(second.status)
        assert second.status.writes.get("ok", 0) >= 2
        holder = api.objects["coordination.k8s.io/v1/leases"][("default", "sluice-status-writer")]
        assert holder["spec"]["holderIdentity"] == second.elector.identity
        assert holder["spec"]["leaseTransitions"] == 1
