"""Fleet specifications: frozen dataclasses and the one parser from YAML-shaped dicts.

Decides what a replica is (model, engine, adapters, accelerator, engine profile) and rejects
impossible ones early. Never touches sockets or clocks: `Fleet` and `Replica` bring those.
"""

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any, Self

DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"

# Relative engine-step speed per accelerator (a100 = 1.0). Rough ratios of decode throughput for
# an 8B model; what matters for routing is that a pool can mix fast and slow replicas.
ACCELERATOR_SPEED: Mapping[str, float] = {
    "a100": 1.0,
    "a10g": 0.45,
    "h100": 1.8,
    "h200": 2.1,
    "l4": 0.4,
    "l40s": 0.9,
    "mi300x": 1.7,
    "tpu-v5e": 0.8,
}


class Engine(enum.StrEnum):
    """Which model server a replica imitates; selects `/metrics` names and `owned_by`."""

    VLLM = "vllm"
    SGLANG = "sglang"
    TGI = "tgi"
    TRITON = "triton"  # Triton Inference Server with the TensorRT-LLM backend
    TRTLLM = "trtllm-serve"
    LLAMACPP = "llamacpp"


class SpecError(ValueError):
    """A fleet spec is invalid; `issues` lists every problem with its path."""

    code = "fleet_spec_invalid"

    def __init__(self, issues: Sequence[str]) -> None:
        self.issues = tuple(issues)
        super().__init__("; ".join(self.issues))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EngineProfile:
    """Cost model and limits of one simulated engine, in a100-seconds (divided by speed).

    Step time = (base_step_s + per_prefill_token_s * prefill tokens in the step
    + per_seq_s * sequences in the step + lora_load_s * adapters loaded) / speed * time_scale.
    """

    base_step_s: float = 0.012
    per_prefill_token_s: float = 0.00008
    per_seq_s: float = 0.0004
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 4096  # chunked-prefill token budget per step
    block_size: int = 16
    num_blocks: int = 4096
    max_model_len: int = 8192
    lora_load_s: float = 0.05
    default_max_tokens: int = 128
    # Without ignore_eos a request stops ("stop") after a deterministic length drawn from
    # [min_output_fraction * max_tokens, max_tokens]; 1.0 makes every request run to max_tokens.
    min_output_fraction: float = 0.5
    embed_overhead_s: float = 0.008
    embed_per_token_s: float = 0.00002
    embedding_dim: int = 16

    def __post_init__(self) -> None:
        costs = (
            *("base_step_s", "per_prefill_token_s", "per_seq_s", "lora_load_s"),
            *("embed_overhead_s", "embed_per_token_s"),
        )
        issues = [f"{name} must be >= 0" for name in costs if getattr(self, name) < 0]
        issues += [
            f"{f.name} must be > 0"
            for f in dataclasses.fields(self)
            if f.name not in costs
            and f.name != "min_output_fraction"
            and getattr(self, f.name) <= 0
        ]
        if not 0.0 <= self.min_output_fraction <= 1.0:
            issues.append("min_output_fraction must be within [0, 1]")
        if self.num_blocks * self.block_size < self.max_model_len:
            issues.append("num_blocks * block_size must hold max_model_len tokens")
        if issues:
            raise SpecError(issues)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaSpec:
    """One simulated model server. `port` 0 binds an ephemeral port."""

    model: str = DEFAULT_MODEL
    engine: Engine = Engine.VLLM
    adapters: tuple[str, ...] = ()
    max_loras: int = 1
    accelerator: str = "a100"
    speed: float | None = None  # overrides ACCELERATOR_SPEED[accelerator]
    port: int = 0
    name: str | None = None  # default "replica-<index>"
    profile: EngineProfile = EngineProfile()

    def __post_init__(self) -> None:
        issues = []
        if self.accelerator not in ACCELERATOR_SPEED and self.speed is None:
            known = ", ".join(sorted(ACCELERATOR_SPEED))
            issues.append(f"accelerator {self.accelerator!r} unknown (known: {known})")
        if self.speed is not None and self.speed <= 0:
            issues.append("speed must be > 0")
        if self.max_loras < 1:
            issues.append("max_loras must be >= 1")
        if self.model in self.adapters or len(set(self.adapters)) != len(self.adapters):
            issues.append("adapter names must be unique and differ from the model")
        if not 0 <= self.port <= 65535:
            issues.append("port must be within [0, 65535]")
        if issues:
            raise SpecError(issues)

    @property
    def effective_speed(self) -> float:
        return self.speed if self.speed is not None else ACCELERATOR_SPEED[self.accelerator]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FleetSpec:
    """The whole fleet. `time_scale` multiplies every simulated duration (0.1 = 10x faster)."""

    replicas: tuple[ReplicaSpec, ...] = (ReplicaSpec(),)
    seed: int = 0
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise SpecError(["time_scale must be > 0"])

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Self:
        """Build a spec from a YAML-shaped dict; raises `SpecError` listing every issue.

        ```yaml
        seed: 0
        time_scale: 1.0
        replicas:
          - {model: meta-llama/Llama-3.1-8B-Instruct, engine: vllm, count: 2,
             adapters: [sql-lora, chat-lora], max_loras: 1, accelerator: h100,
             profile: {max_num_seqs: 16}}
        ```
        `count` repeats an entry. Unknown keys are errors.
        """
        issues: list[str] = []
        top = _check_keys(raw, {"replicas", "seed", "time_scale"}, "", issues)
        replicas: list[ReplicaSpec] = []
        entries = top.get("replicas", [{}])
        if not isinstance(entries, list):
            issues.append("replicas: must be a list")
            entries = []
        for i, entry in enumerate(entries):
            replicas.extend(_parse_replica(entry, f"replicas[{i}]", issues))
        kwargs = _scalars(top, {"seed": int, "time_scale": float}, "", issues)
        if not issues:
            try:
                return cls(replicas=tuple(replicas), **kwargs)
            except SpecError as exc:
                issues.extend(exc.issues)
        raise SpecError(issues)


