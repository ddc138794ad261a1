"""Status written back to the cluster: the conditions of Sluice's GatewayClasses, Gateways
(and their listeners) and the HTTPRoutes attached to them (``routing.status`` decides them).

After every table (and every port bound or lost) the writer compares what the table says
with each object's status as the watch last delivered it, and patches ``/status`` only where
they differ: a condition keeps its ``lastTransitionTime`` while its status stays. An
HTTPRoute's ``parents`` entries of other controllers are kept as they are. Each patch names
the resourceVersion it was computed from, so a concurrent write is refused (409) rather than
overwritten; the object's next version brings the next try. Every replica writes, and only
differences: replicas that agree write nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

from gateway.kube import ClusterSource
from gateway.kubeapi import KubeError
from routing.status import CONTROLLER, ObjectStatus, desired_statuses
from routing.table import RoutingTable

__all__ = ["StatusWriter"]

log = logging.getLogger("sluice.kubernetes")

RETRY_S = 1.0  # after a failed or refused write, the next comparison


class StatusWriter:
    def __init__(
        self,
        source: ClusterSource,
        table: Callable[[], RoutingTable],
        unbound: Callable[[], Collection[int]],
        *,
        retry_s: float = RETRY_S,
    ) -> None:
        self._source = source
        self._table = table
        self._unbound = unbound
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
        """Compare and write after each change, until cancelled."""
        self._changed.set()
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                settled = await self.publish()
            except Exception:  # a bug must not stop later writes
                log.exception("writing status to the cluster failed")
                settled = False
            if settled and not self._changed.is_set():
                self.settled.set()
            if not settled:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._retry_s):
                        await self._changed.wait()
                self._changed.set()

    async def publish(self) -> bool:
        """Patch every status that differs from the table's; True when all are as wanted."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        settled = True
        for wanted in desired_statuses(self._table(), frozenset(self._unbound())):
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
            patch = {"metadata": {"resourceVersion": version}, "status": status}
            try:
                await self._source.client.patch_json(f"{path}/{wanted.name}/status", patch)
            except KubeError as exc:
                result = "conflict" if exc.status == 409 else "error"
                if result == "error":
                    log.warning("status of %s %s: %s", wanted.kind, _name(wanted), exc)
                self.writes[result] = self.writes.get(result, 0) + 1
                settled = False
                continue
            self.writes["ok"] = self.writes.get("ok", 0) + 1
            self._sent[key] = (version, _untimed(status))
        return settled

    def _find(self, wanted: ObjectStatus) -> tuple[str, dict[str, Any]] | None:
        """The object's collection path and its last watched version."""
        for reflector in self._source.reflectors:
            resource = reflector.resource
            if resource.kind != wanted.kind or resource.group != "gateway.networking.k8s.io":
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
        others = [p for p in before if p.get("controllerName") != CONTROLLER]
        mine = {_ref_key(p.get("parentRef")): p for p in before if p not in others}
        ours = [
            {**entry, "conditions": _conditions(
                entry["conditions"], mine.get(_ref_key(entry["parentRef"]), {}), now
            )}
            for entry in wanted.status["parents"]
        ]  # fmt: skip
        return {**current, "parents": others + ours}
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
