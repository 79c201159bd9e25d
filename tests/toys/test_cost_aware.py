"""The cost-aware objective J = V@K - E[cost] (issue 19): with a give-up action and per-attempt and
per-token costs, every group enumerated, the methods registered unbiased under costs equal grad J
exactly, the others are off; zero costs are today's V@K weights bit for bit."""

from __future__ import annotations

import pytest
import torch

from calgrpo.algorithms import ADVANTAGE_METHODS, attempt_advantages, register_advantage_method
from calgrpo.algorithms.costs import AttemptCost
from calgrpo.errors import ConfigError, InvalidInputError
from calgrpo.toys.guessing import design_give_up_game, design_give_up_toy, random_guessing_toy
from calgrpo.toys.tables import (
    exact_estimator_moments,
    objective,
    objective_gradient,
    relative_error,
    true_gradient,
)

UNBIASED = [name for name in ADVANTAGE_METHODS if ADVANTAGE_METHODS.get(name).unbiased_with_costs]
BIASED = [name for name in ADVANTAGE_METHODS if not ADVANTAGE_METHODS.get(name).unbiased_with_costs]
COSTS = [AttemptCost(per_attempt=0.05), AttemptCost(per_attempt=0.2), AttemptCost(per_token=0.03),
         AttemptCost(per_attempt=0.1, per_token=0.04)]  # fmt: skip
GAME = design_give_up_game()


@pytest.fixture(scope="module")
def toy():
    return design_give_up_toy()


def test_the_registry_declares_cal_and_trajectory_unbiased_under_costs() -> None:
    assert set(UNBIASED) == {"cal", "trajectory"}


def test_give_up_ends_the_episode_unsolved_and_costs_its_own_tokens(toy) -> None:
    table = toy.tables[0]  # z = 0; give up is action 3, one token
    gave_up = (table.score_values.argmax(-1) == 3) & table.attempted  # the taken action has score 1 - p > 0
    assert bool(gave_up.any())
    ends = table.attempted.sum(-1) - 1
    rows = gave_up.any(-1).nonzero().flatten()
    for row in rows.tolist():
        assert table.rewards[row].sum() == 0 and bool(gave_up[row, ends[row]])


def test_objective_gradient_matches_central_finite_differences() -> None:
    cost = AttemptCost(per_attempt=0.1, per_token=0.04)
    logits = GAME.design_logits()
    analytic = objective_gradient(GAME.toy(logits), cost).view_as(logits)
    step, numeric = 1e-5, torch.zeros_like(logits)
    for row in range(logits.shape[0]):
        for a in range(logits.shape[1]):
            bump = torch.zeros_like(logits)
            bump[row, a] = step
            up, down = objective(GAME.toy(logits + bump), cost), objective(GAME.toy(logits - bump), cost)
            numeric[row, a] = (up - down) / (2 * step)
    assert analytic.abs().max() > 1e-3
    torch.testing.assert_close(analytic, numeric, rtol=0, atol=1e-9)


@pytest.mark.parametrize("cost", COSTS, ids=str)
@pytest.mark.parametrize("method", UNBIASED)
@pytest.mark.parametrize("group_size", [2, 3])
def test_unbiased_methods_equal_the_gradient_of_j(
    toy, method: str, group_size: int, cost: AttemptCost
) -> None:
    truth = objective_gradient(toy, cost)
    assert relative_error(true_gradient(toy), truth) > 0.05  # the costs change the direction
    expected = exact_estimator_moments(toy, group_size, method, cost=cost).mean
    assert (expected - truth).norm().item() < 1e-10


@pytest.mark.parametrize("method", BIASED)
def test_the_other_methods_are_off_under_costs(toy, method: str) -> None:
    cost = AttemptCost(per_attempt=0.1, per_token=0.04)
    expected = exact_estimator_moments(toy, 3, method, cost=cost).mean
    assert relative_error(expected, objective_gradient(toy, cost)) > 0.05


@pytest.mark.parametrize("method", UNBIASED)
def test_unbiased_under_costs_on_a_random_game_with_singletons(method: str) -> None:
    toy = random_guessing_toy(num_values=3, num_attempts=3, seed=5, give_up=True)
    lengths = toy.tables[0].attempted.sum(-1)
    assert lengths.min() == 1 and lengths.max() == 3  # some trajectories alone reach attempt 3
    cost = AttemptCost(per_attempt=0.15, per_token=0.05)
    expected = exact_estimator_moments(toy, 3, method, cost=cost).mean
    assert relative_error(expected, objective_gradient(toy, cost)) < 1e-10


@pytest.mark.parametrize("method", list(ADVANTAGE_METHODS))
def test_zero_costs_are_todays_weights_bit_for_bit(method: str) -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 5, (4, 6), generator=generator)
    attempted = torch.arange(4).view(1, 1, 4) < lengths.unsqueeze(-1)
    rewards = torch.zeros(4, 6, 4, dtype=torch.float64)
    solved = torch.rand(4, 6, generator=generator) < 0.5
    rewards.scatter_(2, (lengths - 1).unsqueeze(-1), solved.unsqueeze(-1).to(torch.float64))
    for scale in (False, True):
        plain = attempt_advantages(rewards, attempted, method, scale_by_std=scale)
        free = attempt_advantages(rewards, attempted, method, torch.zeros_like(rewards), scale_by_std=scale)
        assert torch.equal(plain, free)


def test_costs_are_checked() -> None:
    rewards = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    attempted = torch.tensor([[[True, True], [True, False]]])
    for bad, message in ((torch.zeros(1, 2, 3), "shape"), (torch.zeros(1, 2, 2, dtype=torch.long), "floating"),
                         (torch.full((1, 2, 2), -0.1), ">= 0"), (torch.full((1, 2, 2), float("nan")), "finite")):  # fmt: skip
        with pytest.raises(InvalidInputError, match=message):
            attempt_advantages(rewards, attempted, "cal", bad)
    with pytest.raises(ConfigError, match="per-token"):
        AttemptCost(per_token=-1.0)

    @register_advantage_method("test_no_costs", unbiased=False)
    def no_costs(rewards, attempted):
        return rewards

    try:
        with pytest.raises(InvalidInputError, match="does not take attempt costs"):
            attempt_advantages(rewards, attempted, "test_no_costs", torch.zeros(1, 2, 2))
        assert torch.equal(attempt_advantages(rewards, attempted, "test_no_costs"), rewards * attempted)
    finally:
        ADVANTAGE_METHODS.remove("test_no_costs")