_REPLICA_SCALARS: Mapping[str, type] = {
    "model": str,
    "engine": str,
    "max_loras": int,
    "accelerator": str,
    "speed": float,
    "port": int,
    "name": str,
}


def _parse_replica(raw: object, path: str, issues: list[str]) -> list[ReplicaSpec]:
    allowed = {*_REPLICA_SCALARS, "adapters", "count", "profile"}
    entry = _check_keys(raw, allowed, path, issues)
    kwargs: dict[str, Any] = _scalars(entry, _REPLICA_SCALARS, path, issues)
    if "engine" in kwargs:
        if kwargs["engine"] not in set(Engine):
            issues.append(f"{path}.engine: one of {', '.join(Engine)}")
            return []
        kwargs["engine"] = Engine(kwargs["engine"])
    adapters = entry.get("adapters", [])
    if not isinstance(adapters, list) or not all(isinstance(a, str) for a in adapters):
        issues.append(f"{path}.adapters: must be a list of strings")
        return []
    kwargs["adapters"] = tuple(adapters)
    count = _scalars(entry, {"count": int}, path, issues).get("count", 1)
    profile_fields = {f.name: f.type for f in dataclasses.fields(EngineProfile)}
    profile_raw = _check_keys(
        entry.get("profile", {}), set(profile_fields), f"{path}.profile", issues
    )
    profile_kwargs = _scalars(profile_raw, profile_fields, f"{path}.profile", issues)
    try:
        kwargs["profile"] = EngineProfile(**profile_kwargs)
        spec = ReplicaSpec(**kwargs)
    except SpecError as exc:
        issues.extend(f"{path}: {issue}" for issue in exc.issues)
        return []
    if count > 1 and spec.name is not None:
        issues.append(f"{path}.name: cannot be combined with count > 1")
    return [spec] * count


def _check_keys(raw: object, allowed: set[str], path: str, issues: list[str]) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        issues.append(f"{path or '<root>'}: must be a mapping")
        return {}
    issues.extend(f"{path}.{key}: unknown key".lstrip(".") for key in raw if key not in allowed)
    return {str(k): v for k, v in raw.items() if k in allowed}


def _scalars(
    raw: Mapping[str, Any], types: Mapping[str, Any], path: str, issues: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, want in types.items():
        if raw.get(key) is None:  # absent or null: the dataclass default applies
            continue
        value = raw[key]
        ok = isinstance(value, want) and not isinstance(value, bool)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if ok:
            out[key] = value
        else:
            issues.append(f"{path}.{key}: must be {want.__name__}".lstrip("."))
    return out
