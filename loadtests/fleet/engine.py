"""The simulated engine: a continuous-batching scheduler stepping in (scaled) real time.

Each step schedules, like vLLM V1's scheduler: running sequences first (one decode token each, or
the next chunk of an unfinished prefill), preempting the most recently admitted sequence when the
KV cache cannot grow; then, if nothing was preempted, waiting sequences in FIFO order while
`max_num_seqs`, the per-step token budget, the KV cache and `max_loras` allow (a request whose
adapter cannot get a slot is skipped, not blocking the ones behind it). The step then sleeps for
its modelled duration and every sequence that has caught up samples one token.

It never touches HTTP: handlers `submit` sequences and read tokens from their outbox.
"""

import asyncio
import collections
import contextlib
import dataclasses
import enum
import time
from collections.abc import Callable, Sequence

from .kvcache import Block, BlockPool
from .spec import EngineProfile
from .tokens import chain_block_hashes

TTFT_BUCKETS_S = (
    *(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75),
    *(1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0),
)
E2E_BUCKETS_S = (
    *(0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0),
    *(120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0),
)


MAX_CATCH_UP_S = 0.01  # lag behind the deadline clock beyond this is forgiven, not made up


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclasses.dataclass(slots=True, eq=False)
class EngineRequest:
    """One request inside the engine. `outbox` yields each sampled token, then None."""

    model: str  # the name served: base model or adapter
    adapter: str | None
    tokens: list[str]  # prompt, then sampled tokens
    num_prompt_tokens: int
    planned: tuple[str, ...]  # every token it will sample
    stops_on_eos: bool
    arrival: float
    status: SeqStatus = SeqStatus.WAITING
    num_computed: int = 0
    blocks: list[Block] = dataclasses.field(default_factory=list)
    hashes: list[int] = dataclasses.field(default_factory=list)
    num_registered: int = 0  # leading blocks whose hash the pool knows
    cached_prompt_tokens: int | None = None  # prefix-cache hit at first admission
    first_token_at: float | None = None
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    outbox: asyncio.Queue[str | None] = dataclasses.field(default_factory=asyncio.Queue)

    @property
    def num_generated(self) -> int:
        return len(self.tokens) - self.num_prompt_tokens


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)  # non-cumulative
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break


@dataclasses.dataclass(slots=True)
class EngineCounters:
    prefix_queries: int = 0  # tokens looked up in the prefix cache
    prefix_hits: int = 0  # of which found
    preemptions: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    lora_loads: int = 0
    steps: int = 0
    scheduled_seqs: int = 0  # summed over steps: mean batch size = scheduled_seqs / steps
    busy_s: float = 0.0  # wall-clock seconds spent stepping
    # requests held (running or waiting) x seconds, summed over steps: its growth over a
    # window divided by the window is the replica's mean load in requests
    held_request_s: float = 0.0
    max_running: int = 0
    finished: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    ttft: Histogram = dataclasses.field(default_factory=lambda: Histogram(TTFT_BUCKETS_S))
    e2e: Histogram = dataclasses.field(default_factory=lambda: Histogram(E2E_BUCKETS_S))


@dataclasses.dataclass(slots=True)
class _Plan:
    budget: int
    entries: list[tuple[EngineRequest, int]] = dataclasses.field(default_factory=list)
    prefill_tokens: int = 0
    lora_loads: int = 0


