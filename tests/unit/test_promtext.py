"""Reading a few series out of a Prometheus text exposition (routing/promtext.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routing.promtext import (
    Selector,
    find_rests,
    find_samples,
    find_values,
    parse_labels,
    parse_rest,
)

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


def test_values_without_labels_match_the_samples_they_come_from():
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "plain_metric", "x"):
        assert find_values(PAGE, name.encode()) == [
            s.value for s in find_samples(PAGE, Selector(name=name), keep_labels=False)
        ]
    assert find_values(b"m 1.5\nm 2.5\n", b"m") == [1.5, 2.5]  # the page's first line
    assert find_values(b'm{a="}"} 3\n', b"m") == [3.0]  # a brace inside a label value
    assert find_values(b'm{a="x"}\n', b"m") == []  # no value: not a sample
    assert find_values(b'5\nm{a="x" 3\n', b"m") == []  # labels never closed


def test_reading_from_an_offset_skips_what_comes_before():
    head = b"HTTP/1.1 200 OK\r\nplain_metric: 9\r\n\r\n"
    text = head + PAGE
    assert find_values(text, b"plain_metric", len(head)) == [4.5]
    assert find_values(text, b"vllm:num_requests_waiting", len(head)) == [3.0]
    assert [s.value for s in find_samples(text, Selector(name="plain_metric"), at=len(head))] == [
        4.5
    ]


def test_rests_are_the_unparsed_sample_lines_of_one_metric():
    rests = find_rests(PAGE, b"vllm:num_requests_running")
    assert rests == [b'{model_name="m",engine="0"} 7.0', b'{model_name="other",engine="1"} 2.0']
    sample = parse_rest(rests[1])
    assert sample is not None
    assert (dict(sample.labels)["model_name"], sample.value) == ("other", 2.0)


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


_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.sampled_from(["NaN", "+Inf", "-Inf", "0", "1e3"]),
)
_lines = st.one_of(
    st.tuples(st.sampled_from(["m", "m_total", "n"]), st.sampled_from(["", '{a="1"}', '{a="}"}']),
              _values, st.sampled_from(["", " 1700000000"]))
    .map(lambda t: f"{t[0]}{t[1]} {t[2]}{t[3]}"),
    st.sampled_from(["# HELP m the m", "# TYPE m gauge", 'm{a="x"}', 'm{a="x" 3', "m"]),
)  # fmt: skip


@given(st.lists(_lines, max_size=12), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_fast_values_equal_the_general_reader_on_any_page(lines, newline, trailing):
    page = (newline.join(lines) + (newline if trailing else "")).encode()
    for name in ("m", "n"):
        fast = find_values(page, name.encode())
        general = [s.value for s in find_samples(page, Selector(name=name), keep_labels=False)]
        assert [repr(v) for v in fast] == [repr(v) for v in general]
