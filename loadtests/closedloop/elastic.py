"""A simulated fleet whose size a reconciler changes, with Kubernetes-like pod life cycles.

`scale_to(n)` is what a Deployment's `spec.replicas` does:

- up: each new replica starts at once (it binds its port, unlisted) and serves after
  `startup_s` (image pull, model load); only then is it added to the gateway's EndpointSlices
  and the gateway reloaded;
- down: replicas still starting go first (newest first), then serving ones (newest first).
  A serving replica is drained: removed from the config and the gateway reloaded first, then,
  after `drain_grace_s`, stopped once its in-flight requests have finished (at most
  `drain_timeout_s`).

Every replica's life (created, serving, draining, stopped) is kept, in seconds of the run's
clock, for replica-seconds; every change of the target count is kept, for the scale changes.
"""

import asyncio
import dataclasses
import enum
import itertools
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp

from ..fleet import Replica, ReplicaSpec
from .scenario import Scaling
from .target import GatewayLink, ReloadError


class RunClock:
    """Seconds since the run's T0 (negative before it), on the monotonic clock."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0


class Phase(enum.StrEnum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclasses.dataclass(slots=True, kw_only=True, eq=False)  # hashed by identity
class Member:
    replica: Replica
    created_s: float
    serving_s: float | None = None
    draining_s: float | None = None
    stopped_s: float | None = None
    forced: bool = False  # stopped with requests still open (drain timeout)

    @property
    def phase(self) -> Phase:
        if self.stopped_s is not None:
            return Phase.STOPPED
        if self.draining_s is not None:
            return Phase.DRAINING
        return Phase.SERVING if self.serving_s is not None else Phase.STARTING


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ScaleChange:
    t_s: float
    before: int
    after: int


class ElasticFleet:
    def __init__(
        self,
        *,
        template: ReplicaSpec,
        time_scale: float,
        seed: int,
        scaling: Scaling,
        link: GatewayLink,
        clock: RunClock,
    ) -> None:
        self.template, self.time_scale, self.seed = template, time_scale, seed
        self.scaling, self.link, self.clock = scaling, link, clock
        self.members: list[Member] = []
        self.changes: list[ScaleChange] = []
        self.problems: list[str] = []  # reload refusals and the like, for the report
        self._indices = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._startups: dict[Member, asyncio.Task[None]] = {}
        self._publishing = asyncio.Lock()

    # --- what the reconciler reads ---

    def count(self, phase: Phase) -> int:
        return sum(1 for m in self.members if m.phase is phase)

    @property
    def target(self) -> int:
        """The replicas asked for: starting + serving (a Deployment's spec.replicas)."""
        return self.count(Phase.STARTING) + self.count(Phase.SERVING)

    def serving(self) -> list[Replica]:
        return [m.replica for m in self.members if m.phase is Phase.SERVING]

    # --- life cycle ---

    async def start(self, initial: int) -> None:
        """`initial` replicas serving at once (before T0), and the config written for them."""
        for _ in range(initial):
            member = await self._launch()
            member.serving_s = member.created_s
        self.link.write(self.serving())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        now = self.clock.now()
        for member in self.members:
            if member.stopped_s is None:
                await member.replica.stop()
                member.stopped_s = now

    async def scale_to(self, wanted: int) -> None:
        s = self.scaling
        wanted = min(s.max_replicas, max(s.min_replicas, wanted))
        current = self.target
        if wanted == current:
            return
        self.changes.append(ScaleChange(t_s=self.clock.now(), before=current, after=wanted))
        if wanted > current:
            for _ in range(wanted - current):
                member = await self._launch()
                self._startups[member] = self._spawn(self._serve_after_startup(member))
            return
        excess = current - wanted
        starting = [m for m in self.members if m.phase is Phase.STARTING]
        for member in reversed(starting[-excess:] if excess else []):
            self._startups.pop(member).cancel()
            await member.replica.stop()
            member.stopped_s = self.clock.now()
            excess -= 1
        serving = [m for m in self.members if m.phase is Phase.SERVING]
        victims = list(reversed(serving))[:excess]
        if not victims:
            return
        for member in victims:
            member.draining_s = self.clock.now()
        await self._publish()
        for member in victims:
            _ = self._spawn(self._drain(member))

    async def _launch(self) -> Member:
        replica = Replica(
            self.template, index=next(self._indices), seed=self.seed, time_scale=self.time_scale
        )
        member = Member(replica=replica, created_s=self.clock.now())
        self.members.append(member)  # first, so that close() stops it whatever happens next
        await replica.start()
        return member

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _serve_after_startup(self, member: Member) -> None:
        await asyncio.sleep(self.scaling.startup_s)
        del self._startups[member]  # from here on it is a serving replica
        member.serving_s = self.clock.now()
        await self._publish()

    async def _drain(self, member: Member) -> None:
        replica = member.replica
        await asyncio.sleep(self.scaling.drain_grace_s)
        try:
            async with asyncio.timeout(self.scaling.drain_timeout_s):
                await replica.wait_until(lambda s: s.in_flight == 0)
        except TimeoutError:
            member.forced = True
        await replica.stop()
        member.stopped_s = self.clock.now()

    async def _publish(self) -> None:
        async with self._publishing:
            try:
                await self.link.publish(self.serving())
            except (ReloadError, aiohttp.ClientError, TimeoutError) as exc:
                self.problems.append(f"t={self.clock.now():.1f}s: {type(exc).__name__}: {exc}")
