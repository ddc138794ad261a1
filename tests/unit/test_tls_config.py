"""HTTPS listeners (routing/tlsconfig.py, table.py): the listener's tls section as the Gateway
CRD validates it, TLS Secrets, which certificates a listener serves (same namespace, or
another with a ReferenceGrant), a port's one protocol, and the listener a TLS handshake and a
request select (routing/matching.py)."""

from __future__ import annotations

import base64
import json

from routing.backends import reads_object, referenced_objects
from routing.matching import is_misdirected, tls_listener
from tests.unit.manifests import GATEWAY_CLASS, config_of, error_paths, gateway_doc, table_of

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(name: str, namespace: str = "default", *, data: str | None = None) -> str:
    body = data if data is not None else f"data: {{tls.crt: {_b64(CERT)}, tls.key: {_b64(KEY)}}}"
    return f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {namespace}}}
type: kubernetes.io/tls
{body}
"""


def https(name: str = "https", port: int = 443, host: str | None = None, refs: str = "") -> str:
    hostname = f", hostname: '{host}'" if host else ""
    refs = refs or "{name: cert}"
    return (
        f"{{name: {name}, port: {port}, protocol: HTTPS{hostname}, "
        f"tls: {{certificateRefs: [{refs}]}}}}"
    )


def gateway(*listeners: str) -> str:
    return GATEWAY_CLASS + "---" + gateway_doc(", ".join(listeners))


GRANT = """
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: certs, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}]
  to: [{group: "", kind: Secret}]
