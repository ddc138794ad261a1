"""The error tree (routing/errors.py) and small model behaviours other tests lean on."""

from __future__ import annotations

import pytest

from routing import (
    AdmissionRejectedError,
    ConfigError,
    ConfigIssue,
    InvalidBackendError,
    ModelNotFoundError,
    NoEligibleEndpointError,
    NoRouteMatchedError,
    SluiceError,
)
from routing import model as m
from routing.backends import Endpoint

CODES = [
    (NoRouteMatchedError, "route_not_found"),
    (InvalidBackendError, "invalid_backend"),
    (NoEligibleEndpointError, "no_healthy_upstream"),
    (ModelNotFoundError, "model_not_found"),
    (SluiceError, "sluice_error"),
]


@pytest.mark.parametrize(("cls", "code"), CODES, ids=[c for _, c in CODES])
def test_errors_carry_a_stable_code_and_their_message(cls: type[SluiceError], code: str) -> None:
    err = cls("what happened")
    assert isinstance(err, SluiceError)
    assert err.code == code
    assert err.message == "what happened"
    assert str(err) == "what happened"


def test_admission_rejected_carries_reason_status_and_retry_after() -> None:
    err = AdmissionRejectedError("full", reason="queue_full", status=429, retry_after_s=1.5)
    assert (err.code, err.reason, err.status, err.retry_after_s) == (
        "admission_rejected",
        "queue_full",
        429,
        1.5,
    )


@pytest.mark.parametrize(
    ("issue", "text"),
    [
        (
            ConfigIssue(file="a.yaml", document=2, path="spec.x", message="bad"),
            "a.yaml: document 2: spec.x: error: bad",
        ),
        (
            ConfigIssue(file="a.yaml", document=0, path="", message="not a mapping"),
            "a.yaml: document 0: error: not a mapping",
        ),
        (
            ConfigIssue(file="b", document=1, path="p", message="m", severity="warning"),
            "b: document 1: p: warning: m",
        ),
    ],
    ids=["with-path", "without-path", "warning"],
)
def test_config_issue_reads_as_one_line(issue: ConfigIssue, text: str) -> None:
    assert str(issue) == text


def test_config_error_counts_errors_only() -> None:
    issues = (
        ConfigIssue(file="f", document=0, path="a", message="x"),
        ConfigIssue(file="f", document=0, path="b", message="y", severity="warning"),
    )
    err = ConfigError(issues)
    assert err.message == "1 config error(s)"
    assert err.issues == issues


SELECTORS = [
    ("empty-matches-all", m.LabelSelector(), {"a": "1"}, True),
    ("labels-match", m.LabelSelector(match_labels=(("a", "1"),)), {"a": "1", "b": "2"}, True),
    ("labels-differ", m.LabelSelector(match_labels=(("a", "1"),)), {"a": "2"}, False),
    ("labels-missing", m.LabelSelector(match_labels=(("a", "1"),)), {}, False),
    ("in", m.LabelSelector(match_expressions=(("a", "In", ("1", "2")),)), {"a": "2"}, True),
    ("in-other", m.LabelSelector(match_expressions=(("a", "In", ("1",)),)), {"a": "2"}, False),
    ("in-absent", m.LabelSelector(match_expressions=(("a", "In", ("1",)),)), {}, False),
    ("not-in", m.LabelSelector(match_expressions=(("a", "NotIn", ("1",)),)), {"a": "2"}, True),
    ("not-in-hit", m.LabelSelector(match_expressions=(("a", "NotIn", ("1",)),)), {"a": "1"}, False),
    ("not-in-absent", m.LabelSelector(match_expressions=(("a", "NotIn", ("1",)),)), {}, True),
    ("exists", m.LabelSelector(match_expressions=(("a", "Exists", ()),)), {"a": ""}, True),
    ("exists-absent", m.LabelSelector(match_expressions=(("a", "Exists", ()),)), {}, False),
    ("does-not-exist", m.LabelSelector(match_expressions=(("a", "DoesNotExist", ()),)), {}, True),
    (
        "does-not-exist-present",
        m.LabelSelector(match_expressions=(("a", "DoesNotExist", ()),)),
        {"a": "1"},
        False,
    ),
    (
        "all-must-hold",
        m.LabelSelector(match_labels=(("app", "x"),), match_expressions=(("tier", "Exists", ()),)),
        {"app": "x"},
        False,
    ),
]


@pytest.mark.parametrize(
    ("selector", "labels", "expected"), [s[1:] for s in SELECTORS], ids=[s[0] for s in SELECTORS]
)
def test_label_selector(selector: m.LabelSelector, labels: dict[str, str], expected: bool) -> None:
    assert selector.matches(labels) is expected


@pytest.mark.parametrize(
    ("address", "key"),
    [("10.0.0.1", "10.0.0.1:8000"), ("fd00::1", "[fd00::1]:8000")],
    ids=["ipv4", "ipv6"],
)
def test_endpoint_key(address: str, key: str) -> None:
    assert Endpoint(address=address, port=8000).key == key


def test_endpoint_label_lookup() -> None:
    ep = Endpoint(address="a", port=1, labels=(("engine", "vllm"),))
    assert ep.label("engine") == "vllm"
    assert ep.label("zone") == ""
    assert ep.label("zone", "z1") == "z1"


def test_meta_key_and_labels() -> None:
    meta = m.Meta(name="r", namespace="ns", labels=(("a", "b"),))
    assert meta.key == "ns/r"
    assert meta.label_map() == {"a": "b"}
