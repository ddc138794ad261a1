"""Reading OpenAI request bodies: judged bodies (``parse_body``) give a clear BodyError,
passed-through ones (``model_of``) never raise."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.openai import BodyError, model_of, parse_body

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"model": 3}', "'model' must be a string"),
        (DEEP, "nested too deeply"),
        (b'{"a": ' + DEEP + b"}", "nested too deeply"),
        (b"\xff\xfe{}", "not valid JSON"),
    ],
)
def test_bad_bodies_are_body_errors(body, message):
    with pytest.raises(BodyError, match=message):
        parse_body(body)


def test_model_of_names_the_model_of_an_openai_body():
    assert model_of(b'{"model": "llama", "prompt": "hi"}') == "llama"
    for other in (b'{"prompt": "hi"}', b'{"model": 1}', b"[1]", b"{", DEEP, b"\xff", b""):
        assert model_of(other) is None


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
).map(lambda doc: json.dumps(doc).encode())))  # fmt: skip
def test_model_of_never_raises_and_agrees_with_parse_body(body):
    model = model_of(body)
    try:
        parsed = parse_body(body)
    except BodyError:
        assert model is None
        return
    assert model == parsed.model
