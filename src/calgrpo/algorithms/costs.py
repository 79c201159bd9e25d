"""Costs of attempts, for the cost-aware objective J = P(success within K) - E[total cost].

Shapes as in :mod:`calgrpo.algorithms.advantages`: P prompts, G trajectories per prompt, K attempts.
Every attempt made costs ``per_attempt + per_token * (its generated tokens)``; an attempt not made
costs nothing. The score-function gradient of J credits attempt k of trajectory i with its return to
go ``Q[i, k] = S_i - sum_{j >= k} c[i, j]``: the costs paid before attempt k are fixed once its
history is, so they drop out in expectation (docs/algorithms.md, "Costs and giving up").
"""

from __future__ import annotations

import torch
from torch import Tensor

from calgrpo.algorithms.cost_config import AttemptCost
from calgrpo.errors import InvalidInputError

__all__ = ["AttemptCost", "immediate_returns", "returns_to_go", "total_return", "validate_costs"]


def validate_costs(costs: Tensor, rewards: Tensor) -> None:
    """``costs`` must be a finite, non-negative floating tensor shaped like ``rewards`` (P, G, K)."""
    if not isinstance(costs, Tensor) or costs.shape != rewards.shape:
        shape = tuple(costs.shape) if isinstance(costs, Tensor) else type(costs).__name__
        raise InvalidInputError(f"costs must have the shape of rewards {tuple(rewards.shape)}, got {shape}")
    if not costs.is_floating_point():
        raise InvalidInputError(f"costs must be a floating tensor, got dtype {costs.dtype}")
    if not bool(torch.isfinite(costs).all()) or bool((costs < 0).any()):
        raise InvalidInputError("costs must be finite and >= 0")


def returns_to_go(success: Tensor, costs: Tensor | None, attempted: Tensor) -> Tensor:
    """Q[p, i, k] = S[p, i] - sum_{j >= k} c[p, i, j] over attempts made: (P, G), (P, G, K) -> (P, G, K).

    Without costs, S broadcast to every attempt (the V@K credit, bit for bit).
    """
    expanded = success.unsqueeze(-1).expand(*success.shape, attempted.shape[-1])
    if costs is None:
        return expanded
    paid = torch.where(attempted, costs, torch.zeros((), dtype=costs.dtype)).to(success.dtype)
    to_go = paid.flip(-1).cumsum(-1).flip(-1)  # sum over j >= k
    return expanded - to_go


def total_return(success: Tensor, costs: Tensor | None, attempted: Tensor) -> Tensor:
    """R[p, i] = S[p, i] - all costs of trajectory i: (P, G)."""
    return returns_to_go(success, costs, attempted)[..., 0]


def immediate_returns(rewards: Tensor, costs: Tensor | None, attempted: Tensor) -> Tensor:
    """u[p, i, k] = r[p, i, k] - c[p, i, k] (what a per-attempt, naive credit sees)."""
    if costs is None:
        return rewards
    return rewards - torch.where(attempted, costs, torch.zeros((), dtype=costs.dtype)).to(rewards.dtype)
