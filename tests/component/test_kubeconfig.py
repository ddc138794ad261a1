"""``sluice serve --kubeconfig``: a kubeconfig's context as the API server to read, over TLS
checked against its CA, with its token or client certificate; plugins it cannot run and
broken files are refused with the file named."""

from __future__ import annotations

import base64
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
import yaml

from gateway.kubeapi import RESOURCES, ApiClient, KubeError
from gateway.kubeconfig import from_kubeconfig
from tests.component.fakekube import FakeKubeApi, running_api

CLASSES = next(r for r in RESOURCES if r.kind == "GatewayClass").path(None)
GATEWAY_CLASS = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                 "metadata": {"name": "sluice"},
                 "spec": {"controllerName": "sluice.dev/gateway-controller"}}  # fmt: skip


def _kubeconfig(
    tmp_path: Path, server: str, cluster: dict, user: dict, name: str = "config", **ctx: str
) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dev",
        "clusters": [{"name": "kind", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "me", "user": user}],
        "contexts": [{"name": "dev", "context": {"cluster": "kind", "user": "me", **ctx}}],
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return str(path)


async def test_a_kubeconfig_context_reaches_its_cluster_with_its_ca_and_token(tmp_path):
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem.bytes())
    async with running_api(FakeKubeApi(token="s3cret"), ssl_context=server) as api:
        api.put(GATEWAY_CLASS)
        ca_data = base64.b64encode(ca.cert_pem.bytes()).decode()
        for cluster in ({"certificate-authority-data": ca_data},
                        {"certificate-authority": "ca.crt"}):  # fmt: skip  # relative: its folder
            path = _kubeconfig(tmp_path, api.url, cluster, {"token": "s3cret"}, namespace="llm")
            settings = from_kubeconfig(path)
            assert settings.namespace == "llm"
            client = ApiClient(settings, request_timeout_s=10)
            try:
                listed = await client.get_json(CLASSES, {})
            finally:
                await client.close()
            assert [i["metadata"]["name"] for i in listed["items"]] == ["sluice"]
        # without the CA the server's certificate is refused; without the token, 401
        no_ca = ApiClient(from_kubeconfig(_kubeconfig(tmp_path, api.url, {}, {"token": "s3cret"})),
                          request_timeout_s=10)  # fmt: skip
        no_token = ApiClient(
            from_kubeconfig(
                _kubeconfig(tmp_path, api.url, {"certificate-authority": "ca.crt"}, {})
            ),
            request_timeout_s=10,
        )
        try:
            with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
                await no_ca.get_json(CLASSES, {})
            with pytest.raises(KubeError, match="401"):
                await no_token.get_json(CLASSES, {})
        finally:
            await no_ca.close()
            await no_token.close()


def test_a_client_certificate_is_loaded_from_the_kubeconfig(tmp_path):
    ca = trustme.CA()
    me = ca.issue_cert("me@example.com")
    user = {"client-certificate-data": base64.b64encode(me.cert_chain_pems[0].bytes()).decode(),
            "client-key-data": base64.b64encode(me.private_key_pem.bytes()).decode()}  # fmt: skip
    settings = from_kubeconfig(_kubeconfig(tmp_path, "https://127.0.0.1:6443", {}, user))
    assert "BEGIN CERTIFICATE" in (settings.client_certificate or "")
    assert settings.ssl_context() is not None  # the pair loads
    broken = {
        **user,
        "client-key-data": base64.b64encode(ca.issue_cert("x").private_key_pem.bytes()).decode(),
    }
    with pytest.raises(ssl.SSLError):
        from_kubeconfig(_kubeconfig(tmp_path, "https://127.0.0.1:6443", {}, broken)).ssl_context()


def test_what_a_kubeconfig_cannot_give_is_refused_by_name(tmp_path):
    exec_user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "gcloud"}}
    path = _kubeconfig(tmp_path, "https://127.0.0.1:6443", {}, exec_user)
    with pytest.raises(KubeError, match=r"exec plugin.*kubectl proxy"):
        from_kubeconfig(path)
    with pytest.raises(KubeError, match="no context named 'prod'"):
        from_kubeconfig(path, "prod")
    missing = _kubeconfig(
        tmp_path, "https://127.0.0.1:6443", {"certificate-authority": "nope.crt"}, {}, "other"
    )
    with pytest.raises(KubeError, match=r"nope\.crt"):
        from_kubeconfig(missing)
    # the command line says so and exits 2
    answer = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--kubeconfig", path],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert answer.returncode == 2
    assert "exec plugin" in answer.stderr
    assert path in answer.stderr