class Engine:
    """One replica's engine. `slow_factor` multiplies step time (failure injection)."""

    def __init__(
        self,
        profile: EngineProfile,
        *,
        max_loras: int,
        seconds_per_unit: float,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.profile = profile
        self.max_loras = max_loras
        self.slow_factor = 1.0
        self.counters = EngineCounters()
        self.pool = BlockPool(profile.num_blocks)
        self.waiting: collections.deque[EngineRequest] = collections.deque()
        self.running: list[EngineRequest] = []
        self.loaded_loras: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.seconds_per_unit = seconds_per_unit  # time_scale / speed
        self._on_change = on_change
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="fleet-engine")

    async def stop(self) -> None:
        """Stop stepping and abort every sequence (their outboxes get None)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for seq in [*self.running, *self.waiting]:
            self.abort(seq)

    async def restart(self) -> None:
        """Lose all state but the counters, as a crashed and restarted server does."""
        await self.stop()
        self.pool = BlockPool(self.profile.num_blocks)
        self.loaded_loras.clear()
        self.start()

    def submit(self, seq: EngineRequest) -> None:
        self.waiting.append(seq)
        self._wake.set()
        self._on_change()

    def abort(self, seq: EngineRequest) -> None:
        """Drop `seq` wherever it is (client gone, server stopping); idempotent."""
        if seq.status is SeqStatus.FINISHED:
            return
        if seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self._finish(seq, "abort", time.monotonic())

    def lora_state(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(running adapters, waiting adapters), each distinct and in order of appearance."""
        running = dict.fromkeys(s.adapter for s in self.running if s.adapter)
        waiting = dict.fromkeys(s.adapter for s in self.waiting if s.adapter)
        return tuple(running), tuple(waiting)

    async def _run(self) -> None:
        # Steps are laid end to end on a deadline clock, so the event loop's late wake-ups do
        # not accumulate: at small time scales they would otherwise cost 10-20% of throughput.
        deadline = time.monotonic()
        while True:
            plan = self._schedule()
            if not plan.entries:
                self._wake.clear()
                await self._wake.wait()
                deadline = time.monotonic()
                continue
            seconds = self._step_seconds(plan)
            deadline = max(deadline, time.monotonic() - MAX_CATCH_UP_S) + seconds
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            self.counters.steps += 1
            self.counters.scheduled_seqs += len(plan.entries)
            self.counters.busy_s += seconds
            self.counters.held_request_s += (len(self.running) + len(self.waiting)) * seconds
            self._apply(plan, time.monotonic())
            self._on_change()

    def _step_seconds(self, plan: _Plan) -> float:
        p = self.profile
        units = (
            p.base_step_s
            + p.per_prefill_token_s * plan.prefill_tokens
            + p.per_seq_s * len(plan.entries)
            + p.lora_load_s * plan.lora_loads
        )
        return units * self.slow_factor * self.seconds_per_unit

    def _schedule(self) -> _Plan:
        plan = _Plan(budget=self.profile.max_num_batched_tokens)
        if not self._schedule_running(plan):
            self._schedule_waiting(plan)
        self.counters.max_running = max(self.counters.max_running, len(self.running))
        return plan

    def _schedule_running(self, plan: _Plan) -> bool:
        """Schedule running sequences; True if any had to be preempted."""
        preempted = False
        i = 0
        while i < len(self.running) and plan.budget > 0:
            seq = self.running[i]
            n = min(len(seq.tokens) - seq.num_computed, plan.budget)
            while not self._grow(seq, seq.num_computed + n):
                victim = self.running.pop()  # the most recently admitted
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    return preempted
            self._add_to_plan(plan, seq, n)
            i += 1
        return preempted

    def _schedule_waiting(self, plan: _Plan) -> None:
        active = {s.adapter for s in self.running if s.adapter}
        skipped: list[EngineRequest] = []
        while self.waiting and plan.budget > 0 and len(self.running) < self.profile.max_num_seqs:
            seq = self.waiting[0]
            if seq.adapter and seq.adapter not in active and len(active) >= self.max_loras:
                skipped.append(self.waiting.popleft())
                continue
            if not self._admit(seq, plan):
                break
            self.waiting.popleft()
            self.running.append(seq)
            if seq.adapter:
                active.add(seq.adapter)
                plan.lora_loads += self._load_lora(seq.adapter, active)
        self.waiting.extendleft(reversed(skipped))

    def _admit(self, seq: EngineRequest, plan: _Plan) -> bool:
        bs = self.profile.block_size
        # Like vLLM, the last prompt token is always computed, so a full hit stops one short.
        seq.hashes = chain_block_hashes(seq.tokens, bs, seq.model, seq.hashes)
        hits = self.pool.match_prefix(seq.hashes[: (len(seq.tokens) - 1) // bs])
        hit_tokens = len(hits) * bs
        n = min(len(seq.tokens) - hit_tokens, plan.budget)
        num_new = -(-(hit_tokens + n) // bs) - len(hits)
        if not self.pool.can_allocate(hits, num_new):
            return False
        seq.blocks = self.pool.acquire(hits, num_new)
        seq.num_computed = hit_tokens
        seq.num_registered = len(hits)
        seq.status = SeqStatus.RUNNING
        if seq.cached_prompt_tokens is None:
            seq.cached_prompt_tokens = hit_tokens
        self.counters.prefix_queries += len(seq.tokens)
        self.counters.prefix_hits += hit_tokens
        self._add_to_plan(plan, seq, n)
        return True

    def _load_lora(self, adapter: str, active: set[str]) -> int:
        """Make `adapter` resident in a GPU slot; 1 if that costs a load."""
        if adapter in self.loaded_loras:
            self.loaded_loras.move_to_end(adapter)
            return 0
        if len(self.loaded_loras) >= self.max_loras:
            idle = next(a for a in self.loaded_loras if a not in active)
            del self.loaded_loras[idle]
        self.loaded_loras[adapter] = None
        self.counters.lora_loads += 1
        return 1

    def _add_to_plan(self, plan: _Plan, seq: EngineRequest, n: int) -> None:
        plan.entries.append((seq, n))
        plan.budget -= n
        is_decode = n == 1 and seq.num_generated > 0 and seq.num_computed == len(seq.tokens) - 1
        if not is_decode:
            plan.prefill_tokens += n

    def _grow(self, seq: EngineRequest, num_tokens: int) -> bool:
        num_new = -(-num_tokens // self.profile.block_size) - len(seq.blocks)
        if num_new <= 0:
            return True
        if not self.pool.can_allocate((), num_new):
            return False
        seq.blocks.extend(self.pool.acquire((), num_new))
        return True

    def _preempt(self, seq: EngineRequest) -> None:
        """Free its KV and requeue it first; it recomputes prompt and output so far later."""
        self.pool.release(seq.blocks)
        seq.blocks = []
        seq.num_computed = 0
        seq.status = SeqStatus.WAITING
        self.waiting.appendleft(seq)
        self.counters.preemptions += 1

    def _apply(self, plan: _Plan, now: float) -> None:
        bs = self.profile.block_size
        for seq, n in plan.entries:
            if seq.status is not SeqStatus.RUNNING:  # aborted or preempted meanwhile
                continue
            seq.num_computed += n
            full = seq.num_computed // bs
            if full > seq.num_registered:
                if full > len(seq.hashes):
                    computed = seq.tokens[: full * bs]
                    seq.hashes = chain_block_hashes(computed, bs, seq.model, seq.hashes)
                for i in range(seq.num_registered, full):
                    self.pool.register(seq.blocks[i], seq.hashes[i])
                seq.num_registered = full
            if seq.num_computed == len(seq.tokens):
                self._sample(seq, now)

    def _sample(self, seq: EngineRequest, now: float) -> None:
        token = seq.planned[seq.num_generated]
        seq.tokens.append(token)
        self.counters.generation_tokens += 1
        if seq.first_token_at is None:
            seq.first_token_at = now
            self.counters.ttft.observe(now - seq.arrival)
            self.counters.prompt_tokens += seq.num_prompt_tokens
        seq.outbox.put_nowait(token)
        if seq.num_generated == len(seq.planned):
            self.running.remove(seq)
            self._finish(seq, "stop" if seq.stops_on_eos else "length", now)

    def _finish(self, seq: EngineRequest, reason: str, now: float) -> None:
        self.pool.release(seq.blocks)
        seq.blocks = []
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        self.counters.finished[reason] += 1
        if reason != "abort":
            self.counters.e2e.observe(now - seq.arrival)
        seq.outbox.put_nowait(None)
        self._on_change()