"""


def test_an_https_listener_needs_tls_terminate_and_a_certificate_ref() -> None:
    no_tls = gateway("{name: https, port: 443, protocol: HTTPS}")
    assert (1, "spec.listeners[0].tls") in error_paths(no_tls)
    passthrough = gateway(
        "{name: https, port: 443, protocol: HTTPS, tls: {mode: Passthrough, "
        "certificateRefs: [{name: cert}]}}"
    )
    assert (1, "spec.listeners[0].tls.mode") in error_paths(passthrough)
    no_refs = gateway("{name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: []}}")
    assert (1, "spec.listeners[0].tls.certificateRefs") in error_paths(no_refs)
    http_with_tls = gateway(
        "{name: web, port: 80, protocol: HTTP, tls: {certificateRefs: [{name: cert}]}}"
    )
    assert (1, "spec.listeners[0].tls") in error_paths(http_with_tls)
    assert error_paths(gateway(https()) + secret("cert")) == set()


def test_a_tls_secret_is_read_from_data_or_string_data_and_checked_for_pem() -> None:
    config = config_of(secret("cert"))
    assert config.secrets[0].certificate == CERT
    assert config.secrets[0].key == KEY
    wrapped = base64.encodebytes(CERT.encode()).decode()  # lines of 76, as `base64` writes
    folded = secret("cert", data=f"data: {{tls.crt: {json.dumps(wrapped)}, tls.key: {_b64(KEY)}}}")
    assert config_of(folded).secrets[0].certificate == CERT
    plain = secret(
        "cert", data=f"stringData: {{tls.crt: {json.dumps(CERT)}, tls.key: {json.dumps(KEY)}}}"
    )
    assert config_of(plain).secrets[0].certificate == CERT
    assert error_paths(secret("cert", data="data: {tls.crt: 'not base64!', tls.key: x}")) >= {
        (0, "data.tls.crt")
    }
    wrong_pem = f"data: {{tls.crt: {_b64(KEY)}, tls.key: {_b64(CERT)}}}"
    assert error_paths(secret("cert", data=wrong_pem)) == {(0, "data.tls.crt"), (0, "data.tls.key")}
    no_key = f"data: {{tls.crt: {_b64(CERT)}}}"
    assert error_paths(secret("cert", data=no_key)) == {(0, "data")}
    # an Opaque Secret with other data is not Sluice's concern: nothing of it is kept
    opaque = config_of(secret("other", data="data: {password: aHVudGVyMg==}").replace(
        "type: kubernetes.io/tls", "type: Opaque"
    ))  # fmt: skip
    assert (opaque.secrets[0].certificate, opaque.secrets[0].key) == (None, None)


def test_a_listener_serves_its_secrets_and_not_one_from_another_namespace_without_a_grant():
    served = table_of(gateway(https()) + secret("cert"))
    assert served.ports[443].protocol == "HTTPS"
    assert [s.meta.key for s in served.ports[443].listeners[0].certificates] == ["default/cert"]
    elsewhere = gateway(https(refs="{name: cert, namespace: certs}")) + secret("cert", "certs")
    refused = table_of(elsewhere)
    assert 443 not in refused.ports
    assert any("no ReferenceGrant in certs" in w for w in refused.warnings)
    assert any("not served" in w for w in refused.warnings)
    granted = table_of(elsewhere + GRANT)
    assert [s.meta.key for s in granted.ports[443].listeners[0].certificates] == ["certs/cert"]


def test_refs_that_do_not_resolve_are_warnings_and_the_rest_is_served() -> None:
    refs = "{name: cert}, {name: missing}, {kind: ConfigMap, name: cm}, {name: empty}"
    empty = secret("empty", data="data: {}").replace("kubernetes.io/tls", "Opaque")
    table = table_of(gateway(https(refs=refs)) + secret("cert") + empty)
    assert [s.meta.key for s in table.ports[443].listeners[0].certificates] == ["default/cert"]
    joined = "\n".join(table.warnings)
    assert "default/missing: no such Secret" in joined
    assert "unsupported kind /ConfigMap" in joined
    assert "default/empty: the Secret has no tls.crt and tls.key" in joined


def test_a_port_has_one_protocol_the_first_served_listener_sets() -> None:
    table = table_of(gateway("{name: web, port: 8443, protocol: HTTP}", https(port=8443)))
    assert table.ports[8443].protocol == "HTTP"
    assert [lt.name for lt in table.ports[8443].listeners] == ["web"]
    assert any("port 8443 is HTTP" in w for w in table.warnings)
    # an HTTPS listener whose Secret is missing serves nothing, and takes no port
    unserved = table_of(gateway(https(port=8443), "{name: web, port: 8443, protocol: HTTP}"))
    assert unserved.ports[8443].protocol == "HTTP"
    # two HTTPS listeners of one hostname on a port: the second's certificate could never
    # be chosen, so it is not served
    twice = table_of(
        gateway(https("one", host="a.org"), https("two", host="a.org")) + secret("cert")
    )
    assert [lt.name for lt in twice.ports[443].listeners] == ["one"]
    assert any("listener two: Gateway default/gw listener one has its hostname" in w
               for w in twice.warnings)  # fmt: skip


def test_the_oldest_gateway_sets_a_ports_protocol() -> None:
    old = gateway(https(port=8443)).replace("metadata: {name: gw}", (
        "metadata: {name: old, creationTimestamp: '2026-01-01T00:00:00Z'}"
    ))  # fmt: skip
    new = gateway_doc("{name: web, port: 8443, protocol: HTTP}").replace(
        "metadata: {name: gw}", "metadata: {name: new, creationTimestamp: '2026-06-01T00:00:00Z'}"
    )
    table = table_of(new + "---" + old + secret("cert"))  # the newer one comes first
    assert table.ports[8443].protocol == "HTTPS"
    assert table.ports[8443].listeners[0].gateway == "default/old"


def test_the_handshake_and_the_request_select_listeners_alike() -> None:
    table = table_of(
        gateway(https("a", host="a.example.com"), https("wild", host="*.example.com"), https("any"))
        + secret("cert")
    )
    port = table.ports[443]
    assert tls_listener(port, "A.Example.com.").name == "a"
    assert tls_listener(port, "x.example.com").name == "wild"
    assert tls_listener(port, None).name == "any"  # no SNI: the listener without a hostname
    a, wild, any_host = ("default/gw", "a"), ("default/gw", "wild"), ("default/gw", "any")
    assert not is_misdirected(port, None, "x.example.com")  # no TLS: the Host decides
    assert not is_misdirected(port, a, "a.example.com")
    assert is_misdirected(port, a, "x.example.com")
    assert is_misdirected(port, wild, "other.org")  # the catch-all's host
    assert is_misdirected(port, any_host, "a.example.com")  # no SNI, a named listener's host
    assert not is_misdirected(port, any_host, "10.0.0.1")
    named = table_of(gateway(https("b", host="b.org"), https("a", host="a.org")) + secret("cert"))
    assert tls_listener(named.ports[443], None) is None  # no SNI, no listener for any host


def test_only_secrets_a_served_listener_names_are_read() -> None:
    config = config_of(gateway(https(refs="{name: cert}, {name: other, namespace: certs}")))
    referenced = referenced_objects(config)
    assert reads_object(config, referenced, "Secret", "default", "cert", {})
    assert reads_object(config, referenced, "Secret", "certs", "other", {})
    assert not reads_object(config, referenced, "Secret", "default", "db-password", {})
    theirs = gateway(https()).replace(
        "sluice.dev/gateway-controller", "istio.io/gateway-controller"
    )
    assert referenced_objects(config_of(theirs)) == set()  # another controller's certificates
