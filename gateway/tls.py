"""TLS for HTTPS listeners: server contexts from the listeners' certificates, chosen per
connection by the client's SNI, and the check that a table's certificates load.

A listening socket's TLS context is made once, when its port is bound, and holds no
certificate of its own. At each handshake its SNI callback looks the server name up among
the port's listeners as they are *now* (``PortTLS.update`` swaps them with the table), so
a renewed certificate or a new HTTPS listener on a bound port applies from the next
connection on, without rebinding; connections already open keep what they got.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator

from routing import model as m
from routing.errors import ConfigIssue
from routing.matching import tls_listener
from routing.table import ListenerTable, PortTable, RoutingTable
from routing.tlsconfig import CERT_KEY

__all__ = [
    "CertificateError",
    "PortTLS",
    "certificate_issues",
    "handshake_of",
    "listener_context",
    "pem_file",
    "unloadable_secrets",
]

log = logging.getLogger("sluice.tls")

CONTEXT_CACHE_SIZE = 1024  # certificate sets whose contexts (or load errors) are remembered
# set on each TLS connection's SSLObject at its handshake: the SNI it sent, and the listener
# (gateway, name) whose certificate it got
SERVER_NAME_ATTR = "sluice_server_name"
LISTENER_ATTR = "sluice_listener"

_Pairs = tuple[tuple[str, str], ...]


class CertificateError(Exception):
    """A certificate and key that do not load (the message says why)."""


class _Cache:
    """Contexts (or the reason they failed) by certificate set; shared by the reload
    thread that checks a new table and the event loop that serves it."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[_Pairs, ssl.SSLContext | str] = OrderedDict()
        self._lock = threading.Lock()

    def context(self, pairs: _Pairs) -> ssl.SSLContext:
        with self._lock:
            known = self._items.get(pairs)
            if known is not None:
                self._items.move_to_end(pairs)
        if known is None:
            try:
                known = _build(pairs)
            except CertificateError as exc:
                known = str(exc)
            except OSError as exc:  # this machine's trouble, not the certificate's: not kept
                raise CertificateError(f"cannot load: {exc}") from None
            with self._lock:
                self._items[pairs] = known
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
        if isinstance(known, str):
            raise CertificateError(known)
        return known


_CACHE = _Cache(CONTEXT_CACHE_SIZE)


def _new_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class _EncryptedKeyError(Exception):
    pass


def _no_passphrase() -> str:
    raise _EncryptedKeyError  # OpenSSL would otherwise prompt on the terminal


def _build(pairs: _Pairs) -> ssl.SSLContext:
    ctx = _new_context()
    for certificate, key in pairs:
        pem = f"{key.strip()}\n{certificate.strip()}\n".encode()
        try:
            with pem_file(pem) as path:
                ctx.load_cert_chain(path, password=_no_passphrase)
        except _EncryptedKeyError:
            raise CertificateError("tls.key is encrypted; give it without a passphrase") from None
        except ssl.SSLError as exc:
            raise CertificateError(_reason(exc)) from None
        except ValueError as exc:
            raise CertificateError(f"cannot load: {exc}") from None
    return ctx


@contextlib.contextmanager
def pem_file(pem: bytes) -> Iterator[str]:
    """A path the ssl module can load ``pem`` from (it reads certificates and keys from
    files only): an anonymous in-memory file where the system has them (Linux), else a
    private temporary file (mode 0600) removed as soon as it is read."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("sluice-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, pem)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="sluice-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        yield path
    finally:
        os.unlink(path)


def _reason(exc: ssl.SSLError) -> str:
    if exc.reason == "KEY_VALUES_MISMATCH":
        return "tls.key is not the private key of the certificate in tls.crt"
    return f"tls.crt and tls.key do not load as a certificate and its key ({exc.reason or exc})"


def _pairs(secrets: Iterable[m.Secret]) -> _Pairs:
    return tuple((s.certificate or "", s.key or "") for s in secrets)


def listener_context(listener: ListenerTable) -> ssl.SSLContext | None:
    """The context serving a listener's certificates (several: one per key type, say RSA
    and ECDSA), built from those that load; None when none does."""
    usable = []
    for secret in listener.certificates:
        try:
            _CACHE.context(_pairs((secret,)))
        except CertificateError:
            continue
        usable.append(secret)
    return _CACHE.context(_pairs(usable)) if usable else None


def unloadable_secrets(table: RoutingTable) -> dict[str, tuple[m.Secret, str]]:
    """The HTTPS listeners' Secrets whose certificate and key do not load, with why, by
    ``ns/name``. Builds every listener's context on the way (a reload calls this in its
    worker thread), so serving the table only finds them made."""
    bad: dict[str, tuple[m.Secret, str]] = {}
    for port in table.ports.values():
        for listener in port.listeners:
            with contextlib.suppress(CertificateError):
                listener_context(listener)
            for secret in listener.certificates:
                if secret.meta.key in bad:
                    continue
                try:
                    _CACHE.context(_pairs((secret,)))
                except CertificateError as exc:
                    bad[secret.meta.key] = (secret, str(exc))
    return bad


def certificate_issues(table: RoutingTable) -> list[ConfigIssue]:
    """Each certificate of an HTTPS listener that does not load, against its Secret's file,
    document and field."""
    return [
        ConfigIssue(
            file=secret.meta.source,
            document=secret.meta.document,
            path=f"data.{CERT_KEY}",
            message=f"Secret {key}: {reason}",
        )
        for key, (secret, reason) in unloadable_secrets(table).items()
    ]


def handshake_of(ssl_object: object) -> tuple[str | None, tuple[str, str] | None]:
    """What a TLS connection's handshake settled: the SNI its client sent (None: none), and
    the listener (gateway, name) whose certificate it got (None: not TLS)."""
    name = getattr(ssl_object, SERVER_NAME_ATTR, None)
    listener = getattr(ssl_object, LISTENER_ATTR, None)
    return (name if isinstance(name, str) else None), listener


class PortTLS:
    """The TLS side of one HTTPS port: the listening socket's context, and at each
    handshake the context of the listener the client's SNI selects. No listener for that
    name fails the handshake (``unrecognized_name``); so does a client without SNI on a port
    with no listener for any host, as no named listener's certificate goes to a client that
    named no host."""

    def __init__(self, port: PortTable) -> None:
        self.context = _new_context()
        self.context.sni_callback = self._select
        self._port = port
        self._contexts: dict[tuple[str, str], ssl.SSLContext] = {}
        self.update(port)

    def update(self, port: PortTable) -> None:
        """Serve ``port``'s listeners and certificates from the next handshake on. Never
        raises: a listener whose certificates do not load gets no handshake."""
        contexts: dict[tuple[str, str], ssl.SSLContext] = {}
        for listener in port.listeners:
            try:
                ctx = listener_context(listener)
            except CertificateError as exc:
                log.warning("listener %s/%s: %s", listener.gateway, listener.name, exc)
                continue
            if ctx is not None:
                contexts[(listener.gateway, listener.name)] = ctx
        self._port, self._contexts = port, contexts

    def _select(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket, name: str | None, _base: ssl.SSLContext
    ) -> int | None:
        listener = tls_listener(self._port, name)
        key = (listener.gateway, listener.name) if listener is not None else None
        ctx = self._contexts.get(key) if key is not None else None
        if key is None or ctx is None:
            alert = (
                ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
                if name
                else ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
            )
            return alert.value
        setattr(ssl_object, SERVER_NAME_ATTR, name.lower() if name else None)
        setattr(ssl_object, LISTENER_ATTR, key)
        ssl_object.context = ctx
        return None
