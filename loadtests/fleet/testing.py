"""What a test needs to read the fleet's answers strictly: SSE bodies, /metrics, stats waits.

For component tests of the fleet and of the gateway in front of it. Parsing is strict on
purpose: a frame that is not `data: ...` or a malformed exposition fails the test.
"""

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .replica import Replica, ReplicaStats

DEFAULT_WAIT_S = 5.0

Samples = Mapping[str, list[tuple[dict[str, str], float]]]


def parse_sse(raw: bytes) -> list[Any]:
    """The events of a complete SSE body: decoded JSON objects, and "[DONE]" as a string."""
    if not raw.endswith(b"\n\n"):
        raise AssertionError(f"SSE body does not end with a blank line: {raw[-40:]!r}")
    events: list[Any] = []
    for frame in raw[:-2].split(b"\n\n"):
        if not frame.startswith(b"data: "):
            raise AssertionError(f"not an SSE data frame: {frame!r}")
        data = frame.removeprefix(b"data: ")
        events.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return events


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by sample name (`_bucket` etc. included)."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def sample_value(samples: Samples, name: str) -> float:
    """The value of a metric that has exactly one sample."""
    ((_, value),) = samples[name]
    return value


async def wait_for(
    replica: Replica, predicate: Callable[[ReplicaStats], bool], timeout_s: float = DEFAULT_WAIT_S
) -> ReplicaStats:
    """`replica.wait_until(predicate)` that fails by name (TimeoutError) instead of hanging."""
    async with asyncio.timeout(timeout_s):
        return await replica.wait_until(predicate)
