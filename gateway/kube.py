"""Read Sluice's resources from a Kubernetes API server: list each, then watch it.

``sluice serve --kubernetes`` (in a pod: the service account's token and CA) or
``--kubernetes-api URL`` (for example ``kubectl proxy``) makes the cluster a config source
beside the files: every change to a watched object rebuilds the routing table through the
reloader, so the all-or-nothing swap, the listener changes and the drain are the files' own.

Rules:
- Read only: nothing is written to the API (no status conditions; see README).
- A resource the API does not serve (a CRD that is not installed: 404) or may not be read
  (403) before it was ever listed counts as empty and is asked for again every
  ``ABSENT_RETRY_S``; it never stops the others. Once listed, its objects stand through any
  error until a list succeeds again (as client-go's informers).
- A watch that the server ends (its timeout) resumes from the last resourceVersion seen; one
  too old for the server (410 Gone), or any failure, lists again. Failures back off
  exponentially, with jitter, up to ``MAX_BACKOFF_S``; so does a watch that ends at once.
- Start-up waits for the API's first answer; a kind that still fails after ``START_TRIES``
  is left to the background, so one broken kind cannot keep the gateway from starting.
- Bounded memory: objects are kept as ``gateway.kubeapi.slim`` leaves them. Changes the
  table in force does not read (a pod no pool selects, a Service nothing names, a pod's
  restart count) do not rebuild it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from gateway.configload import is_read
from gateway.kubeapi import (
    RESOURCES,
    WATCH_TIMEOUT_S,
    ApiClient,
    ApiServer,
    KubeError,
    Resource,
    slim,
)
from routing import RawDocument
from routing import model as m
from routing.backends import referenced_objects

__all__ = ["ClusterSource"]

log = logging.getLogger("sluice.kube")

ABSENT_RETRY_S = 60.0
MAX_BACKOFF_S = 30.0
LIST_PAGE = 500
SETTLE_S = 0.2  # rebuild at most this often while objects keep changing
RETRY_S = 5.0  # a port that could not be bound, a failed rebuild: tried again this often
START_TRIES = 5


def _only_status_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether an update touched only ``status`` (Pods aside: their status is what Sluice
    reads of them)."""
    if new.get("kind") == "Pod":
        return False

    def rest(obj: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
        return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}

    return rest(old) == rest(new)


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class _Reflector:
    """One resource's objects, kept current by list and watch."""

    def __init__(self, source: ClusterSource, resource: Resource) -> None:
        self._source = source
        self.resource = resource
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = ""  # resourceVersion to watch from; "" = list first
        self.absent = False  # 404 or 403 before any list succeeded: counts as empty
        self.listed = False  # a list has succeeded: its objects stand until the next one
        self.healthy = False  # the last list or watch worked (sluice_kubernetes_synced)
        self.events: dict[str, int] = {}  # watch events by type
        self.errors: dict[str, int] = {}  # failures by operation: list, watch

    def documents(self) -> Iterator[RawDocument]:
        # kind.group, as kubectl names it: the two InferencePool groups must not collide
        group = f".{self.resource.group}" if self.resource.group else ""
        for (ns, name), obj in sorted(self.objects.items()):
            where = f"{ns}/{name}" if ns else name
            yield RawDocument(
                file=f"kubernetes:{self.resource.kind}{group}/{where}", index=0, data=obj
            )

    def _selected(self, params: dict[str, str]) -> dict[str, str]:
        if self.resource.field_selector:
            params["fieldSelector"] = self.resource.field_selector
        return params

    async def list(self) -> None:
        """Replace the objects with a full (paged) list; 404/403 make the resource absent."""
        items: dict[tuple[str, str], dict[str, Any]] = {}
        page = str(self._source.list_page)
        params = self._selected({"limit": page})
        try:
            while True:
                body = await self._source.client.get_json(self._path(), params)
                for item in body.get("items") or ():
                    item = slim(
                        {"apiVersion": self.resource.api_version, "kind": self.resource.kind} | item
                    )
                    items[_key(item)] = item
                meta = body.get("metadata") or {}
                if not meta.get("continue"):
                    break
                params = self._selected({"limit": page, "continue": str(meta["continue"])})
        except KubeError as exc:
            if exc.status not in (403, 404) or self.listed:
                raise  # once listed, the objects stand (as client-go's) until a list works
            if not self.absent:
                log.warning("%s %s: %s; taken as none", self.resource.kind, self._path(), exc)
            self.absent = True
            self.healthy = False
            return
        if self.absent:
            log.info("%s %s: served again", self.resource.kind, self._path())
        if not meta.get("resourceVersion"):
            raise KubeError(200, f"{self._path()}: a list without a resourceVersion")
        self.absent = False
        self.listed = self.healthy = True
        self.version = str(meta["resourceVersion"])
        self._replace(items)

    def _replace(self, items: dict[tuple[str, str], dict[str, Any]]) -> None:
        if items != self.objects:
            self.objects = items
            self._source.changed()

    def _path(self) -> str:
        return self.resource.path(self._source.namespace)

    async def run(self) -> None:
        """List and watch until cancelled."""
        failures = 0
        while True:
            try:
                if self.absent:
                    await asyncio.sleep(self._source.absent_retry_s)
                    await self.list()
                    continue
                if not self.version:
                    await self.list()
                    continue
                await self._watch()
                failures = 0
            except Exception as exc:  # the loop must outlive any one bad answer
                self.count_error("watch" if self.version else "list")
                failures += 1
                delay = min(MAX_BACKOFF_S, 0.5 * 2 ** min(failures, 10))
                log.warning("%s watch: %s; again in %.1fs", self.resource.kind, exc, delay)
                self.version = ""  # list again, then watch (client-go's ListAndWatch)
                await asyncio.sleep(delay * random.uniform(1.0, 1.5))

    async def _watch(self) -> None:
        params = self._selected(
            {
                "watch": "1",
                "resourceVersion": self.version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(WATCH_TIMEOUT_S),
            }
        )
        loop = asyncio.get_running_loop()
        started, events_seen = loop.time(), 0
        try:
            async with contextlib.aclosing(
                self._source.client.stream_json(self._path(), params)
            ) as events:
                async for event in events:
                    events_seen += 1
                    if not self._apply(event):
                        return
        except KubeError as exc:
            if exc.status != 410:
                raise
            self.version = ""  # the version is too old for the server (410 Gone): list again
            return
        if not events_seen and loop.time() - started < 1.0:
            # a server that ends every watch at once must not get one request after another
            raise KubeError(200, "the watch ended at once, with no event")

    def count_error(self, operation: str) -> None:
        self.healthy = False
        self.errors[operation] = self.errors.get(operation, 0) + 1

    def _apply(self, event: dict[str, Any]) -> bool:
        """Apply one watch event; False when the watch must stop and list again."""
        kind, obj = event.get("type"), event.get("object") or {}
        self.events[str(kind)] = self.events.get(str(kind), 0) + 1
        if kind == "ERROR":
            if obj.get("code") == 410:
                self.version = ""
                return False
            raise KubeError(int(obj.get("code") or 0), str(obj.get("message")))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.version = str(version)
        key = _key(obj)
        old = self.objects.get(key)
        if kind == "DELETED":
            if self.objects.pop(key, None) is not None:
                self._changed(old, None)
        elif kind in ("ADDED", "MODIFIED"):
            item = slim({"apiVersion": self.resource.api_version, "kind": self.resource.kind} | obj)
            if old != item:
                self.objects[key] = item
                self._changed(old, item)
        return True  # BOOKMARK: only its resourceVersion counts

    def _changed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Rebuild, unless the object is one the table in force does not use, before or
        after: a pod no pool selects, a Service (or its slices) nothing names. Most of a
        cluster's are; a rebuild for a change that starts using one reads them anyway."""
        self._source.note(old, new)


