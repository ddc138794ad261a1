"""Live progress of a load-test run: one updating line on a terminal, a line every few seconds
otherwise (CI logs). Shows the trial, its phase, elapsed time and ETA for the whole run, sent
and finished requests, the recent completion rate, errors and the generator's lag."""

import dataclasses
import time
from typing import TextIO

NON_TTY_EVERY_S = 5.0
RATE_WINDOW_S = 5.0  # completions per second over the last few seconds
DEFAULT_OVERHEAD_S = 4.0  # start-up and tear-down per trial, until one has been measured


@dataclasses.dataclass(slots=True)
class GeneratorState:
    sent: int = 0
    done: int = 0
    errors: int = 0
    in_flight: int = 0
    max_lag_ms: float = 0.0


class Progress:
    def __init__(self, stream: TextIO, *, trials: int, trial_s: float) -> None:
        self.stream = stream
        self.is_tty = stream.isatty()
        self.trials, self.trial_s = trials, trial_s
        self.started = time.monotonic()
        self.overheads: list[float] = []
        self.label = ""
        self.index = 0
        self.trial_started = self.started
        self.t0: float | None = None
        self.warmup_s = 0.0
        self.generators: list[GeneratorState] = []
        self._rates: list[tuple[float, int]] = []
        self._last_line = 0.0

    def start_trial(self, index: int, label: str, warmup_s: float, generators: int) -> None:
        self.index, self.label, self.warmup_s = index, label, warmup_s
        self.trial_started, self.t0 = time.monotonic(), None
        self.generators = [GeneratorState() for _ in range(generators)]
        self._rates = []
        self._print(f"[{index + 1}/{self.trials}] {label}: starting fleet, target, generators")

    def go(self, t0: float) -> None:
        self.t0 = t0

    def end_trial(self, summary: str) -> None:
        elapsed = time.monotonic() - self.trial_started
        self.overheads.append(max(0.0, elapsed - self.trial_s))
        self._print(f"[{self.index + 1}/{self.trials}] {self.label}: {summary}")

    def render(self) -> None:
        now = time.monotonic()
        done = sum(s.done for s in self.generators)
        self._rates = [(t, n) for t, n in self._rates if now - t <= RATE_WINDOW_S]
        self._rates.append((now, done))
        if not self.is_tty and now - self._last_line < NON_TTY_EVERY_S:
            return
        self._last_line = now
        line = self._line(now)
        if self.is_tty:
            self.stream.write(f"\r{line}\x1b[K")
            self.stream.flush()
        else:
            self._print(line)

    def finish(self, text: str) -> None:
        self._print(text)

    def _line(self, now: float) -> str:
        g = self.generators
        sent, done = sum(s.sent for s in g), sum(s.done for s in g)
        errors, lag = sum(s.errors for s in g), max((s.max_lag_ms for s in g), default=0.0)
        rate = self._rate(now, done)
        return (
            f"[{self.index + 1}/{self.trials}] {self.label} | {self._phase(now)} | sent {sent} "
            f"done {done} | {rate:5.1f} req/s | errors {errors} | lag max {lag:.0f} ms"
            f" | elapsed {_clock(now - self.started)} ETA {_clock(self._eta(now))}"
        )

    def _rate(self, now: float, done: int) -> float:
        t_old, n_old = self._rates[0]
        if now - t_old >= RATE_WINDOW_S / 2:
            return (done - n_old) / (now - t_old)
        if self.t0 is not None and now > self.t0 + 1.0:  # early on: the average since T0
            return done / (now - self.t0)
        return 0.0

    def _phase(self, now: float) -> str:
        """The phase and the time spent in it."""
        if self.t0 is None:
            return "starting"
        at = now - self.t0
        if at < self.warmup_s:
            return f"warmup {at:4.1f}/{self.warmup_s:g}s"
        if at < self.trial_s:
            return f"measure {at - self.warmup_s:4.1f}/{self.trial_s - self.warmup_s:g}s"
        return f"drain {at - self.trial_s:4.1f}s"

    def _eta(self, now: float) -> float:
        overhead = (
            sum(self.overheads) / len(self.overheads) if self.overheads else DEFAULT_OVERHEAD_S
        )
        per_trial = self.trial_s + overhead
        in_trial = now - self.trial_started
        return max(0.0, per_trial - in_trial) + (self.trials - self.index - 1) * per_trial

    def _print(self, text: str) -> None:
        prefix = "\r\x1b[K" if self.is_tty else ""
        self.stream.write(f"{prefix}{text}\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"
