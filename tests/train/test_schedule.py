"""The learning-rate schedule: warm-up, then constant or a decay to a floor."""

from __future__ import annotations

import math

import pytest

from calgrpo.train.schedule import learning_rate_factor


def test_warm_up_then_constant() -> None:
    assert [learning_rate_factor(s, 3) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_decay_starts_after_warm_up_and_ends_at_the_floor(schedule) -> None:
    factors = [learning_rate_factor(s, 2, schedule, 10, 0.1) for s in range(20)]
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])  # the warm-up, then the decay's start
    assert all(a >= b for a, b in zip(factors[2:], factors[3:], strict=False))  # never rises
    assert factors[12:] == pytest.approx([0.1] * 8)  # 10 steps of decay, then the floor
    assert factors[7] == pytest.approx(0.55)  # both shapes cross the middle halfway
    shape = 0.8 if schedule == "linear" else 0.5 * (1 + math.cos(0.2 * math.pi))
    assert factors[4] == pytest.approx(0.1 + 0.9 * shape)  # 2 of the 10 decay steps done


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="constant, linear, cosine"):
        learning_rate_factor(5, 0, "step", 10)


def test_a_decay_without_steps_is_refused() -> None:
    with pytest.raises(ValueError, match="decay_steps >= 1"):
        learning_rate_factor(5, 0, "linear", 0)
