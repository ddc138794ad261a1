"""Reading a model server's successive /metrics pages with its preset (MetricsReader):
the signals, the LoRA state from the newest sample, and what is only looked at now and then."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routing.presets import CacheInfoSpec, LoraSpec, MetricsReader, Preset, ServerMetrics
from routing.promtext import Selector

PRESET = Preset(
    name="vllm",
    queue=Selector(name="vllm:num_requests_waiting"),
    running=Selector(name="vllm:num_requests_running"),
    kv_usage=Selector(name="vllm:kv_cache_usage_perc"),
    lora=LoraSpec(selector=Selector(name="vllm:lora_requests_info")),
    cache_info=CacheInfoSpec(selector=Selector(name="vllm:cache_config_info")),
)


def page(waiting: float = 2.0, lora: str = "", cache: bool = True) -> bytes:
    lines = [
        "# TYPE vllm:num_requests_running gauge",
        'vllm:num_requests_running{model_name="m",engine="0"} 5.0',
        'vllm:num_requests_running{model_name="m",engine="1"} 1.0',
        f'vllm:num_requests_waiting{{model_name="m"}} {waiting}',
        'vllm:kv_cache_usage_perc{model_name="m"} 0.4',
    ]
    if cache:
        lines.append('vllm:cache_config_info{block_size="16",num_gpu_blocks="4096"} 1.0')
    lines.append(lora)
    return ("\n".join(lines) + "\n").encode()


LORA = (
    'vllm:lora_requests_info{max_lora="2",running_lora_adapters="a",waiting_lora_adapters=""}'
    " 1700000001.0\n"
    'vllm:lora_requests_info{max_lora="2",running_lora_adapters="a,b",waiting_lora_adapters="c"}'
    " 1700000009.0\n"
    'vllm:lora_requests_info{max_lora="2",running_lora_adapters="",waiting_lora_adapters=""}'
    " 1700000005.0"
)


def test_signals_sum_over_engines_and_lora_comes_from_the_newest_sample():
    metrics = MetricsReader(PRESET).read(page(lora=LORA))
    assert metrics == ServerMetrics(
        waiting=2.0, running=6.0, kv_usage=0.4,
        lora_running=frozenset({"a", "b"}), lora_waiting=frozenset({"c"}), max_lora=2,
        block_size=16, num_blocks=4096,
    )  # fmt: skip


def test_a_body_after_an_http_head_is_read_in_place():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"
    body = page(lora=LORA)
    assert MetricsReader(PRESET).read(head + body, len(head)) == MetricsReader(PRESET).read(body)


def test_an_absent_lora_series_and_the_cache_config_are_looked_for_only_now_and_then():
    reader = MetricsReader(PRESET, recheck_every=3)
    assert reader.read(page()).lora_running == frozenset()  # page 0: looked for, absent
    # pages 1 and 2: not looked for, so a LoRA series appearing is not seen yet …
    assert reader.read(page(lora=LORA)).lora_running == frozenset()
    assert reader.read(page(lora=LORA, cache=False)).num_blocks == 4096  # static: kept
    # … page 3 looks again: seen, and from then on read on every page
    assert reader.read(page(lora=LORA)).lora_running == frozenset({"a", "b"})
    assert reader.read(page(lora="")).lora_running == frozenset()  # page 4
    assert reader.read(page(cache=False)).num_blocks == 4096  # page 5: kept
    assert reader.read(page(cache=False)).num_blocks is None  # page 6: looked again, gone


def test_a_declared_lora_series_without_samples_yet_is_read_on_every_page():
    # vLLM declares the series at start and writes a sample after its first engine step
    reader = MetricsReader(PRESET, recheck_every=100)
    declared = "# HELP vllm:lora_requests_info Running stats on lora requests.\n" + (
        "# TYPE vllm:lora_requests_info gauge"
    )
    assert reader.read(page(lora=declared)).lora_running == frozenset()
    assert reader.read(page(lora=declared + "\n" + LORA)).lora_running == frozenset({"a", "b"})


def test_label_values_too_large_for_an_int_are_unknown():
    huge = 'vllm:lora_requests_info{max_lora="1e999",running_lora_adapters="a"} 1.0'
    metrics = MetricsReader(PRESET).read(page(lora=huge))
    assert (metrics.max_lora, metrics.lora_running) == (None, frozenset({"a"}))
    bad_cache = b'vllm:cache_config_info{block_size="1e999",num_gpu_blocks="8"} 1\n'
    assert MetricsReader(PRESET).read(bad_cache)[6:] == (None, 8)


def test_missing_series_are_unknown_not_zero():
    metrics = MetricsReader(PRESET).read(b"other_metric 1\n")
    assert (metrics.waiting, metrics.running, metrics.kv_usage) == (None, None, None)


def test_a_kv_percentage_is_scaled_and_clamped():
    pct = Preset(name="p", kv_usage=Selector(name="kv"), kv_scale=0.01)
    assert MetricsReader(pct).read(b"kv 40\n").kv_usage == 0.4
    assert MetricsReader(pct).read(b"kv 140\n").kv_usage == 1.0


def test_label_filtered_selectors_take_the_general_path():
    only_m = Preset(name="p", running=Selector(name="r", labels=(("model", "m"),)))
    text = b'r{model="m"} 3\nr{model="n"} 4\n'
    assert MetricsReader(only_m).read(text).running == 3.0


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=5),
       st.integers(min_value=0, max_value=3))  # fmt: skip
def test_the_reader_agrees_with_the_page_whatever_came_before(values, earlier_pages):
    reader = MetricsReader(PRESET)
    for _ in range(earlier_pages):
        reader.read(page(waiting=7.0, lora=LORA))
    lines = "".join(
        f'vllm:num_requests_waiting{{engine="{i}"}} {v!r}\n' for i, v in enumerate(values)
    )
    assert reader.read(lines.encode()).waiting == sum(values)
