"""The closed-loop run's load generator: open-loop Poisson arrivals along a rate profile.

`python -m loadtests.closedloop.loadgen SPEC.json`, one process per policy, so it never shares
an event loop with the fleet or the gateway. It is `loadtests.loadgen.Generator` (streaming
OpenAI requests, one `Record` each, `max_in_flight` and `request_timeout_s` bounds) with the
arrival times of `arrivals.arrival_times` instead of a constant rate; every request belongs
to the measured phase. Protocol on stdio as in `loadtests.loadgen`: it prints
`{"event": "ready"}`, waits for `go T0` (CLOCK_MONOTONIC), writes its records as JSON lines,
then prints `{"event": "done", ...}`.
"""

import dataclasses
import json
import random
from collections.abc import Sequence

import aiohttp

from ..childproc import run_child, serve_records
from ..loadgen import Generator, GeneratorSpec
from .arrivals import RateProfile, arrival_times


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProfileSpec:
    generator: GeneratorSpec  # qps is the mean rate; duration_s the profile's length
    profile: tuple[tuple[float, float], ...]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ProfileSpec":
        raw = json.loads(text)
        return cls(
            generator=GeneratorSpec(**raw["generator"]),
            profile=tuple((float(t), float(r)) for t, r in raw["profile"]),
        )


class ProfileGenerator(Generator):
    """Sends at the given arrival times; waits up to the drain for every request to finish."""

    def __init__(
        self,
        spec: GeneratorSpec,
        session: aiohttp.ClientSession,
        t0: float,
        arrivals: Sequence[float],
    ) -> None:
        super().__init__(spec, session, t0)
        self.arrivals = tuple(arrivals)

    async def run(self) -> None:
        s = self.spec
        content = random.Random(f"content/{s.seed}/{s.index}")
        for t in self.arrivals[: s.max_requests]:
            await self._until(t, None)
            self._dispatch(content, t, "measure")
        await self._finish(s.warmup_s + s.duration_s + s.drain_s)


async def generate(spec: ProfileSpec) -> None:
    g = spec.generator
    arrivals = arrival_times(RateProfile(points=spec.profile), g.seed)
    await serve_records(
        g.url, g.request_timeout_s, g.records_path,
        lambda session, t0: ProfileGenerator(g, session, t0, arrivals),
        ready={"arrivals": len(arrivals)}, done=lambda gen: {"errors": gen.tally.errors},
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return run_child(argv, "loadtests.closedloop.loadgen", ProfileSpec.from_json, generate)


if __name__ == "__main__":
    raise SystemExit(main())
