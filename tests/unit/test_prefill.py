"""The prefill time estimate that paces non-streamed requests (routing.prefill)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from routing.prefill import MARGIN, MAX_TTFT_S, PrefillEstimator


def test_no_estimate_before_enough_streamed_first_tokens():
    est = PrefillEstimator(min_samples=3)
    for _ in range(2):
        est.observe(1000, 0.1)
        assert est.estimate(1000) is None
    est.observe(1000, 0.1)
    assert est.estimate(1000) == MARGIN * 0.1


def test_the_estimate_grows_with_the_prompt_and_long_prompts_weigh_by_their_cost():
    est = PrefillEstimator(window=10**9, min_samples=1)  # no fading here
    est.observe(100, 0.03)  # a short prompt: mostly fixed overhead
    est.observe(1900, 0.19)
    # Σ ttft / Σ tokens = 0.22 / 2000 s per token, not the mean of the two ratios (0.2 ms)
    assert math.isclose(est.estimate(2000) or 0.0, MARGIN * 0.22)
    assert math.isclose(est.estimate(1000) or 0.0, MARGIN * 0.11)
    assert (est.estimate(0) or 0.0) > 0.0  # an empty prompt still costs a token's worth


def test_old_observations_fade():
    est = PrefillEstimator(window=4, min_samples=1)
    est.observe(1000, 1.0)
    for _ in range(40):
        est.observe(1000, 0.1)  # the server got faster (a restart on a bigger GPU)
    assert (est.estimate(1000) or 0.0) < MARGIN * 0.1 * 1.01


@given(
    st.lists(
        st.tuples(
            st.integers(-10, 100_000),
            st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 60)),
        ),
        max_size=50,
    ),
    st.integers(0, 100_000),
)
def test_the_estimate_is_none_or_a_finite_non_negative_time(observations, prompt_tokens):
    est = PrefillEstimator(min_samples=1)
    for tokens, ttft in observations:
        est.observe(tokens, ttft)
    valid = [(t, s) for t, s in observations if t > 0 and 0.0 <= s <= MAX_TTFT_S]
    got = est.estimate(prompt_tokens)
    assert est.samples == len(valid)
    if not valid:
        assert got is None
    else:
        assert got is not None
        assert 0.0 <= got < math.inf
        # never beyond the slowest observed rate, never below the fastest (times the margin)
        rates = [s / t for t, s in valid]
        tokens = max(1, prompt_tokens)
        assert min(rates) * tokens * MARGIN * (1 - 1e-9) <= got
        assert got <= max(rates) * tokens * MARGIN * (1 + 1e-9)
