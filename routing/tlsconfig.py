"""HTTPS listeners: their ``tls`` section, the Secrets holding certificates, and which
certificates each listener serves.

The checks here are the API server's (the Gateway CRD's validation rules) and the
Secret's shape (base64 data, PEM blocks of the right kind). Whether a certificate and key
really load together is for the gateway to find out when it builds the TLS context
(``gateway/tls.py``), which reports it against the Secret's file and field.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from routing import model as m
from routing.backends import Resolver
from routing.reader import Reader

__all__ = [
    "CERT_KEY",
    "PRIVATE_KEY_KEY",
    "listener_certificates",
    "parse_listener_tls",
    "parse_secret",
]

CERT_KEY = "tls.crt"
PRIVATE_KEY_KEY = "tls.key"
TLS_SECRET_TYPE = "kubernetes.io/tls"
_TLS_MODES = ("Terminate", "Passthrough")


def parse_listener_tls(r: Reader, protocol: str) -> m.ListenerTLS:
    """A listener's ``tls``. ``options`` are implementation-specific (none is read);
    ``frontendValidation`` (client certificates) is not served."""
    mode = r.string("mode", "Terminate") or "Terminate"
    if mode not in _TLS_MODES:
        r.sink.error(r.sub("mode"), f"must be Terminate or Passthrough, not {mode!r}")
    elif protocol == "HTTPS" and mode != "Terminate":
        r.sink.error(r.sub("mode"), "an HTTPS listener terminates TLS: mode must be Terminate")
    refs = r.list_of("certificateRefs", _certificate_ref)
    if mode == "Terminate" and not refs:
        r.sink.error(r.sub("certificateRefs"), "mode Terminate needs at least one certificateRef")
    if r.has("frontendValidation"):
        r.sink.warn(r.sub("frontendValidation"), "client certificates are not checked")
    r.ignore("options", "frontendValidation")
    r.finish()
    return m.ListenerTLS(mode=mode, certificate_refs=refs)


def _certificate_ref(r: Reader) -> m.ObjectRef:
    ref = m.ObjectRef(
        group=r.string("group", m.CORE_GROUP) or m.CORE_GROUP,
        kind=r.string("kind", "Secret") or "Secret",
        name=r.req_str("name"),
        namespace=r.string("namespace"),
    )
    r.finish()
    return ref


def parse_secret(r: Reader, meta: m.Meta) -> m.Secret:
    """A Secret: ``tls.crt`` and ``tls.key`` from ``data`` (base64) or ``stringData``
    (plain, as ``kubectl apply`` takes it; it wins over ``data``). Other keys are not read
    and not kept."""
    secret_type = r.string("type", "Opaque") or "Opaque"
    values: dict[str, tuple[str, str]] = {}  # key → (text, path it came from)
    data = r.mapping("data")
    for name in (CERT_KEY, PRIVATE_KEY_KEY):
        raw = data.string(name)
        if raw is not None:
            try:
                values[name] = (  # wrapped lines are fine, as for the API server
                    base64.b64decode("".join(raw.split()), validate=True).decode("ascii"),
                    data.sub(name),
                )
            except (binascii.Error, ValueError):
                data.sink.error(data.sub(name), "is not base64-encoded PEM text")
    string_data = r.mapping("stringData")
    for name in (CERT_KEY, PRIVATE_KEY_KEY):
        text = string_data.string(name)
        if text is not None:
            values[name] = (text, string_data.sub(name))
    certificate, key = values.get(CERT_KEY), values.get(PRIVATE_KEY_KEY)
    if certificate is not None and "-----BEGIN CERTIFICATE-----" not in certificate[0]:
        r.sink.error(certificate[1], "holds no PEM certificate")
    if key is not None and not _is_pem_key(key[0]):
        r.sink.error(key[1], "holds no PEM private key")
    if secret_type == TLS_SECRET_TYPE and (certificate is None or key is None):
        missing = CERT_KEY if certificate is None else PRIVATE_KEY_KEY
        r.sink.error(r.sub("data"), f"a {TLS_SECRET_TYPE} Secret needs {missing}")
    r.ignore("data", "stringData", "immutable")
    return m.Secret(
        meta=meta,
        type=secret_type,
        certificate=certificate[0] if certificate is not None else None,
        key=key[0] if key is not None else None,
    )


def _is_pem_key(text: str) -> bool:
    return "-----BEGIN " in text and " PRIVATE KEY-----" in text


def listener_certificates(
    gateway: m.Gateway,
    tls: m.ListenerTLS,
    secrets: Mapping[str, m.Secret],
    resolver: Resolver,
) -> tuple[tuple[m.Secret, ...], tuple[str, ...]]:
    """The Secrets a listener's ``certificateRefs`` resolve to, and why each other ref does
    not (unsupported kind, missing Secret, no certificate in it, another namespace without
    a ReferenceGrant that lets the Gateway in)."""
    found: list[m.Secret] = []
    problems: list[str] = []
    for ref in tls.certificate_refs:
        ns = ref.namespace or gateway.meta.namespace
        label = f"{ns}/{ref.name}"
        if ref.group != m.CORE_GROUP or ref.kind != "Secret":
            problems.append(f"certificateRef {label}: unsupported kind {ref.group}/{ref.kind}")
            continue
        from_ns = gateway.meta.namespace
        if ns != from_ns and not resolver.is_permitted(
            ref, ns, from_kind="Gateway", from_ns=from_ns
        ):
            problems.append(f"certificateRef {label}: no ReferenceGrant in {ns} allows it")
            continue
        secret = secrets.get(label)
        if secret is None:
            problems.append(f"certificateRef {label}: no such Secret")
        elif secret.certificate is None or secret.key is None:
            problems.append(
                f"certificateRef {label}: the Secret has no {CERT_KEY} and {PRIVATE_KEY_KEY}"
            )
        else:
            found.append(secret)
    return tuple(found), tuple(problems)
