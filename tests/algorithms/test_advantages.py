"""attempt_advantages: hand-computed values, a loop reference, validation, registry, std scaling."""

from __future__ import annotations

import pytest
import torch

from calgrpo.algorithms import ADVANTAGE_METHODS, attempt_advantages, register_advantage_method
from calgrpo.errors import DuplicateNameError, InvalidInputError, UnknownNameError

# One prompt, G = 3, K = 3:
#   traj 0: fail, fail, success   (S = 1, T = 3)
#   traj 1: success               (S = 1, T = 1)
#   traj 2: fail, fail, fail      (S = 0, T = 3)
REWARDS = torch.tensor([[[0, 0, 1], [1, 0, 0], [0, 0, 0]]], dtype=torch.float64)
ATTEMPTED = torch.tensor([[[1, 1, 1], [1, 0, 0], [1, 1, 1]]], dtype=torch.bool)


def test_attempt_advantages_cal_hand_computed() -> None:
    # k = 1: everyone reached it, baseline = mean S of the two others.
    # k = 2, 3: R_k = {0, 2}; traj 0's baseline is S_2 = 0, traj 2's is S_0 = 1.
    expected = torch.tensor(
        [[[1 - 0.5, 1 - 0, 1 - 0], [1 - 0.5, 0, 0], [0 - 1, 0 - 1, 0 - 1]]], dtype=torch.float64
    )
    assert torch.equal(attempt_advantages(REWARDS, ATTEMPTED, "cal"), expected)


def test_attempt_advantages_cal_falls_back_to_trajectory_level_when_alone() -> None:
    rewards = torch.tensor([[[0, 1], [1, 0], [1, 0]]], dtype=torch.float64)
    attempted = torch.tensor([[[1, 1], [1, 0], [1, 0]]], dtype=torch.bool)
    cal = attempt_advantages(rewards, attempted, "cal")
    # Trajectory 0 alone reached attempt 2: its baseline is the mean S of all others = 1.
    assert cal[0, 0, 1].item() == 0.0
    assert attempt_advantages(rewards, attempted, "cal_singleton_zero")[0, 0, 1].item() == 0.0
    rewards[0, 2, 0] = 0  # now the others' mean S is 0.5
    assert attempt_advantages(rewards, attempted, "cal")[0, 0, 1].item() == 0.5
    assert attempt_advantages(rewards, attempted, "cal_singleton_zero")[0, 0, 1].item() == 0.0


def test_attempt_advantages_other_methods_hand_computed() -> None:
    traj = attempt_advantages(REWARDS, ATTEMPTED, "trajectory")
    assert torch.equal(
        traj, torch.tensor([[[0.5, 0.5, 0.5], [0.5, 0, 0], [-1, -1, -1]]], dtype=torch.float64)
    )
    naive = attempt_advantages(REWARDS, ATTEMPTED, "naive")
    # k = 1: r = (0, 1, 0), others' means (0.5, 0, 0.5); k = 2: R = {0, 2}, all r = 0;
    # k = 3: R = {0, 2}, r = (1, 0), so traj 0 gets 1 - 0 and traj 2 gets 0 - 1.
    assert torch.equal(naive, torch.tensor([[[-0.5, 0, 1], [1, 0, 0], [-0.5, 0, -1]]], dtype=torch.float64))
    single = attempt_advantages(REWARDS, ATTEMPTED, "single")
    assert torch.equal(single, torch.tensor([[[-0.5, 0, 0], [1, 0, 0], [-0.5, 0, 0]]], dtype=torch.float64))
    inclusive = attempt_advantages(REWARDS, ATTEMPTED, "cal_inclusive")
    third = 1 - 2 / 3
    expected = torch.tensor([[[third, 0.5, 0.5], [third, 0, 0], [-2 / 3, -0.5, -0.5]]], dtype=torch.float64)
    assert torch.allclose(inclusive, expected, atol=1e-15)


def _cal_reference(rewards: torch.Tensor, attempted: torch.Tensor) -> torch.Tensor:
    """CAL written as loops straight from DESIGN section 2 (slow, obviously right)."""
    num_prompts, group, num_attempts = rewards.shape
    out = torch.zeros(num_prompts, group, num_attempts, dtype=torch.float64)
    for p in range(num_prompts):
        success = [float(rewards[p, i].max()) for i in range(group)]
        for i in range(group):
            for k in range(num_attempts):
                if not attempted[p, i, k]:
                    continue
                others = [j for j in range(group) if j != i and attempted[p, j, k]]
                if not others:
                    others = [j for j in range(group) if j != i]
                out[p, i, k] = success[i] - sum(success[j] for j in others) / len(others)
    return out


def _random_attempt_table(
    generator: torch.Generator, num_prompts: int, group: int, num_attempts: int, q: float
):
    """Episodes where each attempt succeeds with probability q; stop at success."""
    hits = torch.rand(num_prompts, group, num_attempts, generator=generator) < q
    solved_before = torch.cumsum(hits.int(), dim=-1) - hits.int() > 0
    attempted = ~solved_before
    rewards = (hits & attempted).double()
    return rewards, attempted


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape", [(1, 2, 1), (3, 4, 3), (5, 8, 5), (2, 16, 2)])
def test_attempt_advantages_cal_matches_loop_reference(seed: int, shape: tuple[int, int, int]) -> None:
    generator = torch.Generator().manual_seed(seed)
    rewards, attempted = _random_attempt_table(generator, *shape, q=0.3)
    assert torch.allclose(attempt_advantages(rewards, attempted, "cal"), _cal_reference(rewards, attempted))


