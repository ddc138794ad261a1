"""Reload: read → parse → build → bind new ports → swap, all or nothing.

Triggered by SIGHUP, by a change of any config file (polled: size and mtime of each file,
and the file list of each folder) and, with a cluster source, by a change of a watched
object. An invalid config is logged with every problem, counted in
``sluice_config_reload_failures_total``, and the running config stays. Requests in flight
keep the table they started with. Warnings are logged when they first appear, not again on
every reload (a cluster rebuilds the table whenever a pod comes or goes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.configload import config_files, load_config
from gateway.context import ProxyContext
from gateway.listeners import ListenerSet
from routing import RawDocument
from routing.errors import ConfigError, ConfigIssue

__all__ = ["ReloadResult", "Reloader", "unbound_issues"]

log = logging.getLogger("sluice.reload")
DEFAULT_WATCH_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadResult:
    ok: bool
    issues: tuple[ConfigIssue, ...]
    generation: int


def unbound_issues(listeners: ListenerSet) -> tuple[ConfigIssue, ...]:
    """The listener ports the last apply could not bind (cluster configs only)."""
    return tuple(
        ConfigIssue(file="listeners", document=0, path=f"port {port}",
                    message=f"cannot listen: {why}; its Gateway listeners are not served",
                    severity="warning")
        for port, why in sorted(listeners.unbound.items())
    )  # fmt: skip


class Reloader:
    def __init__(
        self,
        ctx: ProxyContext,
        listeners: ListenerSet,
        paths: Sequence[str],
        cluster: Callable[[], Sequence[RawDocument]] | None = None,
    ) -> None:
        self._ctx = ctx
        self._listeners = listeners
        self._paths = tuple(paths)
        self._cluster = cluster
        self._logged: frozenset[ConfigIssue] = frozenset()
        self._warnings: tuple[ConfigIssue, ...] = ()  # of the config in force
        self._lock = asyncio.Lock()
        self._fingerprint = self._snapshot()
        self._done = asyncio.Condition()
        self.attempts = 0
        self.last_result: ReloadResult | None = None
        # called after each table put in force and each rebind (the status writer)
        self.applied: list[Callable[[], None]] = []

    @property
    def reloading(self) -> bool:
        """A reload is in progress (it may not have read every source yet)."""
        return self._lock.locked()

    async def reload(self) -> ReloadResult:
        async with self._lock:
            self._fingerprint = self._snapshot()
            result = await self._reload()
            self.last_result = result
        async with self._done:
            self.attempts += 1
            self._done.notify_all()
        return result

    async def rebind(self) -> None:
        """Bind again the listener ports the last apply could not (cluster configs), on
        the table in force: no new table, so nothing else is reset."""
        async with self._lock:
            table = self._ctx.holder.table
            drain = await self._listeners.apply(table, skip_unbindable=True)
            await drain()  # the same table: no port is gone, nothing to drain
            self.note_warnings(self._warnings + unbound_issues(self._listeners))
            for hook in self.applied:
                hook()
        async with self._done:
            self.attempts += 1
            self._done.notify_all()

    async def wait_attempts(self, count: int) -> None:
        """Wait until ``count`` reloads (good or bad) have completed; for tests and tools."""
        async with self._done:
            await self._done.wait_for(lambda: self.attempts >= count)

    async def _reload(self) -> ReloadResult:
        holder = self._ctx.holder
        try:
            # parsing is pure and can take tens of ms: keep it off the event loop
            cluster = self._cluster() if self._cluster is not None else None
            loaded = await asyncio.to_thread(load_config, self._paths, cluster)
            drain = await self._listeners.apply(
                loaded.table, skip_unbindable=self._cluster is not None
            )
        except ConfigError as exc:
            return self._failed(exc.issues)
        except OSError as exc:
            where = ", ".join(self._paths)
            issue = ConfigIssue(file=where, document=0, path="", message=f"cannot listen: {exc}")
            return self._failed((issue,))
        holder.table = loaded.table
        holder.generation += 1
        self._ctx.pools.apply(loaded.table)
        self._ctx.rollouts.apply(loaded.table)
        self._ctx.admission.wake_all()
        task = asyncio.create_task(drain())
        self._ctx.background.add(task)
        task.add_done_callback(self._ctx.background.discard)
        self._ctx.metrics.reloads.labels("ok").inc()
        self._ctx.metrics.config_timestamp.set(time.time())
        self.note_loaded(loaded.warnings)
        for hook in self.applied:
            hook()
        log.info("config generation %d in force", holder.generation)
        return ReloadResult(
            ok=True,
            issues=loaded.warnings + unbound_issues(self._listeners),
            generation=holder.generation,
        )

    def note_loaded(self, warnings: tuple[ConfigIssue, ...]) -> None:
        """A config is in force with these warnings (and the ports it could not bind)."""
        self._warnings = warnings
        self.note_warnings(warnings + unbound_issues(self._listeners))

    def left_out(self) -> frozenset[tuple[str, str, str]]:
        """(kind, namespace, name) of the cluster objects the config in force left out for
        an error (``kubernetes:Kind.group/ns/name`` issues marked "object left out")."""
        out = set()
        for issue in self._warnings:
            if not issue.file.startswith("kubernetes:") or "(object left out)" not in issue.message:
                continue
            kind_group, _, where = issue.file.removeprefix("kubernetes:").partition("/")
            ns, _, name = where.rpartition("/")
            out.add((kind_group.split(".", 1)[0], ns, name))
        return frozenset(out)

    def note_warnings(self, warnings: tuple[ConfigIssue, ...]) -> None:
        """Log the warnings not logged at the last good load."""
        for warning in warnings:
            if warning not in self._logged:
                log.warning("%s", warning)
        self._logged = frozenset(warnings)

    def _failed(self, issues: tuple[ConfigIssue, ...]) -> ReloadResult:
        self._ctx.metrics.reloads.labels("invalid").inc()
        self._ctx.metrics.reload_failures.inc()
        log.error("config rejected; generation %d stays in force:", self._ctx.holder.generation)
        for issue in issues:
            log.error("  %s", issue)
        return ReloadResult(ok=False, issues=issues, generation=self._ctx.holder.generation)

    def _snapshot(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        for file in config_files(self._paths):
            try:
                st = os.stat(file)
                out.append((file, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((file, -1, -1))
        return tuple(out)

    async def watch(self, interval_s: float = DEFAULT_WATCH_INTERVAL_S) -> None:
        """Poll the config files and reload when they change; runs until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            if self._snapshot() != self._fingerprint:
                log.info("config files changed; reloading")
                await self.reload()
