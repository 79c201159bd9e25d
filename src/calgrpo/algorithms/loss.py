"""The clipped policy-gradient loss for attempt tokens (docs/algorithms.md, DESIGN section 2).

Shapes: R sequences (rows) of T tokens. A row is whatever the trainer packs (one attempt, or a whole
trajectory); every token carries the advantage of the attempt it belongs to, and the mask selects
attempt tokens only (prompt, feedback and padding tokens are context, never trained on).

``L = -(1/N) * sum_{rows, tokens in mask} min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)
      + kl_coef * (1/N) * sum_{rows, tokens in mask} k3(pi_ref || pi)``

with ``rho = exp(logprob - behaviour_logprob)`` and ``N = normalizer``, which must be B * G (prompts
times the original group size) over the whole optimiser step: not the token count, not the number
of attempts, not per-sequence means, any of which would bias the direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from calgrpo.algorithms.loss_config import PolicyLossConfig
from calgrpo.errors import InvalidInputError


@dataclass(frozen=True)
class PolicyLossOutput:
    """The loss and its diagnostics (all but ``loss`` are detached)."""

    loss: Tensor
    """Scalar to backpropagate: policy-gradient term plus kl_coef * KL term."""
    pg_loss: Tensor
    """Scalar, the clipped surrogate term alone."""
    kl: Tensor
    """Scalar, mean k3 KL per masked token (0 without a reference)."""
    clip_fraction: Tensor
    """Scalar, share of masked tokens whose gradient the clip removed."""
    num_tokens: Tensor
    """Scalar, number of masked (trained) tokens."""


def policy_loss(
    logprobs: Tensor,
    behaviour_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    normalizer: float,
    config: PolicyLossConfig | None = None,
    ref_logprobs: Tensor | None = None,
) -> PolicyLossOutput:
    """Clipped-ratio policy-gradient loss normalised by B * G.

    Args:
        logprobs: (R, T) log pi_theta of each token under the current policy (requires grad).
        behaviour_logprobs: (R, T) log-probs of the policy that generated the tokens.
        advantages: (R, T) per-token advantage (the attempt's A), or (R, 1) broadcast over tokens.
        mask: (R, T) bool, True on attempt tokens to train on.
        normalizer: B * G for the whole optimiser step (> 0); micro-batches share it.
        config: clip ranges and KL weight.
        ref_logprobs: (R, T) log-probs under the reference policy; required when kl_coef > 0.

    On the first pass (logprobs == behaviour_logprobs) the gradient equals
    ``-(1/N) sum A * grad logprobs``, i.e. the CAL estimator's. Masked tokens get exactly zero
    gradient even if their inputs are inf or nan.
    """
    config = config or PolicyLossConfig()
    _check_loss_inputs(logprobs, behaviour_logprobs, advantages, mask, normalizer, config, ref_logprobs)
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    advantages = advantages.to(logprobs.dtype).expand_as(logprobs)
    # Masked positions are replaced before exp() so that junk there cannot leak nan into the gradient.
    log_ratio = torch.where(mask, logprobs - behaviour_logprobs.detach(), zero)
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - config.clip_low, 1.0 + config.clip_high)
    surrogate = torch.minimum(ratio * advantages, clipped * advantages)
    pg_loss = -torch.where(mask, surrogate, zero).sum() / normalizer

    num_tokens = mask.sum()
    kl_mean = zero
    loss = pg_loss
    if ref_logprobs is not None and config.kl_coef > 0:
        # k3 estimator of KL(pi || pi_ref): exp(d) - d - 1 with d = ref - logprob; >= 0, unbiased.
        delta = torch.where(mask, ref_logprobs.detach() - logprobs, zero)
        kl_tokens = torch.exp(delta) - delta - 1.0
        loss = pg_loss + config.kl_coef * kl_tokens.sum() / normalizer
        kl_mean = kl_tokens.detach().sum() / num_tokens.clamp(min=1)

    with torch.no_grad():
        was_clipped = ((ratio > 1.0 + config.clip_high) & (advantages > 0)) | (
            (ratio < 1.0 - config.clip_low) & (advantages < 0)
        )
        clip_fraction = (was_clipped & mask).sum() / num_tokens.clamp(min=1)
    return PolicyLossOutput(loss, pg_loss.detach(), kl_mean, clip_fraction, num_tokens)


def _check_loss_inputs(
    logprobs: Tensor,
    behaviour_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    normalizer: float,
    config: PolicyLossConfig,
    ref_logprobs: Tensor | None,
) -> None:
    if logprobs.dim() != 2:
        raise InvalidInputError(f"logprobs must have shape (R, T), got {tuple(logprobs.shape)}")
    named = {"behaviour_logprobs": behaviour_logprobs, "mask": mask}
    if ref_logprobs is not None:
        named["ref_logprobs"] = ref_logprobs
    for name, tensor in named.items():
        if tensor.shape != logprobs.shape:
            raise InvalidInputError(
                f"{name} must match logprobs' shape {tuple(logprobs.shape)}, got {tuple(tensor.shape)}"
            )
    if advantages.shape not in (logprobs.shape, (logprobs.shape[0], 1)):
        raise InvalidInputError(
            f"advantages must have shape (R, T) = {tuple(logprobs.shape)} or (R, 1), "
            f"got {tuple(advantages.shape)}"
        )
    if mask.dtype != torch.bool:
        raise InvalidInputError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    if not normalizer > 0:
        raise InvalidInputError(f"normalizer must be B * G > 0, got {normalizer}")
    if config.kl_coef > 0 and ref_logprobs is None:
        raise InvalidInputError(f"kl_coef = {config.kl_coef} needs ref_logprobs; pass them or set 0")
