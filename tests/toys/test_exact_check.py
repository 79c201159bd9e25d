"""DESIGN section 2's exact check: every group of the tabular toy enumerated."""

from __future__ import annotations

import pytest
import torch

from calgrpo.algorithms import ADVANTAGE_METHODS
from calgrpo.errors import InvalidInputError
from calgrpo.toys.guessing import (
    GuessingGame,
    design_exact_check_game,
    design_exact_check_toy,
    random_guessing_toy,
)
from calgrpo.toys.probe import probe_toy
from calgrpo.toys.tables import (
    cosine,
    exact_estimator_moments,
    relative_error,
    success_probability,
    true_gradient,
)

UNBIASED = [name for name in ADVANTAGE_METHODS if ADVANTAGE_METHODS.get(name).unbiased]
BIASED = [name for name in ADVANTAGE_METHODS if not ADVANTAGE_METHODS.get(name).unbiased]


@pytest.fixture(scope="module")
def toy():
    return design_exact_check_toy()


def test_design_toy_matches_published_numbers(toy) -> None:
    assert toy.num_rows == 43
    assert [t.probs.sum().item() for t in toy.tables] == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)
    grad = true_gradient(toy)
    assert success_probability(toy) == pytest.approx(0.755177, abs=5e-7)
    assert grad.norm().item() == pytest.approx(0.047196, abs=5e-7)
    empty_history = grad.view(43, 3)[0]  # row 0 is the empty history
    torch.testing.assert_close(
        empty_history, torch.tensor([0.008852, -0.005465, -0.003387], dtype=torch.float64), rtol=0, atol=5e-7
    )


def test_true_gradient_matches_central_finite_differences() -> None:
    game = design_exact_check_game()
    logits = game.design_logits()
    analytic = true_gradient(game.toy(logits)).view_as(logits)
    step = 1e-5
    numeric = torch.zeros_like(logits)
    for row in range(logits.shape[0]):
        for a in range(logits.shape[1]):
            bump = torch.zeros_like(logits)
            bump[row, a] = step
            numeric[row, a] = (
                success_probability(game.toy(logits + bump)) - success_probability(game.toy(logits - bump))
            ) / (2 * step)
    assert analytic.abs().max() > 1e-3
    torch.testing.assert_close(analytic, numeric, rtol=0, atol=1e-9)


@pytest.mark.parametrize("method", UNBIASED)
@pytest.mark.parametrize("group_size", [2, 3, 4])
def test_unbiased_methods_equal_the_true_gradient(toy, method: str, group_size: int) -> None:
    expected = exact_estimator_moments(toy, group_size, method).mean
    assert (expected - true_gradient(toy)).norm().item() < 1e-10


@pytest.mark.parametrize("method", BIASED)
def test_biased_methods_differ_by_more_than_five_percent(toy, method: str) -> None:
    expected = exact_estimator_moments(toy, 3, method).mean
    assert relative_error(expected, true_gradient(toy)) > 0.05


def test_naive_bias_is_as_large_as_documented(toy) -> None:
    expected = exact_estimator_moments(toy, 3, "naive").mean
    truth = true_gradient(toy)
    assert relative_error(expected, truth) == pytest.approx(1.30, abs=0.01)
    assert cosine(expected, truth) == pytest.approx(0.78, abs=0.01)


@pytest.mark.parametrize("method", UNBIASED)
def test_unbiased_on_a_random_game_with_singleton_attempts(method: str) -> None:
    # 4 values, 3 attempts: 40 trajectories per z, 64,000 groups each; groups where one trajectory
    # alone reaches attempt 3 are common, so CAL's fallback is exercised.
    toy = random_guessing_toy(num_values=4, num_attempts=3, seed=3)
    lengths = toy.tables[0].attempted.sum(-1)
    assert lengths.min() == 1 and lengths.max() == 3
    truth = true_gradient(toy)
    assert truth.norm() > 1e-3
    expected = exact_estimator_moments(toy, 3, method).mean
    assert relative_error(expected, truth) < 1e-10


def test_exact_variance_matches_brute_force_on_the_probe_game() -> None:
    toy = probe_toy(t=0.3)
    moments = exact_estimator_moments(toy, 2, "trajectory")
    # Brute force over context and ordered pairs with plain floats: g = (1/2) sum_i (S_i - S_j) score_i.
    first = second = 0.0
    for context_prob, table in zip(toy.context_probs.tolist(), toy.tables, strict=True):
        success = table.rewards.amax(-1).tolist()
        score = table.score_values[:, 0, 0].tolist()  # only attempt 1 depends on t
        for i, p_i in enumerate(table.probs.tolist()):
            for j, p_j in enumerate(table.probs.tolist()):
                g = 0.5 * ((success[i] - success[j]) * score[i] + (success[j] - success[i]) * score[j])
                first += context_prob * p_i * p_j * g
                second += context_prob * p_i * p_j * g * g
    assert moments.mean.item() == pytest.approx(first, abs=1e-15)
    assert moments.total_variance == pytest.approx(second - first**2, abs=1e-15)
    assert moments.total_variance > 0.01
    assert torch.all(moments.standard_error == 0)


def test_guessing_game_validates() -> None:
    with pytest.raises(InvalidInputError, match="prior"):
        GuessingGame(prior=(0.5, 0.6), num_attempts=2)
    with pytest.raises(InvalidInputError, match="num_attempts"):
        GuessingGame(prior=(0.5, 0.5), num_attempts=0)
    with pytest.raises(InvalidInputError, match="logits must have shape"):
        design_exact_check_game().toy(torch.zeros(3, 3))
    with pytest.raises(InvalidInputError, match="sampled_estimator_moments"):
        exact_estimator_moments(random_guessing_toy(4, 4, seed=0), 8, "cal")
