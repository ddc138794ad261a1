"""A kubeconfig file (``~/.kube/config``, as kubectl reads it) as an ``ApiServer``: run
``sluice serve --kubeconfig PATH`` outside a cluster against the cluster a context names.

Read: the context (``current-context`` unless one is named) and its namespace; the
cluster's ``server``, ``certificate-authority`` / ``-data`` and
``insecure-skip-tls-verify``; the user's ``token`` / ``tokenFile`` and
``client-certificate`` / ``client-key`` (or their ``-data``). Relative file paths are
relative to the kubeconfig's folder, as kubectl takes them. Not read: ``exec`` and
``auth-provider`` credential plugins (managed clusters' cloud logins) — the error says so
and names ``kubectl proxy`` with ``--kubernetes-api`` as the way around them.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

import yaml

from gateway.kubeapi import ApiServer, KubeError

__all__ = ["from_kubeconfig"]


def _named(items: object, name: str, what: str, path: str) -> dict[str, Any]:
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and item.get("name") == name and isinstance(item.get(what), dict):
            return dict(item[what])
    raise KubeError(0, f"{path}: no {what} named {name!r}")


def _data(value: object, field: str, path: str) -> str:
    try:
        return base64.b64decode(str(value), validate=False).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise KubeError(0, f"{path}: {field} is not base64 PEM: {exc}") from None


def _pem(entry: dict[str, Any], key: str, folder: Path, path: str) -> str | None:
    """``key-data`` (base64) or the file ``key`` names, as PEM text."""
    if entry.get(f"{key}-data"):
        return _data(entry[f"{key}-data"], f"{key}-data", path)
    if entry.get(key):
        file = folder / os.path.expanduser(str(entry[key]))
        try:
            return file.read_text(encoding="utf-8")
        except OSError as exc:
            raise KubeError(0, f"{path}: {key} {file}: {exc.strerror or exc}") from None
    return None


def from_kubeconfig(path: str, context: str | None = None) -> ApiServer:
    """The API server and credentials of ``context`` (default: the current one) in the
    kubeconfig at ``path``; raises ``KubeError`` naming the file and what is wrong."""
    file = Path(os.path.expanduser(path))
    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise KubeError(0, f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise KubeError(0, f"{path}: invalid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise KubeError(0, f"{path}: not a kubeconfig (a mapping)")
    name = context or config.get("current-context")
    if not name:
        raise KubeError(0, f"{path}: no current-context; name one with --context")
    ctx = _named(config.get("contexts"), str(name), "context", path)
    cluster = _named(config.get("clusters"), str(ctx.get("cluster")), "cluster", path)
    user = (
        _named(config.get("users"), str(ctx.get("user")), "user", path) if ctx.get("user") else {}
    )
    for plugin in ("exec", "auth-provider"):
        if user.get(plugin):
            raise KubeError(
                0,
                f"{path}: user {ctx.get('user')!r} logs in through an {plugin} plugin, which "
                "Sluice does not run; use `kubectl proxy` and `--kubernetes-api "
                "http://127.0.0.1:8001`",
            )
    server = cluster.get("server")
    if not server:
        raise KubeError(0, f"{path}: cluster {ctx.get('cluster')!r} has no server")
    folder = file.parent
    token = user.get("token")
    token_file = user.get("tokenFile")
    return ApiServer(
        url=str(server).rstrip("/"),
        token=str(token) if token else None,
        token_file=str(folder / os.path.expanduser(str(token_file))) if token_file else None,
        ca_data=_pem(cluster, "certificate-authority", folder, path),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        client_certificate=_pem(user, "client-certificate", folder, path),
        client_key=_pem(user, "client-key", folder, path),
        namespace=str(ctx.get("namespace") or "default"),
    )
