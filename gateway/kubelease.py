"""Leader election over a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection:
one replica at a time writes status.

The leader renews the Lease every ``renew_s``; the others watch it. A Lease counts as
expired when its record has not changed for ``lease_s`` by the *observer's* clock (the
holder's timestamps are not compared with ours, so clock skew between nodes does not
matter), and then one of them takes it over. Every write is conditional on the
resourceVersion read, so two replicas cannot both win. A leader whose renewals fail for
``renew_deadline_s`` steps down before its Lease can expire; one that stops releases the
Lease so another takes over at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.kubeapi import ApiClient, KubeError

__all__ = ["LeaderElector", "default_identity"]

log = logging.getLogger("sluice.kubernetes")

LEASE_NAME = "sluice-status-writer"


def default_identity() -> str:
    """The pod's name (``POD_NAME`` from the downward API, else the host name) and a random
    suffix: two processes never share one."""
    name = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{name}_{secrets.token_hex(4)}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        client: ApiClient,
        namespace: str,
        *,
        identity: str | None = None,
        name: str = LEASE_NAME,
        lease_s: float = 15.0,
        renew_s: float = 2.0,
        renew_deadline_s: float = 10.0,
        on_change: Callable[[bool], None] = lambda leader: None,
    ) -> None:
        self.identity = identity or default_identity()
        self.is_leader = False
        self._client = client
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self._name = name
        self._lease_s = lease_s
        self._renew_s = renew_s
        self._renew_deadline_s = renew_deadline_s
        self._on_change = on_change
        self._observed: tuple[object, float] | None = None  # (record, when we saw it change)
        self._renewed_at = 0.0
        self._attempt_at = 0.0

    @property
    def leading(self) -> bool:
        """This replica leads, and its last renewal is recent enough that no other replica
        can have taken the Lease over."""
        if not self.is_leader:
            return False
        return asyncio.get_running_loop().time() - self._renewed_at < self._renew_deadline_s

    async def run(self) -> None:
        """Try to lead, and keep leading, until cancelled. Each try is bounded by the renew
        interval, so a hanging API cannot keep a leader leading past its deadline."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    async with asyncio.timeout(max(self._renew_s * 2, 0.5)):
                        await self._try()
                except Exception as exc:  # the API down, a token unreadable, a bug
                    log.warning("lease %s: %s", self._name, str(exc) or type(exc).__name__)
                if self.is_leader and loop.time() - self._renewed_at > self._renew_deadline_s:
                    message = "lease %s: not renewed in time; no longer the status writer"
                    log.warning(message, self._name)
                    self._set(False)
                await asyncio.sleep(self._renew_s)
        finally:
            self._set(False)

    async def _try(self) -> None:
        loop = asyncio.get_running_loop()
        self._attempt_at = loop.time()  # a renewal counts from when it was asked for
        try:
            lease = await self._client.get_json(f"{self._path}/{self._name}", {})
        except KubeError as exc:
            if exc.status != 404:
                raise
            await self._write("POST", self._path, self._spec(transitions=0), None)
            return
        spec = lease.get("spec") or {}
        version = (lease.get("metadata") or {}).get("resourceVersion")
        record = (spec.get("holderIdentity"), spec.get("renewTime"), version)
        if self._observed is None or self._observed[0] != record:
            self._observed = (record, loop.time())
        holder = spec.get("holderIdentity") or ""
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            body = self._spec(transitions=transitions, acquired=spec.get("acquireTime"))
            await self._write("PUT", f"{self._path}/{self._name}", body, version)
            return
        if self.is_leader:
            self._set(False)  # another replica holds it now
        duration = float(spec.get("leaseDurationSeconds") or self._lease_s)
        if holder and loop.time() - self._observed[1] < duration:
            return  # held, and renewed lately
        body = self._spec(transitions=transitions + 1)
        await self._write("PUT", f"{self._path}/{self._name}", body, version)

    def _spec(self, *, transitions: int, acquired: object = None) -> dict[str, Any]:
        now = _now()
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self._lease_s)),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def _lease(self, spec: dict[str, Any], version: object) -> dict[str, Any]:
        """The Lease object to write: conditional on ``version`` when there is one."""
        meta: dict[str, Any] = {"name": self._name}
        if version is not None:
            meta["resourceVersion"] = version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": spec}  # fmt: skip

    async def _write(self, method: str, path: str, spec: dict[str, Any], version: object) -> None:
        body = self._lease(spec, version)
        try:
            await self._client.send_json(method, path, body)
        except KubeError as exc:
            if exc.status == 409:  # another replica wrote first
                if self.is_leader:
                    self._set(False)
                return
            raise
        self._renewed_at = self._attempt_at
        self._set(True)

    def _set(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            log.info(
                "lease %s: %s", self._name, "now the status writer" if leader else "standing by"
            )
            self._on_change(leader)

    async def release(self) -> None:
        """Give the Lease up (on shutdown), so another replica need not wait for it to
        expire; also when a takeover cut short may have made this replica the holder."""
        self._set(False)
        try:
            lease = await self._client.get_json(f"{self._path}/{self._name}", {})
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = {**(lease.get("spec") or {}), "holderIdentity": "", "leaseDurationSeconds": 1}
            version = (lease.get("metadata") or {}).get("resourceVersion")
            body = self._lease(spec, version)
            await self._client.send_json("PUT", f"{self._path}/{self._name}", body)
        except Exception as exc:  # shutting down: say so and go on
            log.warning("lease %s: not released: %s", self._name, str(exc) or type(exc).__name__)