class ClusterSource:
    """The cluster's objects as config documents; ``follow`` rebuilds on every change."""

    def __init__(
        self,
        api: ApiServer,
        *,
        namespace: str | None = None,
        resources: tuple[Resource, ...] = RESOURCES,
        request_timeout_s: float = 30.0,
        list_page: int = LIST_PAGE,
        absent_retry_s: float = ABSENT_RETRY_S,
        retry_s: float = RETRY_S,
    ) -> None:
        self.list_page = list_page
        self.absent_retry_s = absent_retry_s
        self.retry_s = retry_s
        self.api = api
        self.namespace = namespace
        self.client = ApiClient(api, request_timeout_s=request_timeout_s)
        self.reflectors = [_Reflector(self, r) for r in resources]
        self._changed = asyncio.Event()
        # the config of the table in force, and whether one is being built (from follow)
        self._in_force: Callable[[], m.Config] | None = None
        self._busy: Callable[[], bool] = lambda: True
        self._referenced: tuple[object, frozenset[tuple[str, str, str]]] = (None, frozenset())
        self._rebuilding = False
        self._deferred: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.rebuilds = 0
        self.status_writes: dict[str, int] = {}  # by result (gateway.kubestatus)

    def changed(self) -> None:
        self._changed.set()

    @property
    def rebuild_pending(self) -> bool:
        """A change waits for the next rebuild."""
        return self._changed.is_set()

    def note(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """An object changed (``old`` → ``new``, either None): rebuild if the table reads
        it. While ``follow`` rebuilds, the change is judged by the new table, once in force
        (judged by the old one it might be missed; counted blindly, churn of objects no
        table reads would chain rebuilds)."""
        if old is not None and new is not None and _only_status_changed(old, new):
            return  # a controller's report (Sluice's own among them): nothing to route by
        if self._rebuilding:
            self._deferred.append((old, new))
        elif any(obj is not None and self.is_used(obj) for obj in (old, new)):
            self.changed()

    def is_used(self, obj: dict[str, Any]) -> bool:
        """Whether the table in force reads ``obj``. While a reload not started by
        ``follow`` (a file's, SIGHUP) is building a table, every change counts: that table
        may read an object the one in force does not (a pod a new pool selects), and may
        have read its documents before the object changed."""
        if self._in_force is None or self._busy():
            return True
        config = self._in_force()
        if self._referenced[0] is not config:
            self._referenced = (config, referenced_objects(config))
        return is_read(obj, config, self._referenced[1])

    def documents(self) -> list[RawDocument]:
        return [doc for r in self.reflectors for doc in r.documents()]

    async def start(self, tries: int = START_TRIES) -> None:
        """List every resource once, then watch them in the background. Kinds whose list
        fails are asked again every ``retry_s`` / 5: for ever while no kind has been listed
        (the API cannot be reached), else ``tries`` times, after which they are left to the
        background, so one broken kind (a failing CRD conversion webhook, say) cannot keep
        the gateway from starting."""
        pending = list(self.reflectors)
        tries_left = tries  # counted once the API has answered some kind's list
        while True:
            failed: list[tuple[_Reflector, Exception]] = []
            for reflector in pending:
                try:
                    await reflector.list()
                except Exception as exc:
                    reflector.count_error("list")
                    failed.append((reflector, exc))
            if not failed:
                break
            if len(failed) < len(self.reflectors):
                tries_left -= 1
                if tries_left <= 0:
                    for reflector, error in failed:
                        log.error("listing %s: %s; starting without it, still trying",
                                  reflector.resource.label, error)  # fmt: skip
                    break
            for reflector, error in failed:
                log.warning("listing %s: %s; again in %.1fs", reflector.resource.label, error,
                            self.retry_s / 5)  # fmt: skip
            pending = [reflector for reflector, _ in failed]
            await asyncio.sleep(self.retry_s / 5)
        self._changed.clear()
        self._tasks = [asyncio.create_task(r.run()) for r in self.reflectors]

    async def follow(
        self,
        rebuild: Callable[[], Awaitable[object]],
        *,
        in_force: Callable[[], m.Config],
        busy: Callable[[], bool],
        pending: Callable[[], bool] = lambda: False,
        retry: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """Call ``rebuild`` after changes, until cancelled: at most every ``SETTLE_S``, and
        in a large cluster never more than a third of the time (the pause after a rebuild
        is at least twice as long as the rebuild took). ``in_force``: the config of the
        table in force, so objects it does not read (most pods, Services and slices of a
        cluster) change nothing; ``busy``: whether a table is being built (by this loop or
        a file reload). ``pending``: something the last rebuild could not do (a port to
        bind); then ``retry`` runs every ``retry_s`` until it is done or a change comes."""
        loop = asyncio.get_running_loop()
        self._in_force, self._busy = in_force, busy
        while True:
            if pending() and retry is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.retry_s):
                        await self._changed.wait()
                if not self._changed.is_set():
                    await retry()  # nothing changed: no new table, only the retry
                    continue
            else:
                await self._changed.wait()
            self._changed.clear()
            started = loop.time()
            pause = SETTLE_S
            self._rebuilding = True
            try:
                await rebuild()
            except Exception:  # a bug must not stop every later update
                log.exception("rebuilding the routing table from the cluster failed")
                self._changed.set()  # try again, after a longer pause
                pause = self.retry_s
            finally:
                self._rebuilding = False
                deferred, self._deferred = self._deferred, []
            if any(o is not None and self.is_used(o) for pair in deferred for o in pair):
                self._changed.set()
            self.rebuilds += 1
            await asyncio.sleep(max(pause, 2 * (loop.time() - started)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.close()
