"""Sampled groups: CAL's mean lands within 4.5 standard errors of the truth; naive's does not."""

from __future__ import annotations

import pytest
import torch

from calgrpo.errors import InvalidInputError
from calgrpo.toys.guessing import design_exact_check_toy
from calgrpo.toys.tables import sampled_estimator_moments, true_gradient

NUM_GROUPS = 60_000


def _z_scores(method: str, seed: int = 0) -> torch.Tensor:
    toy = design_exact_check_toy()
    moments = sampled_estimator_moments(
        toy, 3, method, num_groups=NUM_GROUPS, generator=torch.Generator().manual_seed(seed)
    )
    error = (moments.mean - true_gradient(toy)).abs()
    reachable = moments.standard_error > 0  # rows of impossible histories never get a score
    assert torch.all(error[~reachable] < 1e-15)
    return error[reachable] / moments.standard_error[reachable]


@pytest.mark.parametrize("method", ["cal", "trajectory"])
def test_monte_carlo_unbiased_methods_within_4p5_standard_errors(method: str) -> None:
    z = _z_scores(method)
    assert z.numel() == 45  # 15 reachable histories x 3 guesses
    assert z.max() < 4.5


def test_monte_carlo_naive_rejected() -> None:
    assert _z_scores("naive").max() > 10


def test_sampled_moments_are_reproducible_per_seed() -> None:
    toy = design_exact_check_toy()

    def run(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return sampled_estimator_moments(toy, 4, "cal", num_groups=5000, generator=generator).mean

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_sampled_moments_need_two_groups() -> None:
    with pytest.raises(InvalidInputError, match="num_groups"):
        sampled_estimator_moments(
            design_exact_check_toy(), 3, "cal", num_groups=1, generator=torch.Generator().manual_seed(0)
        )
