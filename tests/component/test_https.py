"""HTTPS listeners on real sockets: TLS terminated with the listeners' Secrets, the
certificate chosen by SNI, 421 for a Host another listener serves, certificates renewed by a
reload without rebinding, and a certificate that does not load refused with its place."""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass

import httpx
import pytest
import trustme
import yaml
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from gateway.app import running_gateway
from gateway.configload import is_read
from gateway.kube import ClusterSource
from gateway.kubeapi import ApiServer
from loadtests.benchsupport import gateway_head
from routing.backends import referenced_objects
from tests.component.fakekube import FakeKubeApi, running_api
from tests.component.harness import backend, free_port, gateway_on, service_yaml, simple_route

CA = trustme.CA()


def _secret(name: str, cert: trustme.LeafCert, key: bytes | None = None) -> str:
    """A kubernetes.io/tls Secret of ``cert`` (and its own key, unless ``key``)."""
    crt = base64.b64encode(b"".join(b.bytes() for b in cert.cert_chain_pems)).decode()
    key_b64 = base64.b64encode(key or cert.private_key_pem.bytes()).decode()
    return f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: default}}
type: kubernetes.io/tls
data: {{tls.crt: {crt}, tls.key: {key_b64}}}
"""


def _config(port: int, backend_port: int, listeners: list[str], secrets: str) -> str:
    """Gateway ``gw`` with ``listeners``, a route to Service ``svc`` (``backend_port``) and
    ``secrets``."""
    routes = simple_route("svc") + service_yaml("svc", [backend_port])
    return gateway_head(port, listeners) + routes + secrets


def _https(name: str, port: int, secret: str, hostname: str | None = None) -> str:
    host = f", hostname: '{hostname}'" if hostname else ""
    return (
        f"{{name: {name}, port: {port}, protocol: HTTPS{host}, "
        f"tls: {{certificateRefs: [{{name: {secret}}}]}}}}"
    )


def _http(name: str, port: int) -> str:
    return f"{{name: {name}, port: {port}, protocol: HTTP}}"


async def _echo(request: web.Request) -> web.Response:
    return web.Response(text=f"proto={request.headers.get('X-Forwarded-Proto')}")


@dataclass
class Answer:
    status: int
    body: str
    peer_names: tuple[str, ...]  # the certificate's DNS names


async def _get(port: int, sni: str | None, host: str, *, ca: trustme.CA = CA) -> Answer:
    """One request over a new TLS connection to 127.0.0.1:port with ``sni`` (checked
    against the certificate when given) and ``host`` as the Host header."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.check_hostname = sni is not None
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=sni or ""
    )
    try:
        cert = writer.get_extra_info("peercert") or {}
        names = tuple(v for k, v in cert.get("subjectAltName", ()) if k == "DNS")
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return Answer(status=int(head.split(" ", 2)[1]), body=body, peer_names=names)