@pytest.mark.parametrize(
    "method", ["cal", "trajectory", "naive", "single", "cal_inclusive", "cal_singleton_zero"]
)
def test_attempt_advantages_zero_where_not_attempted(method: str) -> None:
    rewards, attempted = _random_attempt_table(torch.Generator().manual_seed(1), 4, 6, 4, q=0.4)
    advantages = attempt_advantages(rewards, attempted, method)
    assert advantages.shape == rewards.shape
    assert torch.all(advantages[~attempted] == 0)


def test_attempt_advantages_dtype_follows_rewards() -> None:
    assert attempt_advantages(REWARDS.long(), ATTEMPTED).dtype == torch.float32
    assert attempt_advantages(REWARDS.bool(), ATTEMPTED).dtype == torch.float32
    assert attempt_advantages(REWARDS, ATTEMPTED).dtype == torch.float64


def test_attempt_advantages_empty_batch() -> None:
    out = attempt_advantages(torch.zeros(0, 4, 3), torch.zeros(0, 4, 3, dtype=torch.bool))
    assert out.shape == (0, 4, 3)


def test_attempt_advantages_std_scaling() -> None:
    scaled = attempt_advantages(REWARDS, ATTEMPTED, "cal", scale_by_std=True, std_eps=0.0)
    std = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64).std()
    assert torch.allclose(scaled, attempt_advantages(REWARDS, ATTEMPTED, "cal") / std)
    # `single` scales by the std of first-attempt success (0, 1, 0), not of S.
    single = attempt_advantages(REWARDS, ATTEMPTED, "single", scale_by_std=True, std_eps=0.0)
    first_std = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).std()
    assert torch.allclose(single, attempt_advantages(REWARDS, ATTEMPTED, "single") / first_std)


def test_attempt_advantages_std_scaling_zeroes_constant_groups() -> None:
    # All three trajectories succeed: S is constant, but naive's raw weights are not zero.
    rewards = torch.tensor([[[0, 1], [1, 0], [1, 0]]], dtype=torch.float64)
    attempted = torch.tensor([[[1, 1], [1, 0], [1, 0]]], dtype=torch.bool)
    assert attempt_advantages(rewards, attempted, "naive").abs().sum() > 0
    assert attempt_advantages(rewards, attempted, "naive", scale_by_std=True).abs().sum() == 0


BAD_TABLES = {
    "shape (P, G, K)": (torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bool)),
    "both have shape": (torch.zeros(1, 3, 2), torch.ones(1, 3, 3, dtype=torch.bool)),
    "bool tensor": (torch.zeros(1, 3, 2), torch.ones(1, 3, 2)),
    "G >= 2": (torch.zeros(2, 1, 3), torch.ones(2, 1, 3, dtype=torch.bool)),
    "K = 0": (torch.zeros(2, 3, 0), torch.ones(2, 3, 0, dtype=torch.bool)),
    "must be 0 or 1": (torch.tensor([[[0.5], [0.0]]]), torch.ones(1, 2, 1, dtype=torch.bool)),
    "empty trajectory": (torch.zeros(1, 2, 2), torch.tensor([[[1, 1], [0, 0]]], dtype=torch.bool)),
    "not generated": (
        torch.tensor([[[0.0, 1.0], [0.0, 0.0]]]),
        torch.tensor([[[1, 0], [1, 1]]], dtype=torch.bool),
    ),
    "before it was not": (torch.zeros(1, 2, 3), torch.tensor([[[1, 0, 1], [1, 1, 1]]], dtype=torch.bool)),
    "after a verified success": (
        torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]),
        torch.tensor([[[1, 1], [1, 1]]], dtype=torch.bool),
    ),
    "nan": (torch.tensor([[[float("nan")], [0.0]]]), torch.ones(1, 2, 1, dtype=torch.bool)),
}


@pytest.mark.parametrize("problem", list(BAD_TABLES))
def test_attempt_advantages_rejects_bad_tables(problem: str) -> None:
    rewards, attempted = BAD_TABLES[problem]
    expected = "must be 0 or 1" if problem == "nan" else problem
    with pytest.raises(InvalidInputError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        attempt_advantages(rewards, attempted)


def test_attempt_advantages_error_names_the_first_bad_position() -> None:
    attempted = torch.ones(2, 3, 3, dtype=torch.bool)
    attempted[1, 2, 1] = False  # attempt 3 made without attempt 2
    with pytest.raises(InvalidInputError, match=r"prompt 1, trajectory 2, attempt 3"):
        attempt_advantages(torch.zeros(2, 3, 3), attempted)


def test_attempt_advantages_unknown_method_lists_choices() -> None:
    with pytest.raises(UnknownNameError, match=r"valid names: cal, .*Did you mean 'naive'"):
        attempt_advantages(REWARDS, ATTEMPTED, "naiv")


def test_register_advantage_method_refuses_duplicates_and_can_extend() -> None:
    with pytest.raises(DuplicateNameError, match="'cal' is already registered"):
        register_advantage_method("cal", unbiased=True)(lambda r, a: r)

    @register_advantage_method("test_success_only", unbiased=False)
    def success_only(rewards: torch.Tensor, attempted: torch.Tensor) -> torch.Tensor:
        """Test method: raw S_i."""
        return rewards.amax(-1, keepdim=True).expand_as(rewards)

    try:
        out = attempt_advantages(REWARDS, ATTEMPTED, "test_success_only")
        assert torch.equal(out, torch.tensor([[[1, 1, 1], [1, 0, 0], [0, 0, 0]]], dtype=torch.float64))
        assert ADVANTAGE_METHODS.get("test_success_only").summary == "Test method: raw S_i."
    finally:
        ADVANTAGE_METHODS.remove("test_success_only")
    assert "test_success_only" not in ADVANTAGE_METHODS
