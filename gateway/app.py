"""Assemble a running gateway: context, listeners, reloader, admin site, signals.

``running_gateway`` is the composition root used by ``sluice serve`` and by the component
tests (with port 0 for the admin site); nothing is registered at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import signal
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aiohttp import web

from gateway.admin import build_admin_app
from gateway.configload import LoadedConfig, load_config
from gateway.context import Limits, ProxyContext, TableHolder
from gateway.keda import KedaScaler
from gateway.kube import ClusterSource
from gateway.kubelease import LeaderElector
from gateway.kubemetrics import ClusterCollector
from gateway.kubestatus import StatusWriter
from gateway.listeners import ListenerSet
from gateway.metrics import Metrics
from gateway.poolmetrics import PoolCollector
from gateway.reload import Reloader
from gateway.upstream import make_session

__all__ = ["RunningGateway", "running_gateway", "serve_forever"]

log = logging.getLogger("sluice")


@dataclass(slots=True, kw_only=True)
class RunningGateway:
    ctx: ProxyContext
    listeners: ListenerSet
    reloader: Reloader
    admin_port: int
    watcher: asyncio.Task[None] | None
    cluster: ClusterSource | None
    keda: KedaScaler
    keda_port: int | None
    status: StatusWriter | None = None
    elector: LeaderElector | None = None


@contextlib.asynccontextmanager
async def running_gateway(
    paths: Sequence[str],
    *,
    address: str = "0.0.0.0",
    admin_address: str = "127.0.0.1",
    admin_port: int = 9901,
    limits: Limits | None = None,
    watch_interval_s: float | None = 1.0,
    seed: int | None = None,
    loaded: LoadedConfig | None = None,
    keda_address: str | None = None,
    autoscaling_interval_s: float = 1.0,
    cluster: ClusterSource | None = None,
    write_status: bool = True,
    status_lease_s: float = 15.0,
) -> AsyncIterator[RunningGateway]:
    """Start a gateway on ``paths`` (and the objects of ``cluster``, listed before it
    starts and followed while it runs, its status written back unless not
    ``write_status``, by the replica holding a Lease of ``status_lease_s``); raises
    ``ConfigError`` if the config is invalid."""
    limits = limits or Limits()
    if cluster is not None:
        await cluster.start()
    try:
        loaded = loaded or load_config(paths, cluster.documents() if cluster else None)
    except BaseException:
        if cluster is not None:
            await cluster.close()
        raise
    metrics = Metrics.create()
    session = make_session(connect_timeout_s=limits.upstream_connect_timeout_s)
    ctx = ProxyContext(
        holder=TableHolder(table=loaded.table),
        session=session,
        metrics=metrics,
        limits=limits,
        rng=random.Random(seed),
    )
    metrics.registry.register(PoolCollector(ctx))
    if cluster is not None:
        metrics.registry.register(ClusterCollector(cluster))
    listeners = ListenerSet(ctx, address=address)
    reloader = Reloader(ctx, listeners, paths, cluster.documents if cluster else None)
    runner: web.AppRunner | None = None
    watcher = None
    follower: asyncio.Task[None] | None = None
    status: StatusWriter | None = None
    status_task: asyncio.Task[None] | None = None
    elector: LeaderElector | None = None
    elector_task: asyncio.Task[None] | None = None
    keda = KedaScaler(ctx.autoscaling, ctx.admission, lambda: ctx.holder.table)
    keda_port = None
    try:
        await (await listeners.apply(loaded.table, skip_unbindable=cluster is not None))()
        reloader.note_loaded(loaded.warnings)
        ctx.pools.apply(loaded.table)
        ctx.rollouts.apply(loaded.table)
        ctx.rollouts.start()
        metrics.reloads.labels("ok").inc()
        metrics.config_timestamp.set(time.time())
        runner = web.AppRunner(
            build_admin_app(ctx, listeners, reloader), access_log=None, handle_signals=False
        )
        await runner.setup()
        site = web.TCPSite(runner, admin_address, admin_port, reuse_address=True)
        await site.start()
        bound_admin = runner.addresses[0][1] if runner.addresses else admin_port
        if watch_interval_s:
            watcher = asyncio.create_task(reloader.watch(watch_interval_s))
        if cluster is not None:
            follower = asyncio.create_task(
                cluster.follow(
                    reloader.reload,
                    in_force=lambda: ctx.holder.table.config,
                    busy=lambda: reloader.reloading,
                    pending=lambda: bool(listeners.unbound),
                    retry=reloader.rebind,
                )
            )
        if cluster is not None and write_status:
            elector = LeaderElector(
                cluster.client,
                cluster.api.namespace,
                lease_s=status_lease_s,
                renew_s=status_lease_s / 7.5,
                renew_deadline_s=status_lease_s * 2 / 3,
                on_change=lambda leader: status.changed() if leader and status else None,
            )
            status = StatusWriter(
                cluster, lambda: ctx.holder.table, left_out=reloader.left_out, elector=elector
            )
            reloader.applied.append(status.changed)
            status_task = asyncio.create_task(status.run())
            elector_task = asyncio.create_task(elector.run())
        # start-up objects (config, modules) live for the whole process: move them out of
        # the collector's sight, so the first full collection does not pause traffic
        gc.collect()
        gc.freeze()
        ctx.autoscaling.start(autoscaling_interval_s)
        if keda_address:
            keda_port = await keda.start(keda_address)
        yield RunningGateway(
            ctx=ctx,
            listeners=listeners,
            reloader=reloader,
            admin_port=bound_admin,
            watcher=watcher,
            cluster=cluster,
            keda=keda,
            keda_port=keda_port,
            status=status,
            elector=elector,
        )
    finally:
        for task in (watcher, follower, status_task, elector_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if elector is not None:
            with contextlib.suppress(TimeoutError):  # a shutdown does not wait on the API
                async with asyncio.timeout(2.0):
                    await elector.release()  # before the cluster's client closes
        if cluster is not None:
            await cluster.close()
        await keda.close()
        await ctx.autoscaling.close()
        await ctx.rollouts.close()
        await listeners.close(limits.shutdown_grace_s)
        if runner is not None:
            await runner.cleanup()
        for task in list(ctx.background):
            task.cancel()
        await ctx.pools.close()
        await ctx.embeddings.close()
        await ctx.admission.close()
        await session.close()


async def serve_forever(gateway: RunningGateway) -> None:
    """Run until SIGTERM or SIGINT; reload on SIGHUP."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_hup() -> None:
        log.info("SIGHUP: reloading config")
        task = asyncio.create_task(gateway.reloader.reload())
        gateway.ctx.background.add(task)
        task.add_done_callback(gateway.ctx.background.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await stop.wait()
        log.info("stopping: draining connections")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
