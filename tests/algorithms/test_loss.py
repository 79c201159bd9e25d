"""policy_loss: equals the estimator on the first pass, ignores masked tokens, clips like PPO."""

from __future__ import annotations

import pytest
import torch

from calgrpo.algorithms import PolicyLossConfig, attempt_advantages, policy_loss
from calgrpo.errors import ConfigError, InvalidInputError
from calgrpo.toys.guessing import design_exact_check_game
from calgrpo.toys.tables import group_estimates


@pytest.mark.parametrize("method", ["cal", "naive", "trajectory"])
def test_policy_loss_first_pass_gradient_equals_estimator(method: str) -> None:
    game = design_exact_check_game()
    logits = game.design_logits()
    toy = game.toy(logits)
    generator = torch.Generator().manual_seed(0)
    num_prompts, group = 5, 4
    loss_grads, estimates = [], []
    for table in toy.tables:  # one hidden z per "prompt" batch
        idx = torch.multinomial(table.probs, num_prompts * group, replacement=True, generator=generator)
        idx = idx.view(num_prompts, group)
        rows, attempted = table.score_rows[idx], table.attempted[idx]  # (P, G, K)
        # The score is onehot(action) - pi(row), so adding pi back recovers the action taken.
        actions = (table.score_values[idx] + torch.softmax(logits, -1)[rows]).argmax(-1)
        advantages = attempt_advantages(table.rewards[idx], attempted, method)

        theta = logits.clone().requires_grad_(True)
        # One row per trajectory, one token per attempt; unattempted slots hold junk and are masked.
        token_logprobs = torch.log_softmax(theta, -1)[rows, actions].view(num_prompts * group, -1)
        out = policy_loss(
            token_logprobs,
            token_logprobs.detach(),
            advantages.view(num_prompts * group, -1),
            attempted.view(num_prompts * group, -1),
            normalizer=num_prompts * group,
        )
        out.loss.backward()
        loss_grads.append(-theta.grad.flatten())
        estimates.append(group_estimates(toy, table, idx, method).mean(dim=0))
        assert out.clip_fraction.item() == 0.0
    for loss_grad, estimate in zip(loss_grads, estimates, strict=True):
        assert estimate.abs().max() > 1e-3  # the comparison is not between two zeros
        torch.testing.assert_close(loss_grad, estimate, rtol=0, atol=1e-12)


def test_policy_loss_masked_tokens_get_no_gradient_even_when_junk() -> None:
    logprobs = torch.tensor([[-1.0, float("nan"), -0.5], [float("-inf"), -2.0, -0.1]], requires_grad=True)
    behaviour = torch.tensor([[-1.1, 3.0, -0.5], [-1.0, float("nan"), -0.2]])
    mask = torch.tensor([[True, False, True], [False, False, True]])
    advantages = torch.tensor([[1.0], [-2.0]])
    ref = torch.tensor([[-1.0, float("nan"), -0.4], [0.0, 0.0, -0.1]])
    config = PolicyLossConfig(kl_coef=0.1)
    out = policy_loss(logprobs, behaviour, advantages, mask, normalizer=4, config=config, ref_logprobs=ref)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert torch.all(logprobs.grad[~mask] == 0)
    assert torch.all(logprobs.grad[mask] != 0)
    assert out.num_tokens.item() == 3


def test_policy_loss_clips_like_ppo() -> None:
    config = PolicyLossConfig(clip_low=0.2, clip_high=0.28)
    log_ratio = torch.log(torch.tensor([[0.5, 0.5, 1.1, 1.1, 1.5, 1.5, 0.9, 0.9]], dtype=torch.float64))
    advantages = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0]], dtype=torch.float64)
    behaviour = torch.full_like(log_ratio, -2.0)
    logprobs = (behaviour + log_ratio).requires_grad_(True)
    mask = torch.ones_like(log_ratio, dtype=torch.bool)
    out = policy_loss(logprobs, behaviour, advantages, mask, normalizer=2.0, config=config)
    out.loss.backward()

    ratio = log_ratio.exp()
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(0.8, 1.28) * advantages)
    torch.testing.assert_close(out.loss, -surrogate.sum() / 2.0)
    # Gradient is removed exactly where the clipped branch is active:
    # ratio 0.5 with A < 0 and ratio 1.5 with A > 0; everything else keeps -A * ratio / N.
    clipped = torch.tensor([[False, True, False, False, True, False, False, False]])
    expected = torch.where(clipped, torch.zeros_like(ratio), -advantages * ratio / 2.0)
    torch.testing.assert_close(logprobs.grad, expected)
    assert out.clip_fraction.item() == pytest.approx(2 / 8)


def test_policy_loss_k3_kl() -> None:
    logprobs = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    ref = torch.tensor([[-1.0, -1.5, -1.0]])
    mask = torch.tensor([[True, True, False]])
    config = PolicyLossConfig(kl_coef=0.5)
    out = policy_loss(
        logprobs, logprobs.detach(), torch.zeros(1, 3), mask, normalizer=1, config=config, ref_logprobs=ref
    )
    delta = torch.tensor([0.0, 0.5])
    k3 = delta.exp() - delta - 1
    torch.testing.assert_close(out.kl, k3.mean())
    torch.testing.assert_close(out.loss, 0.5 * k3.sum())
    out.loss.backward()
    # d/dlogprob of exp(ref - lp) - (ref - lp) - 1 = 1 - exp(ref - lp)
    torch.testing.assert_close(
        logprobs.grad, torch.tensor([[0.0, 0.5 * (1 - float(torch.tensor(0.5).exp())), 0.0]])
    )


def test_policy_loss_normalises_by_the_given_group_total() -> None:
    logprobs = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    small = policy_loss(logprobs, logprobs.detach(), torch.ones(1, 1), mask, normalizer=1).loss
    large = policy_loss(logprobs, logprobs.detach(), torch.ones(1, 1), mask, normalizer=8).loss
    torch.testing.assert_close(small, 8 * large)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"clip_low": 1.0}, "clip_low"), ({"clip_high": -0.1}, "clip_high"), ({"kl_coef": -1.0}, "kl_coef")],
)
def test_policy_loss_config_validates(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PolicyLossConfig(**kwargs)


def test_policy_loss_rejects_bad_inputs() -> None:
    lp = torch.zeros(2, 3)
    ok_mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(InvalidInputError, match="mask must match"):
        policy_loss(lp, lp, lp, torch.ones(2, 2, dtype=torch.bool), normalizer=1)
    with pytest.raises(InvalidInputError, match="bool tensor"):
        policy_loss(lp, lp, lp, torch.ones(2, 3), normalizer=1)
    with pytest.raises(InvalidInputError, match="advantages must have shape"):
        policy_loss(lp, lp, torch.zeros(3), ok_mask, normalizer=1)
    with pytest.raises(InvalidInputError, match="normalizer"):
        policy_loss(lp, lp, lp, ok_mask, normalizer=0)
    with pytest.raises(InvalidInputError, match="needs ref_logprobs"):
        policy_loss(lp, lp, lp, ok_mask, normalizer=1, config=PolicyLossConfig(kl_coef=0.1))
