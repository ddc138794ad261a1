"""Model-server presets: which metrics mean queue, running, KV use, LoRA state and cache
config for each engine, and the health path. Built-ins ship as YAML in ``config/presets``;
users add or override them with ``ModelServerPreset`` documents (``sluice.dev/v1alpha1``).
"""

from __future__ import annotations

from dataclasses import dataclass

from routing.promtext import Selector, find_samples

__all__ = ["LoraSpec", "Preset", "ServerMetrics", "read_metrics"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LoraSpec:
    selector: Selector
    running_label: str = "running_lora_adapters"
    waiting_label: str = "waiting_lora_adapters"
    max_label: str = "max_lora"


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheInfoSpec:
    selector: Selector
    block_size_label: str = "block_size"
    num_blocks_label: str = "num_gpu_blocks"


@dataclass(frozen=True, slots=True, kw_only=True)
class Preset:
    name: str
    queue: Selector | None = None
    running: Selector | None = None
    kv_usage: Selector | None = None
    kv_scale: float = 1.0  # multiply to get a 0..1 fraction (0.01 for a percentage)
    lora: LoraSpec | None = None
    cache_info: CacheInfoSpec | None = None
    metrics_path: str = "/metrics"
    health_path: str = "/health"
    models_path: str = "/v1/models"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerMetrics:
    waiting: float | None = None
    running: float | None = None
    kv_usage: float | None = None
    lora_running: frozenset[str] = frozenset()
    lora_waiting: frozenset[str] = frozenset()
    max_lora: int | None = None
    block_size: int | None = None
    num_blocks: int | None = None


def read_metrics(
    text: bytes, preset: Preset, *, cache_info: tuple[int | None, int | None] | None = None
) -> ServerMetrics:
    """The signals of ``preset`` in one /metrics body. A series the body lacks is None.
    ``cache_info``: (block size, block count) already known for this server (its static
    cache config), so that series is not looked up again."""
    lora_running: frozenset[str] = frozenset()
    lora_waiting: frozenset[str] = frozenset()
    max_lora = None
    if preset.lora is not None:
        lora_running, lora_waiting, max_lora = _lora(text, preset.lora)
    block_size = num_blocks = None
    if cache_info is not None:
        block_size, num_blocks = cache_info
    elif preset.cache_info is not None:
        block_size, num_blocks = _cache_info(text, preset.cache_info)
    kv = _max(text, preset.kv_usage)
    return ServerMetrics(
        waiting=_sum(text, preset.queue),
        running=_sum(text, preset.running),
        kv_usage=None if kv is None else min(1.0, max(0.0, kv * preset.kv_scale)),
        lora_running=lora_running,
        lora_waiting=lora_waiting,
        max_lora=max_lora,
        block_size=block_size,
        num_blocks=num_blocks,
    )


def _sum(text: bytes, selector: Selector | None) -> float | None:
    if selector is None:
        return None
    samples = find_samples(text, selector, keep_labels=False)
    return sum(s.value for s in samples) if samples else None


def _max(text: bytes, selector: Selector | None) -> float | None:
    if selector is None:
        return None
    samples = find_samples(text, selector, keep_labels=False)
    return max(s.value for s in samples) if samples else None


def _lora(text: bytes, spec: LoraSpec) -> tuple[frozenset[str], frozenset[str], int | None]:
    samples = find_samples(text, spec.selector)
    if not samples:
        return frozenset(), frozenset(), None
    latest = max(samples, key=lambda s: s.value)  # the value is the last-update timestamp
    labels = dict(latest.labels)

    def names(label: str) -> frozenset[str]:
        return frozenset(n.strip() for n in labels.get(label, "").split(",") if n.strip())

    try:
        max_lora = int(float(labels[spec.max_label])) if spec.max_label in labels else None
    except ValueError:
        max_lora = None
    return names(spec.running_label), names(spec.waiting_label), max_lora


def _cache_info(text: bytes, spec: CacheInfoSpec) -> tuple[int | None, int | None]:
    samples = find_samples(text, spec.selector)
    if not samples:
        return None, None
    labels = dict(samples[0].labels)

    def number(label: str) -> int | None:
        try:
            return int(float(labels[label])) if label in labels else None
        except ValueError:
            return None

    return number(spec.block_size_label), number(spec.num_blocks_label)
