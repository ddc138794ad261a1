"""Status written back to the cluster: the conditions of Sluice's GatewayClasses, Gateways
(and their listeners) and the HTTPRoutes attached to them (``routing.status`` decides them).

After every table the writer compares what the table says with each object's status as
the watch last delivered it, and patches ``/status`` only where they differ: a condition
keeps its ``lastTransitionTime`` while its status stays. An HTTPRoute's ``parents`` entries
of other controllers stay as they are, and Sluice's are withdrawn when the route no longer
names its Gateways. Objects the table left out (an error in them) are reported not
accepted. Each patch names the resourceVersion it was computed from, so a concurrent write
is refused (409) rather than overwritten, and compared again a second later. With several
replicas, the one holding the Lease writes (``gateway.kubelease``); the status follows from
the objects alone, so the next leader finds it as it would have written it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

import aiohttp

from gateway.kube import ClusterSource
from gateway.kubeapi import KubeError
from gateway.kubelease import LeaderElector
from gateway.tls import unloadable_secrets
from routing.backends import ACCEPTED_CONTROLLERS
from routing.model import GATEWAY_GROUP
from routing.status import ObjectStatus, desired_statuses, left_out_statuses
from routing.table import RoutingTable

__all__ = ["StatusWriter"]

log = logging.getLogger("sluice.kubernetes")

RETRY_S = 1.0  # after a failed or refused write, the next comparison (doubling)
MAX_RETRY_S = 60.0


class StatusWriter:
    def __init__(
        self,
        source: ClusterSource,
        table: Callable[[], RoutingTable],
        *,
        left_out: Callable[[], Collection[tuple[str, str, str]]] = frozenset,
        elector: LeaderElector | None = None,
        retry_s: float = RETRY_S,
    ) -> None:
        self._source = source
        self._table = table
        self._left_out = left_out  # (kind, ns, name) the loader left out of the table in force
        self._elector = elector  # None: always write; else only while leading
        self._retry_s = retry_s
        self._changed = asyncio.Event()
        self.settled = asyncio.Event()  # the last comparison found every status as wanted
        self.writes = source.status_writes  # by result: ok, conflict, error (its metric)
        # per object, the version a write was based on and what it wrote: until the watch
        # brings a newer version, the same status is not written again (it would be 409)
        self._sent: dict[tuple[str, str, str], tuple[object, dict[str, Any]]] = {}

    def changed(self) -> None:
        """The table or the bound ports changed: compare again."""
        self.settled.clear()
        self._changed.set()

    async def run(self) -> None:
        """Compare and write after each change, until cancelled. After a pass that left
        something not as wanted, compare again after ``retry_s``, doubling to a minute
        while it keeps failing."""
        self._changed.set()
        delay = self._retry_s
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._elector is not None and not self._elector.leading:
                continue  # another replica writes; becoming the leader calls changed()
            try:
                settled = await self.publish()
            except Exception:  # a bug must not stop later writes
                log.exception("writing status to the cluster failed")
                settled = False
            if settled:
                delay = self._retry_s
                if not self._changed.is_set():
                    self.settled.set()
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._changed.wait()
            delay = min(delay * 2, MAX_RETRY_S)
            self._changed.set()

    async def publish(self) -> bool:
        """Patch every status that differs from the table's; True when all are as wanted."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        table = self._table()
        desired = desired_statuses(table, frozenset(unloadable_secrets(table)))
        left_out = self._left_out()
        if left_out:
            desired += left_out_statuses(left_out, self._cached_gateways(), self._cached_routes())
        settled = True
        for wanted in desired:
            if self._elector is not None and not self._elector.leading:
                return False  # stepped down meanwhile: the new leader writes
            found = self._find(wanted)
            if found is None:
                continue  # gone meanwhile, or not watched
            path, obj = found
            current = obj.get("status") or {}
            status = _merged(wanted, current, now)
            version = (obj.get("metadata") or {}).get("resourceVersion")
            key = (wanted.kind, wanted.namespace, wanted.name)
            if status == current or self._sent.get(key) == (version, _untimed(status)):
                continue
            if not version:  # unconditional, it could overwrite another controller's entries
                continue
            patch = {"metadata": {"resourceVersion": version}, "status": status}
            try:
                await self._source.client.patch_json(f"{path}/{wanted.name}/status", patch)
            except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
                status_code = exc.status if isinstance(exc, KubeError) else 0
                result = "conflict" if status_code == 409 else "error"
                if result == "error":
                    log.warning("status of %s %s: %s", wanted.kind, _name(wanted), exc)
                if 400 <= status_code < 500 and status_code != 409:
                    # refused for good (403: no RBAC for it; 422): not again for this version
                    self._sent[key] = (version, _untimed(status))
                self.writes[result] = self.writes.get(result, 0) + 1
                settled = False
                continue
            self.writes["ok"] = self.writes.get("ok", 0) + 1
            self._sent[key] = (version, _untimed(status))
        return settled

    def _objects(self, kind: str) -> list[dict[str, Any]]:
        return [
            obj
            for r in self._source.reflectors
            if r.resource.kind == kind and r.resource.group == GATEWAY_GROUP
            for obj in r.objects.values()
        ]

    def _cached_gateways(self) -> list[tuple[str, str, str, int]]:
        controllers = {
            (c.get("metadata") or {}).get("name"): (c.get("spec") or {}).get("controllerName")
            for c in self._objects("GatewayClass")
        }
        return [
            (str(meta.get("namespace") or ""), str(meta.get("name") or ""),
             str(controllers.get((g.get("spec") or {}).get("gatewayClassName")) or ""),
             int(meta.get("generation") or 0))
            for g in self._objects("Gateway")
            if (meta := g.get("metadata") or {})
        ]  # fmt: skip

    def _cached_routes(self) -> list[tuple[str, str, int, dict[str, Any]]]:
        return [
            (str(meta.get("namespace") or ""), str(meta.get("name") or ""),
             int(meta.get("generation") or 0), r.get("status") or {})
            for r in self._objects("HTTPRoute")
            if (meta := r.get("metadata") or {})
        ]  # fmt: skip

    def _find(self, wanted: ObjectStatus) -> tuple[str, dict[str, Any]] | None:
        """The object's collection path and its last watched version."""
        for reflector in self._source.reflectors:
            resource = reflector.resource
            if resource.kind != wanted.kind or resource.group != GATEWAY_GROUP:
                continue
            obj = reflector.objects.get((wanted.namespace, wanted.name))
            if obj is not None:
                return resource.path(wanted.namespace or None), obj
        return None


