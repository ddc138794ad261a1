"""Reading a few series out of a Prometheus text exposition (routing/promtext.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routing.promtext import Selector, find_samples, parse_labels

PAGE = b"""vllm:num_requests_waiting{model_name="m",engine="0"} 3.0
# HELP vllm:num_requests_running Number of requests running. vllm:num_requests_running 9
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m",engine="0"} 7.0
vllm:num_requests_running{model_name="other",engine="1"} 2.0
vllm:num_requests_running_total{model_name="m"} 100.0
plain_metric 4.5 1700000000
"""


def test_samples_are_found_at_line_starts_only():
    running = find_samples(PAGE, Selector(name="vllm:num_requests_running"))
    assert [s.value for s in running] == [7.0, 2.0]  # not the HELP text, not the _total
    assert running[0].labels == (("model_name", "m"), ("engine", "0"))


def test_the_first_line_and_unlabelled_samples_with_timestamps():
    assert [s.value for s in find_samples(PAGE, Selector(name="vllm:num_requests_waiting"))] == [
        3.0
    ]
    assert [s.value for s in find_samples(PAGE, Selector(name="plain_metric"))] == [4.5]
    assert find_samples(PAGE, Selector(name="absent")) == []


def test_label_filters_and_skipping_label_parsing():
    only = Selector(name="vllm:num_requests_running", labels=(("model_name", "other"),))
    assert [s.value for s in find_samples(PAGE, only)] == [2.0]
    assert [s.value for s in find_samples(PAGE, only, keep_labels=False)] == [2.0]
    bare = find_samples(PAGE, Selector(name="vllm:num_requests_running"), keep_labels=False)
    assert [(s.labels, s.value) for s in bare] == [((), 7.0), ((), 2.0)]


def test_escaped_quotes_backslashes_and_newlines_in_label_values():
    text = r'a="x\"y",b="c:\\d",c="l1\nl2",d=""'
    assert parse_labels(text) == (("a", 'x"y'), ("b", "c:\\d"), ("c", "l1\nl2"), ("d", ""))


label_values = st.text(alphabet=st.sampled_from(['a', 'Z', '"', "\\", "\n", ",", "=", " ", "/"]),
                       max_size=12)  # fmt: skip


@given(st.lists(st.tuples(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), label_values),
                max_size=5))  # fmt: skip
def test_parse_labels_reads_back_what_the_exposition_format_writes(pairs):
    def escape(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    text = ",".join(f'{k}="{escape(v)}"' for k, v in pairs)
    assert parse_labels(text) == tuple(pairs)
