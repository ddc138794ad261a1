"""How long a request's prefill will take, for requests whose first token a gateway cannot see.

Decides: an estimate of a request's time to first token from its prompt length, learned from
the streamed requests whose first token the gateway does see. Must never: read a clock, keep
per-request state, or guess before it has seen enough (no estimate is better than a made-up
one: a non-streamed request without an estimate is simply not paced).

A non-streamed answer arrives whole, so prefill pacing (``maxPrefillPerEndpoint``) cannot
know when such a request's prefill ended. Without an estimate those requests bypass the pacing
entirely, and a batch of long non-streamed prompts floods the servers' prefill exactly when
pacing matters: critical streamed requests then wait behind them. With one, a non-streamed
request holds its prefill slot for its estimated prefill time (or until its answer, if that
comes first).

The estimate is a ratio of exponentially weighted sums, Σ time-to-first-token / Σ prompt
tokens over roughly the last ``window`` streamed requests, times the request's prompt tokens:
long prompts weigh as much as their prefill costs, and a server's fixed per-request overhead is
spread over the tokens instead of inflating short prompts' share. The time to first token
includes any wait inside the server, so the estimate errs long when servers queue (pacing then
holds slots a little longer than needed, never shorter than the work).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MARGIN", "MAX_TTFT_S", "PrefillEstimator"]

# The estimate is this many times the learned mean: a slot held a little too long costs a
# little prefill throughput, one freed too early lets prefills pile up at the server, which
# pacing exists to prevent (measured in tests/component/test_shaping.py: at 1.0× a burst still
# had three prefills at once on a replica limited to one, at 1.5× at most two).
MARGIN = 1.5
MAX_TTFT_S = 3600.0  # a first token later than this says nothing about prefill


@dataclass(slots=True)
class PrefillEstimator:
    """Prefill time per prompt token (of a pool, or of one endpoint), from streamed requests'
    first tokens."""

    window: int = 64  # streamed requests an observation keeps weight over (1 - 1/window decay)
    min_samples: int = 8  # no estimate before this many observations
    samples: int = 0
    _ttft_s: float = 0.0  # exponentially weighted sums
    _tokens: float = 0.0

    def observe(self, prompt_tokens: int, ttft_s: float) -> None:
        """A streamed request of ``prompt_tokens`` had its first token ``ttft_s`` after it was
        sent. Nonsense (no prompt, a negative or NaN time, one past ``MAX_TTFT_S``) is
        ignored."""
        if prompt_tokens <= 0 or not (0.0 <= ttft_s <= MAX_TTFT_S):
            return
        keep = 1.0 - 1.0 / max(1, self.window)
        self._ttft_s = self._ttft_s * keep + ttft_s
        self._tokens = self._tokens * keep + prompt_tokens
        self.samples += 1

    def estimate(self, prompt_tokens: int) -> float | None:
        """Seconds to the first token for a prompt of ``prompt_tokens``; None until
        ``min_samples`` streamed requests have been observed."""
        if self.samples < self.min_samples or self._tokens <= 0.0:
            return None
        return MARGIN * self._ttft_s / self._tokens * max(1, prompt_tokens)
