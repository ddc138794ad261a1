"""Failure modes a replica can be switched into at run time, and their JSON spelling.

`POST /fleet/fault` on a replica takes the JSON form, `Replica.set_fault` the dataclass:

    {"mode": "crash"}                        stop listening, drop every connection, lose the
                                             queue and KV/prefix cache (counters survive)
    {"mode": "hang"}                         accept and read requests, never answer (every
                                             path but /fleet/*, including /health and /metrics)
    {"mode": "slow", "factor": 4}            every engine step takes `factor` times longer
    {"mode": "error_rate", "rate": 0.3, "statuses": [500, 503]}
                                             that fraction of /v1/* requests fail at once with
                                             an OpenAI-style error body; /health stays 200
    {"mode": "reset_midstream", "after_chunks": 3}
                                             streams are reset (TCP RST) after that many SSE
                                             chunks; non-streamed responses are reset unanswered
    {"mode": "none"}                         healthy again (a crashed replica listens again)

Any mode takes `"duration_s"`: after that many (wall-clock) seconds the replica heals by itself,
which is how a crashed replica is brought back without a Python handle.
"""

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any, Self


class FaultMode(enum.StrEnum):
    NONE = "none"
    CRASH = "crash"
    HANG = "hang"
    SLOW = "slow"
    ERROR_RATE = "error_rate"
    RESET_MIDSTREAM = "reset_midstream"


class FaultError(ValueError):
    code = "fleet_fault_invalid"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    mode: FaultMode = FaultMode.NONE
    factor: float = 1.0  # slow
    rate: float = 1.0  # error_rate: fraction of /v1/* requests that fail
    statuses: tuple[int, ...] = (500, 503)  # error_rate: drawn uniformly
    after_chunks: int = 1  # reset_midstream
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise FaultError("factor must be > 0")
        if not 0.0 <= self.rate <= 1.0:
            raise FaultError("rate must be within [0, 1]")
        if not self.statuses or not all(500 <= s <= 599 for s in self.statuses):
            raise FaultError("statuses must be a non-empty list of 5xx codes")
        if self.after_chunks < 0:
            raise FaultError("after_chunks must be >= 0")
        if self.duration_s is not None and self.duration_s <= 0:
            raise FaultError("duration_s must be > 0")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Self:
        """Parse the JSON form; raises FaultError naming the first problem."""
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise FaultError(f"unknown keys: {', '.join(sorted(unknown))}")
        try:
            mode = FaultMode(raw.get("mode", "none"))
            statuses = tuple(int(s) for s in raw.get("statuses", (500, 503)))
            duration = raw.get("duration_s")
            return cls(
                mode=mode,
                factor=float(raw.get("factor", 1.0)),
                rate=float(raw.get("rate", 1.0)),
                statuses=statuses,
                after_chunks=int(raw.get("after_chunks", 1)),
                duration_s=None if duration is None else float(duration),
            )
        except (TypeError, ValueError) as exc:
            raise FaultError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["mode"] = str(self.mode)
        data["statuses"] = list(self.statuses)
        return data
