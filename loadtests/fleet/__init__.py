"""A GPU-free simulated fleet of OpenAI-compatible model servers, for tests and load tests.

N replicas run in one asyncio process, each on its own port of 127.0.0.1, each with an engine
modelled closely enough that routing decisions matter as they do on real vLLM: continuous
batching with `max_num_seqs`, a paged KV cache that limits admission and preempts the newest
sequence when it runs out, a prefix cache of chained 16-token block hashes (a hit skips that
prefill), LoRA adapters limited to `max_loras` per batch, and per-accelerator speed.

    from loadtests.fleet import Engine, Fault, FaultMode, Fleet, FleetSpec, ReplicaSpec

    spec = FleetSpec(replicas=(ReplicaSpec(adapters=("sql-lora",), accelerator="h100"),
                               ReplicaSpec(engine=Engine.SGLANG)), seed=0, time_scale=0.1)
    async with Fleet(spec) as fleet:
        replica = fleet.replicas[0]
        replica.url                     # http://127.0.0.1:<port>
        await replica.set_fault(Fault(mode=FaultMode.SLOW, factor=3))
        await replica.wait_until(lambda s: s.waiting >= 4)   # no sleeps needed
        replica.stats, replica.requests  # ReplicaStats snapshot, RequestRecord log
        fleet.endpoint_slices_yaml({"app": "llama"})          # EndpointSlice dicts

Each replica serves `/v1/chat/completions` and `/v1/completions` (SSE framed like vLLM),
`/v1/embeddings`, `/v1/models`, `/health`, `/metrics` (names of its `engine`: vllm, sglang,
tgi, triton, trtllm-serve, llamacpp) and `/fleet/fault` (see `faults`). `FleetSpec.from_dict`
reads the YAML form; `cli.main` is `sluice fleet`.

Cost model (`EngineProfile`, a100 seconds, divided by the accelerator's speed and multiplied by
`time_scale`): step = 12 ms + 0.08 ms per prefill token + 0.4 ms per sequence in the step. So a
1,000-token prompt alone has a TTFT of about 92 ms, and a decode step is 12.4 ms for one
sequence and 25 ms for a full batch of 32.

Capacity of the default profile, 1,000-token prompts and 100-token outputs (unique prompts,
`ignore_eos`), measured with `python -m loadtests.fleet.capacity --duration 40` (closed loop,
64 concurrent clients in the same process, time_scale 1, 40 s after a 10 s warm-up):

    a100  6.4 req/s   (analytically 1 / (100 x 25.0 ms / 32 + 80 ms) = 6.35 req/s)
    h100 11.2 req/s   l4 2.4 req/s

A 4 x a100 fleet driven by a separate Python process (aiohttp, 192 streaming clients) served
24.8 req/s in aggregate while the fleet process used about 20% of one core, so a 2-core machine
can saturate it. Shorter prompts raise capacity (prefill is half the cost at 1,000 tokens);
KV (4,096 blocks = 65,536 tokens) starts to bind above about 2,000 tokens per sequence.
"""

from .faults import Fault, FaultError, FaultMode
from .fleet import ENGINE_TYPE_LABEL, Fleet
from .replica import Replica, ReplicaStats, RequestRecord
from .spec import (
    ACCELERATOR_SPEED,
    DEFAULT_MODEL,
    Engine,
    EngineProfile,
    FleetSpec,
    ReplicaSpec,
    SpecError,
)
from .tokens import embedding_vector, render_chat, tokenize

__all__ = [
    "ACCELERATOR_SPEED",
    "DEFAULT_MODEL",
    "ENGINE_TYPE_LABEL",
    "Engine",
    "EngineProfile",
    "Fault",
    "FaultError",
    "FaultMode",
    "Fleet",
    "FleetSpec",
    "Replica",
    "ReplicaSpec",
    "ReplicaStats",
    "RequestRecord",
    "SpecError",
    "embedding_vector",
    "render_chat",
    "tokenize",
]