async def test_an_https_listener_terminates_tls_with_its_secret(tmp_path):
    port, plain = free_port(), free_port()
    cert = CA.issue_cert("api.example.com")
    listeners = [_https("https", port, "api-cert"), _http("http", plain)]
    async with (
        backend(_echo) as b,
        gateway_on(tmp_path, _config(port, b.port, listeners, _secret("api-cert", cert))) as gw,
    ):
        answer = await _get(port, "api.example.com", "api.example.com")
        assert (answer.status, answer.body) == (200, "proto=https")
        assert answer.peer_names == ("api.example.com",)
        # the same routes over the HTTP listener: plain, and the backend is told so
        reader, writer = await asyncio.open_connection("127.0.0.1", plain)
        writer.write(b"GET / HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).endswith(b"proto=http")
        writer.close()
        assert sorted(gw.listeners.ports) == sorted([port, plain])
        async with httpx.AsyncClient() as client:
            shown = await client.get(f"http://127.0.0.1:{gw.admin_port}/config")
        https = next(lt for lt in shown.json()["listeners"] if lt["port"] == port)
        assert (https["protocol"], https["certificates"]) == ("HTTPS", ["default/api-cert"])
        assert "PRIVATE KEY" not in shown.text  # the key is redacted
        assert "BEGIN CERTIFICATE" in shown.text


async def test_sni_chooses_the_listeners_certificate_and_a_host_elsewhere_is_421(tmp_path):
    port = free_port()
    a, b = CA.issue_cert("a.example.com"), CA.issue_cert("*.b.example.com")
    listeners = [
        _https("a", port, "a-cert", "a.example.com"),
        _https("b", port, "b-cert", "*.b.example.com"),
    ]
    secrets = _secret("a-cert", a) + _secret("b-cert", b)
    async with (
        backend(_echo) as be,
        gateway_on(tmp_path, _config(port, be.port, listeners, secrets)),
    ):
        first = await _get(port, "a.example.com", "a.example.com")
        assert (first.status, first.peer_names) == (200, ("a.example.com",))
        second = await _get(port, "x.b.example.com", "x.b.example.com")
        assert (second.status, second.peer_names) == (200, ("*.b.example.com",))
        # a's connection asked for b's host: b's certificate was never checked
        wrong = await _get(port, "a.example.com", "x.b.example.com")
        assert wrong.status == 421
        assert '"code": "misdirected_request"' in wrong.body
        # a Host with a port is the same listener's
        assert (await _get(port, "a.example.com", f"a.example.com:{port}")).status == 200
        # no listener for the name, or no name (SNI) on a port whose listeners all have one:
        # no certificate, the handshake fails (an alert, which the client's loop may report
        # as the connection reset), rather than some listener's certificate being shown
        for sni in ("other.example.com", None):
            with pytest.raises((ssl.SSLError, ConnectionResetError)) as failed:
                await _get(port, sni, "a.example.com")
            assert not isinstance(failed.value, ssl.SSLCertVerificationError)


async def test_a_client_without_sni_gets_the_listener_for_any_host_and_only_its_routes(tmp_path):
    port = free_port()
    named, anyhost = CA.issue_cert("a.example.com"), CA.issue_cert("gateway.example.com")
    listeners = [_https("a", port, "a-cert", "a.example.com"), _https("any", port, "any-cert")]
    secrets = _secret("a-cert", named) + _secret("any-cert", anyhost)
    async with (
        backend(_echo) as be,
        gateway_on(tmp_path, _config(port, be.port, listeners, secrets)),
    ):
        plain = await _get(port, None, "10.0.0.1")
        assert (plain.status, plain.peer_names) == (200, ("gateway.example.com",))
        # the named listener's routes need its certificate: a connection for it
        assert (await _get(port, None, "a.example.com")).status == 421
        assert (await _get(port, "a.example.com", "a.example.com")).status == 200


async def test_a_renewed_certificate_is_served_on_new_connections_without_rebinding(tmp_path):
    port = free_port()
    old_ca, new_ca = CA, trustme.CA()
    listeners = [_https("https", port, "cert")]
    async with backend(_echo) as be:
        config = _config(port, be.port, listeners, _secret("cert", old_ca.issue_cert("s.test")))
        async with gateway_on(tmp_path, config) as gw:
            server = gw.listeners._bound[port].socket_server
            assert (await _get(port, "s.test", "s.test", ca=old_ca)).status == 200
            renewed = _config(
                port, be.port, listeners, _secret("cert", new_ca.issue_cert("s.test"))
            )
            (tmp_path / "config.yaml").write_text(renewed)
            assert (await gw.reloader.reload()).ok
            assert (await _get(port, "s.test", "s.test", ca=new_ca)).status == 200
            with pytest.raises(ssl.SSLCertVerificationError):
                await _get(port, "s.test", "s.test", ca=old_ca)
            assert gw.listeners._bound[port].socket_server is server  # the same socket


async def test_a_certificate_that_does_not_load_refuses_the_reload_with_its_place(tmp_path):
    port = free_port()
    good, other = CA.issue_cert("s.test"), CA.issue_cert("s.test")
    async with backend(_echo) as be:
        listeners = [_https("https", port, "cert")]
        async with gateway_on(
            tmp_path, _config(port, be.port, listeners, _secret("cert", good))
        ) as gw:
            mismatched = _secret("cert", good, key=other.private_key_pem.bytes())
            (tmp_path / "config.yaml").write_text(_config(port, be.port, listeners, mismatched))
            result = await gw.reloader.reload()
            assert not result.ok
            issue = result.issues[0]
            assert issue.file == str(tmp_path / "config.yaml")
            assert issue.path == "data.tls.crt"
            assert "not the private key" in issue.message
            assert (await _get(port, "s.test", "s.test")).status == 200  # the old one serves
            encrypted = good.private_key_pem.bytes()
            key = serialization.load_pem_private_key(encrypted, None)
            locked = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"passphrase"),
            )
            (tmp_path / "config.yaml").write_text(
                _config(port, be.port, listeners, _secret("cert", good, key=locked))
            )
            result = await gw.reloader.reload()
            assert not result.ok
            assert "tls.key is encrypted" in result.issues[0].message


