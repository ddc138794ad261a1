"""Request bodies and headers for a `Workload`, drawn from a seeded RNG.

Shared by the load generator (`loadgen`) and the locustfile, so both send the same shapes. The
same seed yields the same sequence of requests, so every compared policy sees identical traffic.
Pure: no I/O, no clock. A "token" is one short word, as the simulated fleet tokenises it
(`loadtests.fleet.tokens`: a run of up to 8 word characters).
"""

import dataclasses
import itertools
import json
import random
from collections.abc import Sequence
from typing import Any

from .scenario import Api, PromptShape, Weighted, Workload

OBJECTIVE_HEADER = "x-gateway-inference-objective"
FAIRNESS_HEADER = "x-gateway-inference-fairness-id"
PATHS = {Api.CHAT: "/v1/chat/completions", Api.COMPLETIONS: "/v1/completions"}

# Words of at most 8 letters: one simulated token each.
# fmt: off
_WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "amber", "basil", "cedar", "dune",
    "ember", "fjord", "grove", "harbor", "iris", "jade", "kelp", "lotus", "maple", "nectar",
    "olive", "pearl", "quartz", "raven", "sage", "thyme", "umber", "violet", "willow", "yarrow",
    "zephyr",
)
# fmt: on


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PlannedRequest:
    path: str
    body: bytes  # JSON, encoded once
    headers: dict[str, str]
    model: str
    group: int | None  # the shared-prefix group, if any


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choices(_WORDS, k=count))


class RequestFactory:
    """`next(rng)` draws one request; system prompts are built once per group."""

    def __init__(self, workload: Workload, *, default_model: str, seed: int = 0) -> None:
        self.workload = workload
        self.models = workload.models or (Weighted(name=default_model),)
        self._prompts = [
            words(random.Random(f"system/{seed}/{g}"), workload.system_prompt_tokens)
            for g in range(workload.groups if workload.kind is PromptShape.SHARED_PREFIX else 0)
        ]
        self._ids = itertools.count()

    def next(self, rng: random.Random) -> PlannedRequest:
        w = self.workload
        model = _pick(rng, self.models)
        group: int | None = None
        if w.kind is PromptShape.SHARED_PREFIX:
            group = rng.randrange(w.groups)
            system, user = self._prompts[group], words(rng, w.question_tokens)
        else:
            # A unique first word: the prompt shares no cache block with any other.
            system, user = (
                "",
                f"q{next(self._ids)}x{rng.randrange(1 << 30):x} " + words(rng, w.prompt_tokens - 1),
            )
        headers = {"Content-Type": "application/json"}
        stream = w.stream
        if w.objectives:
            objective = _choose(rng, w.objectives)
            headers[OBJECTIVE_HEADER] = objective.name
            if objective.stream is not None:
                stream = objective.stream
        body = _body(w, model, system, user, stream)
        if w.tenants:
            headers[FAIRNESS_HEADER] = f"tenant-{rng.randrange(w.tenants)}"
        return PlannedRequest(
            path=PATHS[w.api],
            body=json.dumps(body, separators=(",", ":")).encode(),
            headers=headers,
            model=model,
            group=group,
        )


def _body(w: Workload, model: str, system: str, user: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": w.max_tokens}
    if w.api is Api.CHAT:
        messages = [{"role": "system", "content": system}] if system else []
        body["messages"] = [*messages, {"role": "user", "content": user}]
    else:
        body["prompt"] = f"{system}\n{user}" if system else user
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if w.ignore_eos:
        body["ignore_eos"] = True
    return body


def _pick(rng: random.Random, choices: Sequence[Weighted]) -> str:
    return _choose(rng, choices).name


def _choose(rng: random.Random, choices: Sequence[Weighted]) -> Weighted:
    if len(choices) == 1:
        return choices[0]
    return rng.choices(choices, weights=[c.weight for c in choices])[0]


class StreamTally:
    """Reads an OpenAI SSE stream incrementally (any chunking): counts frames that carry text
    (a chat's role-only first frame does not), keeps `usage.completion_tokens`, sees `[DONE]`
    and in-stream errors. Raises ValueError on a frame that is not JSON."""

    def __init__(self) -> None:
        self._buffer = b""
        self.text_frames = 0
        self.usage_tokens: int | None = None
        self.done = False
        self.error: str | None = None

    @property
    def tokens(self) -> int:
        return self.usage_tokens if self.usage_tokens is not None else self.text_frames

    def feed(self, chunk: bytes) -> int:
        """Consume bytes; the number of text frames completed by them."""
        self._buffer += chunk
        found = 0
        while not self.done and (end := self._buffer.find(b"\n\n")) >= 0:
            frame, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            data = frame.removeprefix(b"data: ")
            if data == b"[DONE]":
                self.done = True
                break
            event = json.loads(data)
            if "error" in event:
                self.error, self.done = f"in-stream error: {event['error']}", True
                break
            if event.get("usage"):
                self.usage_tokens = int(event["usage"].get("completion_tokens", 0))
            if _has_text(event):
                self.text_frames += 1
                found += 1
        return found


def _has_text(event: dict[str, Any]) -> bool:
    for choice in event.get("choices") or ():
        if choice.get("text") or (choice.get("delta") or {}).get("content"):
            return True
    return False
