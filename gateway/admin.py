"""The admin listener: /healthz, /readyz, /metrics, /config. Loopback by default; never on a
data-plane port."""

from __future__ import annotations

import dataclasses
import enum
import json

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.context import ProxyContext
from gateway.headers import SERVER
from gateway.listeners import ListenerSet
from gateway.reload import Reloader
from gateway.rollouts import RolloutFinishedError
from routing.table import RoutingTable

__all__ = ["build_admin_app"]

CTX = web.AppKey("ctx", ProxyContext)
LISTENERS = web.AppKey("listeners", ListenerSet)
RELOADER = web.AppKey("reloader", Reloader)


def build_admin_app(
    ctx: ProxyContext, listeners: ListenerSet, reloader: Reloader
) -> web.Application:
    app = web.Application()
    app.on_response_prepare.append(_server_header)
    app[CTX] = ctx
    app[LISTENERS] = listeners
    app[RELOADER] = reloader
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/config", _config)
    app.router.add_post("/reload", _reload)
    app.router.add_get("/rollouts", _rollouts)
    app.router.add_post("/rollouts/{namespace}/{name}/{action}", _rollout_action)
    app.router.add_get("/autoscaling", _autoscaling)
    app.router.add_get("/autoscaling/{namespace}/{name}", _autoscaling)
    return app


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    ctx, listeners = request.app[CTX], request.app[LISTENERS]
    # ports left out because they cannot be bound (a cluster's Gateway on a port this pod
    # may not use) do not hold every other Gateway out of rotation; but a gateway with
    # none of its ports bound serves nothing, and is not ready
    table_ports = set(ctx.holder.table.ports)
    wanted = table_ports - set(listeners.unbound)
    ready = wanted.issubset(listeners.ports) and (bool(listeners.ports) or not table_ports)
    body = {"ready": ready, "generation": ctx.holder.generation, "ports": sorted(listeners.ports),
            "unbound": sorted(listeners.unbound)}  # fmt: skip
    return web.json_response(body, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    data = generate_latest(request.app[CTX].metrics.registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _rollouts(request: web.Request) -> web.Response:
    """Every Rollout's status: phase, step, candidate weight, last analysis, weight history."""
    return web.json_response({"rollouts": request.app[CTX].rollouts.statuses()})


async def _rollout_action(request: web.Request) -> web.Response:
    """POST /rollouts/{namespace}/{name}/{pause|resume|promote|abort}."""
    key = f"{request.match_info['namespace']}/{request.match_info['name']}"
    try:
        status = request.app[CTX].rollouts.control(key, request.match_info["action"])
    except RolloutFinishedError as exc:
        return web.json_response(
            {"error": {"code": "rollout_finished", "message": str(exc)}}, status=409
        )
    if status is None:
        return web.json_response(
            {"error": {"code": "not_found", "message": f"no Rollout {key} or unknown action"}},
            status=404,
        )
    return web.json_response(status)


async def _autoscaling(request: web.Request) -> web.Response:
    """Demand and the replica recommendation per pool, as JSON (KEDA's metrics-api scaler
    reads ``desiredReplicas`` with ``valueLocation: desiredReplicas``)."""
    ctx = request.app[CTX]
    wanted = None
    if "name" in request.match_info:
        wanted = f"{request.match_info['namespace']}/{request.match_info['name']}"
    pools = {}
    for name, settings in ctx.holder.table.pools.items():
        if wanted is not None and name != wanted:
            continue
        demand = ctx.autoscaling.demand(settings)
        latest = ctx.autoscaling.latest.get(name)
        rec = latest[1] if latest else None
        pools[name] = {
            "desiredReplicas": rec.desired if rec else None,
            "panic": rec.panic if rec else False,
            "active": bool(demand.demand) or (rec.active if rec else False),
            "readyReplicas": demand.ready,
            "demand": demand.demand,
            "queued": demand.queued,
            "inFlight": demand.in_flight,
            "backendRunning": demand.backend_running,
            "backendWaiting": demand.backend_waiting,
            "stableDemand": rec.stable_demand if rec else None,
            "panicDemand": rec.panic_demand if rec else None,
            "headroom": settings.autoscaling.headroom,
            "targetPerReplica": settings.autoscaling.target_per_replica,
        }
    if wanted is not None:
        if wanted not in pools:
            return web.json_response(
                {"error": {"code": "pool_not_found", "message": f"no InferencePool {wanted}"}},
                status=404,
            )
        return web.json_response(pools[wanted])
    return web.json_response({"pools": pools})


async def _reload(request: web.Request) -> web.Response:
    result = await request.app[RELOADER].reload()
    body = {
        "ok": result.ok,
        "generation": result.generation,
        "issues": [str(i) for i in result.issues],
    }
    return web.json_response(body, status=200 if result.ok else 400)


async def _config(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = {"generation": ctx.holder.generation, **effective_config(ctx.holder.table)}
    return web.Response(
        text=json.dumps(body, indent=2, default=_json_default), content_type="application/json"
    )


def effective_config(table: RoutingTable) -> dict[str, object]:
    """The config in force: resources as parsed, plus what attached where."""
    listeners = [
        {
            "gateway": lt.gateway,
            "listener": lt.name,
            "port": lt.port,
            "protocol": pt.protocol,
            "hostname": lt.hostname,
            "certificates": [s.meta.key for s in lt.certificates],
            "virtual_hosts": [
                {
                    "hostname": vh.hostname,
                    "rules": [f"{e.rule.route}#{e.rule.index}" for e in vh.entries],
                }
                for vh in (
                    *lt.exact.values(),
                    *lt.wildcards,
                    *([lt.any_host] if lt.any_host else []),
                )
            ],
        }
        for pt in table.ports.values()
        for lt in pt.listeners
    ]
    backends = {
        b.target.name: {
            "kind": type(b.target).__name__,
            "endpoints": [e.key for e in getattr(b.target, "endpoints", ())],
            "reason": getattr(b.target, "reason", None),
        }
        for rule in table.rules
        for b in rule.backends
    }
    resources = dataclasses.asdict(table.config)
    for secret in resources["secrets"]:  # private keys never leave the process
        if secret["key"] is not None:
            secret["key"] = "(redacted)"
    return {
        "listeners": listeners,
        "backends": backends,
        "resources": resources,
        "warnings": list(table.warnings),
    }


def _json_default(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, frozenset | set):
        return sorted(value)
    return str(value)
