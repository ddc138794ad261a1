"""Watch an OpenAI response as it streams by: time to first token, time per output token,
end-to-end time and token counts, without holding the stream back.

SSE responses are read event by event (the usage chunk of ``stream_options.include_usage``
gives exact counts; otherwise each content event counts as one token, as vLLM emits them).
JSON responses are kept (up to 1 MiB) to read their ``usage``. Recorded on finish into the
Inference Extension's ``inference_objective_*`` metrics and Sluice's per-variant histograms.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

from gateway.metrics import Metrics
from routing.rollout import Rollout

__all__ = ["StreamTap", "Usage", "bounded"]

MAX_JSON_BYTES = 1024 * 1024


@dataclass(slots=True)
class Usage:
    ttft_s: float | None = None
    e2e_s: float = 0.0
    prompt_tokens: int | None = None
    output_tokens: int = 0

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


MAX_MODEL_LABELS = 200
CLIENT_GONE = 499  # nginx's code: the client closed the connection; not the variant's fault


def bounded(metrics: Metrics, model: str) -> str:
    """The model as a label value: the first MAX_MODEL_LABELS distinct names are kept, any
    further one is "other" (clients choose the ``model`` field; label sets must stay bounded).
    A name that is not valid Unicode text (a lone surrogate, from a JSON escape or a header's
    undecodable bytes) is kept with U+FFFD in their place: /metrics must stay encodable."""
    seen = metrics.model_labels
    if model in seen:
        return model
    if not model.isascii():
        model = model.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        if model in seen:
            return model
    if len(seen) < MAX_MODEL_LABELS:
        seen.add(model)
        return model
    return "other"


class StreamTap:
    """Fed every response chunk; ``finish`` records the metrics once."""

    __slots__ = (
        "_body",
        "_buffer",
        "_done",
        "_events",
        "_on_first",
        "_sse",
        "_started",
        "labels",
        "metrics",
        "rollout",
        "usage",
    )

    def __init__(
        self,
        metrics: Metrics,
        *,
        model: str,
        target: str,
        variant: str,
        rollout: Rollout | None = None,
        # called with whether the answer is an event stream (its first chunk is a token)
        on_first_chunk: Callable[[bool], None] | None = None,
    ) -> None:
        self.metrics = metrics
        self._on_first = on_first_chunk
        self.rollout = rollout
        self.labels = (bounded(metrics, model), bounded(metrics, target), variant)
        self._done = False
        self.usage = Usage()
        self._started = asyncio.get_running_loop().time()
        self._sse: bool | None = None
        self._buffer = b""
        self._body: list[bytes] = []
        self._events = 0

    def on_headers(self, content_type: str) -> None:
        self._sse = content_type.startswith("text/event-stream")

    def on_chunk(self, chunk: bytes) -> None:
        if self.usage.ttft_s is None:
            self.usage.ttft_s = asyncio.get_running_loop().time() - self._started
            if self._on_first is not None:
                self._on_first(bool(self._sse))
        if self._sse:
            self._buffer += chunk
            *events, self._buffer = self._buffer.split(b"\n\n")
            for event in events:
                self._on_event(event)
        elif sum(len(b) for b in self._body) < MAX_JSON_BYTES:
            self._body.append(chunk)

    def _on_event(self, event: bytes) -> None:
        data = event.partition(b"data:")[2].strip()
        if not data or data == b"[DONE]":
            return
        if b'"usage"' in data:
            try:
                usage = json.loads(data).get("usage") or {}
            except (ValueError, RecursionError):
                usage = {}
            if usage:
                self.usage.prompt_tokens = usage.get("prompt_tokens")
                self.usage.output_tokens = int(usage.get("completion_tokens") or 0)
                self._events = -1  # exact counts from now on
                return
        if self._events >= 0:
            self._events += 1
            self.usage.output_tokens = self._events

    def finish(self, status: int) -> None:
        if self._done:
            return
        self._done = True
        usage = self.usage
        usage.e2e_s = asyncio.get_running_loop().time() - self._started
        if not self._sse and self._body:
            try:
                counts = json.loads(b"".join(self._body)).get("usage") or {}
                usage.prompt_tokens = counts.get("prompt_tokens")
                usage.output_tokens = int(counts.get("completion_tokens") or 0)
            except (ValueError, AttributeError, RecursionError):
                pass
        if not self._sse:
            usage.ttft_s = None  # a non-streamed answer has no first-token time
        model, target, variant = self.labels
        if self.rollout is not None and status != CLIENT_GONE:
            ok = status < 500
            self.rollout.observe(
                asyncio.get_running_loop().time(),
                variant,
                ok,
                usage.ttft_s if ok else None,
                usage.tpot_s if ok else None,
            )
        m = self.metrics
        m.objective_requests.labels(model, target).inc()
        if status >= 400:
            m.objective_errors.labels(model, target, str(status)).inc()
            return
        m.objective_duration.labels(model, target).observe(usage.e2e_s)
        if usage.prompt_tokens is not None:
            m.objective_input_tokens.labels(model, target).observe(usage.prompt_tokens)
        m.objective_output_tokens.labels(model, target).observe(usage.output_tokens)
        m.e2e.labels(target, variant).observe(usage.e2e_s)
        if usage.ttft_s is not None:
            m.ttft.labels(target, variant).observe(usage.ttft_s)
        if usage.tpot_s is not None:
            m.tpot.labels(target, variant).observe(usage.tpot_s)
