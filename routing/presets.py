"""Model-server presets: which metrics mean queue, running, KV use, LoRA state and cache
config for each engine, and the health path. Built-ins ship as YAML in ``config/presets``;
users add or override them with ``ModelServerPreset`` documents (``sluice.dev/v1alpha1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from routing.promtext import (
    Sample,
    Selector,
    find_rests,
    find_samples,
    find_values,
    parse_rest,
    rest_value,
)

__all__ = ["LoraSpec", "MetricsReader", "Preset", "ServerMetrics"]


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


class ServerMetrics(NamedTuple):
    """One scrape's signals. A NamedTuple, not a frozen dataclass: one is built per scrape
    (2,000 a second for 100 endpoints every 50 ms)."""

    waiting: float | None = None
    running: float | None = None
    kv_usage: float | None = None
    lora_running: frozenset[str] = frozenset()
    lora_waiting: frozenset[str] = frozenset()
    max_lora: int | None = None
    block_size: int | None = None
    num_blocks: int | None = None


_new_tuple = tuple.__new__  # builds ServerMetrics positionally: its field order is checked
_NO_NAMES: frozenset[str] = frozenset()
_NO_LORA: tuple[frozenset[str], frozenset[str], int | None] = (_NO_NAMES, _NO_NAMES, None)
if ServerMetrics._fields != ("waiting", "running", "kv_usage", "lora_running", "lora_waiting",
                             "max_lora", "block_size", "num_blocks"):  # fmt: skip
    raise ImportError("ServerMetrics fields changed: MetricsReader.read builds them in order")
RECHECK_EVERY = 100  # pages between reads of the static or absent series


class MetricsReader:
    """Reads one server's successive /metrics pages with its preset, cheaply.

    What is static for a server process is not searched for on every page: the cache config
    is read again every ``recheck_every`` pages (to notice a restart), and so is a LoRA
    series the server does not export at all (a vLLM started without LoRA), which would
    otherwise cost a scan of the whole page each time. The LoRA series keeps one sample per
    adapter combination ever seen, newest by value; only that one's labels are parsed, and
    not again while it is unchanged. Pure: bytes in, values out, a page counter for state."""

    __slots__ = (
        "_cache_info", "_kv", "_lora", "_lora_absent", "_lora_line", "_pages", "_preset",
        "_queue", "_recheck", "_running",
    )  # fmt: skip

    def __init__(self, preset: Preset, recheck_every: int = RECHECK_EVERY) -> None:
        self._preset = preset
        self._recheck = max(1, recheck_every)
        self._pages = 0
        self._queue = _plain(preset.queue)
        self._running = _plain(preset.running)
        self._kv = _plain(preset.kv_usage)
        self._cache_info: tuple[int | None, int | None] = (None, None)
        self._lora = _NO_LORA
        self._lora_line = b""
        self._lora_absent = False

    def read(self, text: bytes, at: int = 0) -> ServerMetrics:
        """The preset's signals in one page (from ``at`` in ``text``: the scraper passes
        the whole response, head included, and where the body starts, to save a copy). A
        series the page lacks is None."""
        preset = self._preset
        recheck = self._pages % self._recheck == 0
        self._pages += 1
        if preset.cache_info is not None and recheck:
            self._cache_info = _cache_info(text, preset.cache_info, at)
        lora = _NO_LORA
        if preset.lora is not None and (recheck or not self._lora_absent):
            lora = self._read_lora(text, preset.lora, at)
        queue = _values(text, at, preset.queue, self._queue)
        running = _values(text, at, preset.running, self._running)
        kv_values = _values(text, at, preset.kv_usage, self._kv)
        kv = None if not kv_values else min(1.0, max(0.0, max(kv_values) * preset.kv_scale))
        # ServerMetrics's fields in order, without its Python __new__ (one per scrape)
        return _new_tuple(
            ServerMetrics,
            (
                sum(queue) if queue else None,
                sum(running) if running else None,
                kv,
                *lora,
                *self._cache_info,
            ),
        )

    def _read_lora(
        self, text: bytes, spec: LoraSpec, at: int
    ) -> tuple[frozenset[str], frozenset[str], int | None]:
        name = spec.selector.name.encode()
        # absent only if not declared either: vLLM declares the series at start but writes
        # its first sample after the first engine step
        if spec.selector.labels:  # a label filter: the general (slower) path
            samples = find_samples(text, spec.selector, at=at)
            self._lora_absent = not samples and text.find(b"# TYPE " + name + b" ", at) < 0
            return _lora(samples, spec)
        rests = find_rests(text, name, at)
        if not rests:
            self._lora_absent = text.find(b"# TYPE " + name + b" ", at) < 0
            return _NO_LORA
        self._lora_absent = False
        # the value is the last-update timestamp: the newest sample, labels unparsed
        latest = rests[0] if len(rests) == 1 else max(rests, key=_timestamp)
        if latest != self._lora_line:
            sample = parse_rest(latest)
            self._lora = _lora([sample] if sample is not None else [], spec)
            self._lora_line = latest
        return self._lora


def _plain(selector: Selector | None) -> bytes | None:
    """The encoded name, when the selector needs no label filter (the fast path)."""
    return selector.name.encode() if selector is not None and not selector.labels else None


def _values(text: bytes, at: int, selector: Selector | None, plain: bytes | None) -> list[float]:
    if plain is not None:
        return find_values(text, plain, at)
    if selector is None:
        return []
    return [s.value for s in find_samples(text, selector, keep_labels=False, at=at)]


def _timestamp(rest: bytes) -> float:
    value = rest_value(rest)
    return float("-inf") if value is None else value


def _lora(
    samples: list[Sample], spec: LoraSpec
) -> tuple[frozenset[str], frozenset[str], int | None]:
    if not samples:
        return _NO_LORA
    latest = max(samples, key=lambda s: s.value)  # the value is the last-update timestamp
    labels = dict(latest.labels)

    def names(label: str) -> frozenset[str]:
        return frozenset(n.strip() for n in labels.get(label, "").split(",") if n.strip())

    try:
        max_lora = int(float(labels[spec.max_label])) if spec.max_label in labels else None
    except (ValueError, OverflowError):
        max_lora = None
    return names(spec.running_label), names(spec.waiting_label), max_lora


def _cache_info(text: bytes, spec: CacheInfoSpec, at: int) -> tuple[int | None, int | None]:
    samples = find_samples(text, spec.selector, at=at)
    if not samples:
        return None, None
    labels = dict(samples[0].labels)

    def number(label: str) -> int | None:
        try:
            return int(float(labels[label])) if label in labels else None
        except (ValueError, OverflowError):
            return None

    return number(spec.block_size_label), number(spec.num_blocks_label)
