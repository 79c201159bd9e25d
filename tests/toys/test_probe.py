"""DESIGN section 2's counterexample: naive weighting climbs the wrong way."""

from __future__ import annotations

import math

import pytest

from calgrpo.toys.probe import probe_toy
from calgrpo.toys.tables import (
    exact_estimator_moments,
    immediate_reward_gradient,
    success_probability,
    true_gradient,
)


def test_probe_true_gradient_and_naive_expectation_at_zero() -> None:
    toy = probe_toy(0.0)
    assert success_probability(toy) == pytest.approx(0.75, abs=1e-15)
    assert true_gradient(toy).item() == pytest.approx(0.125, abs=1e-15)
    assert immediate_reward_gradient(toy).item() == pytest.approx(-0.0625, abs=1e-15)


@pytest.mark.parametrize("t", [-1.0, 0.0, 0.7])
def test_probe_success_probability_is_half_plus_half_sigmoid(t: float) -> None:
    s = 1 / (1 + math.exp(-t))
    assert success_probability(probe_toy(t)) == pytest.approx(0.5 + s / 2, abs=1e-15)
    step = 1e-6
    numeric = (success_probability(probe_toy(t + step)) - success_probability(probe_toy(t - step))) / (
        2 * step
    )
    assert true_gradient(probe_toy(t)).item() == pytest.approx(numeric, abs=1e-9)


@pytest.mark.parametrize("group_size", [2, 3, 4])
def test_probe_cal_is_exact_and_naive_has_the_wrong_sign(group_size: int) -> None:
    toy = probe_toy(0.0)
    assert exact_estimator_moments(toy, group_size, "cal").mean.item() == pytest.approx(0.125, abs=1e-14)
    assert exact_estimator_moments(toy, group_size, "trajectory").mean.item() == pytest.approx(
        0.125, abs=1e-14
    )
    # naive's leave-one-out baseline removes no bias: it expects exactly the 0/1 weighting's -1/16.
    assert exact_estimator_moments(toy, group_size, "naive").mean.item() == pytest.approx(-0.0625, abs=1e-14)
