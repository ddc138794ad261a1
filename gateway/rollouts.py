"""Live Rollouts: sticky variant assignment per request, analysis ticks, admin controls.

State survives reloads: a Rollout whose spec is unchanged continues from its status
(``Rollout.restore``); a changed plan restarts it. Every time is the loop clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from gateway.metrics import Metrics
from routing.rollout import Rollout, split_weights
from routing.rolloutconfig import RolloutSpec
from routing.sticky import StickySpec, assign, issue_cookie, key_from
from routing.table import RoutingTable

__all__ = ["Assignment", "RolloutFinishedError", "Rollouts", "client_uses_https", "sticky_token"]

log = logging.getLogger("sluice.rollout")
TICK_S = 1.0
_NO_STICKY = StickySpec()
_TOKEN_KEY = web.RequestKey("sluice.sticky_token", str)  # a request's sticky token


def _wall_clock_offset() -> float:
    """Unix time − the loop's clock: statuses are kept on the loop's clock (monotonic, as the
    analysis needs) and shown in Unix seconds."""
    return time.time() - asyncio.get_running_loop().time()


class RolloutFinishedError(Exception):
    """An operator action on a Rollout already promoted or rolled back."""


@dataclass(frozen=True, slots=True)
class Assignment:
    variant: str
    rollout: Rollout
    spec: RolloutSpec
    # a Set-Cookie value for the response: the request had no sticky key and the Rollout's
    # sticky cookie now gives it one
    set_cookie: str | None = None


def sticky_token(request: web.BaseRequest, rng: random.Random) -> str:
    """This request's random sticky token: one per request, so every Rollout that assigns it
    without a sticky key (a route's and a model rewrite's) uses the same one, and a sticky
    cookie they both name gets one value."""
    token = request.get(_TOKEN_KEY)
    if token is None:
        token = request[_TOKEN_KEY] = f"{rng.getrandbits(64):016x}"
    return token


def client_uses_https(request: web.BaseRequest) -> bool:
    """The client reached us over HTTPS: directly, or through a TLS-terminating proxy that
    says so in ``X-Forwarded-Proto`` (its first value is the client's own hop). A client that
    forges it only gets a cookie it will not send back over plain HTTP."""
    if request.secure:
        return True
    proto = request.headers.get("X-Forwarded-Proto", "")
    return proto.split(",", 1)[0].strip().lower() == "https"


class Rollouts:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.live: dict[str, Rollout] = {}  # by Rollout namespace/name
        self._specs: dict[str, RolloutSpec] = {}
        self._task: asyncio.Task[None] | None = None

    def apply(self, table: RoutingTable) -> None:
        now = asyncio.get_running_loop().time()
        live: dict[str, Rollout] = {}
        for spec in table.rollouts.values():
            key = spec.meta.key
            old = self.live.get(key)
            if old is not None and old.plan == spec.plan:
                live[key] = old  # unchanged: keep the analysis window it is filling
            elif old is not None:
                live[key] = Rollout.restore(spec.plan, old.status, now)
            else:
                live[key] = Rollout.start(spec.plan, now)
            self._specs[key] = spec
        self.live = live
        self._specs = {k: v for k, v in self._specs.items() if k in live}
        self._gauges()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def assign(
        self,
        table: RoutingTable,
        where: tuple[str, int],
        variants: tuple[tuple[str, int], ...],
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        random_token: str,
        *,
        secure: bool = False,
    ) -> Assignment | None:
        """The variant for this request if a Rollout drives ``where``; None otherwise. A
        request without a sticky key is assigned by ``random_token`` (fresh per request), which
        becomes its sticky cookie when the Rollout names one (``Secure`` when ``secure``: the
        client came over HTTPS)."""
        spec = table.rollouts.get(where)
        if spec is None:
            return None
        rollout = self.live.get(spec.meta.key)
        if rollout is None:
            return None
        plan = spec.plan
        weights = split_weights(
            variants, baseline=plan.baseline, candidate=plan.candidate, weight=rollout.weight
        )
        sticky = spec.sticky or _NO_STICKY
        key = key_from(headers, cookies, sticky)
        set_cookie = None
        if key is None:
            issued = issue_cookie(sticky, random_token, secure=secure)
            key, set_cookie = issued if issued is not None else ("r:" + random_token, None)
        override = headers.get(spec.override_header) if spec.override_header else None
        name = assign(key, weights, salt=spec.salt, override=override)
        return Assignment(name, rollout, spec, set_cookie) if name is not None else None

    def statuses(self) -> dict[str, object]:
        offset = _wall_clock_offset()
        return {key: r.status.to_json(offset) for key, r in self.live.items()}

    def control(self, key: str, action: str) -> dict[str, object] | None:
        """The Rollout's status after ``action``; None when there is no such Rollout or
        action. RolloutFinishedError when it has already been promoted or rolled back: a
        finished Rollout takes no more actions (pausing a paused one, or resuming one that
        progresses, changes nothing and is no error)."""
        rollout = self.live.get(key)
        if rollout is None or action not in ("pause", "resume", "promote", "abort"):
            return None
        phase = rollout.status.phase
        if phase.is_terminal:
            raise RolloutFinishedError(f"Rollout {key} is {phase}: {action} does not apply")
        now = asyncio.get_running_loop().time()
        status = getattr(rollout, action)(now)
        self._gauges()
        log.info("rollout %s: %s -> %s", key, action, status.phase)
        result: dict[str, object] = status.to_json(_wall_clock_offset())
        return result

    def tick(self) -> None:
        now = asyncio.get_running_loop().time()
        for key, rollout in self.live.items():
            before = (rollout.status.phase, rollout.weight)
            status = rollout.tick(now)
            if (status.phase, rollout.weight) != before:
                log.info("rollout %s: %s at weight %d (%s)", key, status.phase,
                         rollout.weight, status.message)  # fmt: skip
                self._metrics.rollout_transitions.labels(key, str(status.phase)).inc()
        self._gauges()

    def _gauges(self) -> None:
        for key, rollout in self.live.items():
            self._metrics.rollout_weight.labels(key).set(rollout.weight)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.tick()