def _name(wanted: ObjectStatus) -> str:
    return f"{wanted.namespace}/{wanted.name}" if wanted.namespace else wanted.name


def _merged(wanted: ObjectStatus, current: dict[str, Any], now: str) -> dict[str, Any]:
    """``current`` with Sluice's part replaced by ``wanted``'s, unchanged conditions keeping
    their ``lastTransitionTime``."""
    if wanted.kind == "HTTPRoute":
        before = current.get("parents") or []
        wanted_by_ref = {_ref_key(e["parentRef"]): e for e in wanted.status["parents"]}
        keep = {_ref_key(ref) for ref in wanted.status.get("keep", ())}
        parents = []
        for entry in before:  # others' entries stay where they are; Sluice's are replaced
            if (
                entry.get("controllerName") not in ACCEPTED_CONTROLLERS
                or _ref_key(entry.get("parentRef")) in keep
            ):
                parents.append(entry)
                continue
            new = wanted_by_ref.pop(_ref_key(entry.get("parentRef")), None)
            if new is not None:
                parents.append({**new, "conditions": _conditions(new["conditions"], entry, now)})
        parents += [
            {**e, "conditions": _conditions(e["conditions"], {}, now)}
            for e in wanted_by_ref.values()
        ]
        if parents == before:
            return current
        return {**current, "parents": parents}
    merged = {**current, "conditions": _conditions(wanted.status["conditions"], current, now)}
    if "listeners" in wanted.status:
        before = {x.get("name"): x for x in current.get("listeners") or ()}
        merged["listeners"] = [
            {**x, "conditions": _conditions(x["conditions"], before.get(x["name"], {}), now)}
            for x in wanted.status["listeners"]
        ]
    return merged


def _untimed(status: Any) -> Any:
    """``status`` without its lastTransitionTimes (a condition stamped at two moments is
    the same condition)."""
    if isinstance(status, dict):
        return {k: _untimed(v) for k, v in status.items() if k != "lastTransitionTime"}
    if isinstance(status, list):
        return [_untimed(v) for v in status]
    return status


def _ref_key(ref: object) -> tuple[tuple[str, str], ...]:
    """A parentRef as a key, whatever order the API wrote its fields in."""
    return tuple(sorted((str(k), str(v)) for k, v in ref.items())) if isinstance(ref, dict) else ()


def _conditions(
    wanted: list[dict[str, Any]], current: dict[str, Any], now: str
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in current.get("conditions") or ()}
    out = []
    for condition in wanted:
        old = before.get(condition["type"])
        same = old is not None and old.get("status") == condition["status"]
        stamp = old.get("lastTransitionTime", now) if same and old is not None else now
        out.append({**condition, "lastTransitionTime": stamp})
    return out