async def test_a_port_switches_between_http_and_https_on_reload(tmp_path):
    port = free_port()
    cert = CA.issue_cert("s.test")
    async with backend(_echo) as be:
        http = [_http("web", port)]
        async with gateway_on(tmp_path, _config(port, be.port, http, "")) as gw:
            (tmp_path / "config.yaml").write_text(
                _config(port, be.port, [_https("web", port, "cert")], _secret("cert", cert))
            )
            assert (await gw.reloader.reload()).ok
            assert (await _get(port, "s.test", "s.test")).body == "proto=https"
            (tmp_path / "config.yaml").write_text(_config(port, be.port, http, ""))
            assert (await gw.reloader.reload()).ok
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: s.test\r\nConnection: close\r\n\r\n")
            assert (await asyncio.wait_for(reader.read(), 5)).endswith(b"proto=http")
            writer.close()


async def test_an_https_port_a_reload_drops_stops_listening(tmp_path):
    port, plain = free_port(), free_port()
    http = [_http("web", plain)]
    both = [_https("https", port, "cert"), *http]
    async with backend(_echo) as be:
        secret = _secret("cert", CA.issue_cert("s.test"))
        async with gateway_on(tmp_path, _config(port, be.port, both, secret)) as gw:
            assert (await _get(port, "s.test", "s.test")).status == 200
            (tmp_path / "config.yaml").write_text(_config(port, be.port, http, secret))
            assert (await gw.reloader.reload()).ok
            assert gw.listeners.ports == (plain,)
            with pytest.raises(ConnectionRefusedError):
                await _get(port, "s.test", "s.test")


def _k8s_secret(name: str, cert: trustme.LeafCert, **extra: str) -> dict[str, object]:
    data = {
        "tls.crt": base64.b64encode(cert.cert_chain_pems[0].bytes()).decode(),
        "tls.key": base64.b64encode(cert.private_key_pem.bytes()).decode(),
        **extra,
    }
    meta = {"name": name, "namespace": "default", "resourceVersion": "1"}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta,
            "type": "kubernetes.io/tls", "data": data}  # fmt: skip


async def test_in_a_cluster_the_listeners_secret_is_watched_and_others_are_not_read(tmp_path):
    """An HTTPS Gateway in the API is served with its Secret's certificate and follows the
    Secret when it is renewed; Secrets no listener names are neither kept whole (only
    tls.crt and tls.key are) nor a reason to rebuild."""
    port = free_port()
    first, renewed = CA.issue_cert("s.test"), CA.issue_cert("s.test", "renewed.s.test")
    gw_api = "gateway.networking.k8s.io/v1"
    listener = {"name": "https", "port": port, "protocol": "HTTPS",
                "tls": {"certificateRefs": [{"name": "cert"}]}}  # fmt: skip
    async with backend(_echo) as be, running_api(FakeKubeApi()) as api:
        service_docs = [d for d in yaml.safe_load_all(service_yaml("svc", [be.port])) if d]
        route = yaml.safe_load(simple_route("svc"))
        api.put(
            {"apiVersion": gw_api, "kind": "GatewayClass", "metadata": {"name": "sluice"},
             "spec": {"controllerName": "sluice.dev/gateway-controller"}},
            {"apiVersion": gw_api, "kind": "Gateway",
             "metadata": {"name": "gw", "namespace": "default"},
             "spec": {"gatewayClassName": "sluice", "listeners": [listener]}},
            route,
            *service_docs,
            _k8s_secret("cert", first, password="aHVudGVyMg=="),
            _k8s_secret("unrelated", first),
            {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
             "metadata": {"name": "db", "namespace": "default"}, "data": {"pw": "aHVudGVyMg=="}},
        )  # fmt: skip
        cluster = ClusterSource(ApiServer(url=api.url), retry_s=0.05)
        async with running_gateway(
            [], address="127.0.0.1", admin_port=0, watch_interval_s=None, cluster=cluster
        ) as gw:
            answer = await _get(port, "s.test", "s.test")
            assert (answer.status, answer.peer_names) == (200, ("s.test",))
            kept = [d.data for d in cluster.documents() if d.data.get("kind") == "Secret"]
            # only TLS Secrets are listed (a field selector), and of them only the key pair
            assert sorted(d["metadata"]["name"] for d in kept) == ["cert", "unrelated"]
            assert all(set(d["data"]) <= {"tls.crt", "tls.key"} for d in kept)
            config = gw.ctx.holder.table.config
            referenced = referenced_objects(config)
            assert not is_read(_k8s_secret("unrelated", renewed), config, referenced)
            assert is_read(_k8s_secret("cert", renewed), config, referenced)
            api.put(_k8s_secret("cert", renewed))
            async with asyncio.timeout(10):
                while gw.ctx.holder.table.ports[port].listeners[0].certificates[0].certificate != (
                    renewed.cert_chain_pems[0].bytes().decode()
                ):
                    await gw.reloader.wait_attempts(gw.reloader.attempts + 1)
            answer = await _get(port, "renewed.s.test", "renewed.s.test")
            assert (answer.status, answer.peer_names) == (200, ("s.test", "renewed.s.test"))
