"""Exact and Monte-Carlo expectations of advantage estimators on enumerable toys.

A toy is a set of hidden contexts (problems) with probabilities; for each context, a
:class:`TrajectoryTable` lists every complete trajectory with its probability, its verdicts and the
score (grad log pi) of each attempt. Because the tables are complete, the true gradient of V@K and
the exact expectation of any estimator over groups of G trajectories can be computed by enumeration.

Parameters form an (H, A) matrix: one row of logits per history, so an attempt's score touches one
row only, and tables store it sparsely (row index + A values). D = H * A is the flat size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from calgrpo.algorithms import attempt_advantages, trajectory_success
from calgrpo.algorithms.costs import AttemptCost
from calgrpo.errors import InvalidInputError


@dataclass(frozen=True)
class TrajectoryTable:
    """All N complete trajectories (K attempt slots) of one context, in float64."""

    probs: Tensor
    """(N,) probability of each trajectory given the context; sums to 1."""
    rewards: Tensor
    """(N, K) verdicts in {0, 1}."""
    attempted: Tensor
    """(N, K) bool, True where the attempt was made."""
    score_rows: Tensor
    """(N, K) long, the parameter row (history) that attempt k's score lives in."""
    score_values: Tensor
    """(N, K, A) that row of grad log pi(a_k | h_{k-1}); 0 where not attempted."""
    tokens: Tensor | None = None
    """(N, K) tokens each attempt generated (0 where not attempted); None: one token an attempt."""


@dataclass(frozen=True)
class Toy:
    """An enumerable multi-attempt environment with a fixed policy."""

    name: str
    tables: tuple[TrajectoryTable, ...]
    """One table per hidden context."""
    context_probs: Tensor
    """(C,) probability of each context."""
    num_rows: int
    """H, parameter rows (histories)."""
    num_actions: int
    """A, parameters per row (actions)."""

    @property
    def num_params(self) -> int:
        return self.num_rows * self.num_actions


@dataclass(frozen=True)
class EstimatorMoments:
    """Mean and spread of a gradient estimator over groups, flat over the D parameters."""

    mean: Tensor
    """(D,) expected estimate."""
    coord_variance: Tensor
    """(D,) variance of each coordinate of the estimate."""
    num_groups: int | None
    """Groups sampled, or None when the moments are exact (enumerated)."""
    touch_counts: Tensor | None = None
    """(D,) sampled groups whose estimate is non-zero on each coordinate; None when exact.
    A standard error from a handful of touches is unreliable, so z-scores should skip those."""

    @property
    def total_variance(self) -> float:
        """Trace of the covariance: E ||g - E g||^2."""
        return float(self.coord_variance.sum())

    @property
    def standard_error(self) -> Tensor:
        """(D,) standard error of ``mean``; zeros when exact."""
        if self.num_groups is None:
            return torch.zeros_like(self.mean)
        return (self.coord_variance / self.num_groups).sqrt()


def weighted_scores(toy: Toy, table: TrajectoryTable, idx: Tensor, weights: Tensor) -> Tensor:
    """sum_{g,k} weights[m, g, k] * score(trajectory idx[m, g], attempt k), flat.

    Args:
        idx: (M, G) long, trajectories of ``table``.
        weights: (M, G, K) float64 weight of each attempt's score.

    Returns:
        (M, D) float64.
    """
    num_groups = idx.shape[0]
    values = weights.unsqueeze(-1) * table.score_values[idx]  # (M, G, K, A)
    columns = table.score_rows[idx].unsqueeze(-1) * toy.num_actions + torch.arange(toy.num_actions)
    out = torch.zeros(num_groups, toy.num_params, dtype=torch.float64)
    return out.scatter_add_(1, columns.reshape(num_groups, -1), values.reshape(num_groups, -1))


def success_probability(toy: Toy) -> float:
    """V@K = sum_c P(c) sum_n P(n | c) S_n."""
    per_context = [float((t.probs * trajectory_success(t.rewards)).sum()) for t in toy.tables]
    return float(torch.tensor(per_context, dtype=torch.float64) @ toy.context_probs)


def true_gradient(toy: Toy) -> Tensor:
    """grad V@K = E[S * sum_k score_k], flat (D,). Every attempt of a success gets credit S."""
    return _expected_weighted_score(toy, lambda t: trajectory_success(t.rewards).unsqueeze(-1))


def attempt_costs(table: TrajectoryTable, cost: AttemptCost) -> Tensor:
    """(N, K) cost of each attempt of each trajectory (0 where not attempted)."""
    tokens = table.tokens if table.tokens is not None else table.attempted.to(torch.float64)
    return cost.of(table.attempted, tokens)


def objective(toy: Toy, cost: AttemptCost) -> float:
    """J = V@K - E[total cost] = sum_c P(c) sum_n P(n | c) (S_n - C_n)."""
    per_context = [float(t.probs @ (trajectory_success(t.rewards) - attempt_costs(t, cost).sum(-1)))
                   for t in toy.tables]  # fmt: skip
    return float(torch.tensor(per_context, dtype=torch.float64) @ toy.context_probs)


def objective_gradient(toy: Toy, cost: AttemptCost) -> Tensor:
    """grad J = E[(S - C) * sum_k score_k], flat (D,): every attempt credited with the whole return."""
    return _expected_weighted_score(
        toy, lambda t: (trajectory_success(t.rewards) - attempt_costs(t, cost).sum(-1)).unsqueeze(-1)
    )


def immediate_reward_gradient(toy: Toy) -> Tensor:
    """E[sum_k r_k * score_k], flat (D,): what naive 0/1 per-attempt weighting climbs."""
    return _expected_weighted_score(toy, lambda t: t.rewards)


def _expected_weighted_score(toy: Toy, weight_of) -> Tensor:
    total = torch.zeros(toy.num_params, dtype=torch.float64)
    for context_prob, table in zip(toy.context_probs, toy.tables, strict=True):
        n = table.probs.shape[0]
        weights = (weight_of(table) * table.attempted).unsqueeze(1)  # (N, 1, K)
        per_traj = weighted_scores(toy, table, torch.arange(n).unsqueeze(1), weights)
        total += context_prob * (table.probs @ per_traj)
    return total


def group_estimates(
    toy: Toy,
    table: TrajectoryTable,
    idx: Tensor,
    method: str,
    *,
    scale_by_std: bool = False,
    cost: AttemptCost | None = None,
) -> Tensor:
    """The estimate (1/G) sum_{i,k} A_{i,k} score_{i,k} for each group of trajectories.

    Args:
        idx: (M, G) long, M groups of G trajectories of ``table`` (one context).
        cost: attempt costs (the estimate targets grad J); None: grad V@K.

    Returns:
        (M, D) float64.
    """
    group_size = idx.shape[1]
    costs = attempt_costs(table, cost)[idx] if cost is not None else None
    advantages = attempt_advantages(
        table.rewards[idx], table.attempted[idx], method, costs, scale_by_std=scale_by_std
    )
    return weighted_scores(toy, table, idx, advantages / group_size)


def exact_estimator_moments(
    toy: Toy,
    group_size: int,
    method: str,
    *,
    scale_by_std: bool = False,
    cost: AttemptCost | None = None,
    chunk: int = 16384,
) -> EstimatorMoments:
    """Mean and variance of the estimator, enumerating all N^G ordered groups of each context."""
    biggest = max(t.probs.shape[0] for t in toy.tables) ** group_size
    if biggest > 5_000_000:
        raise InvalidInputError(
            f"{biggest} groups to enumerate for G = {group_size}; use sampled_estimator_moments"
        )
    first = torch.zeros(toy.num_params, dtype=torch.float64)
    second = torch.zeros(toy.num_params, dtype=torch.float64)
    for context_prob, table in zip(toy.context_probs, toy.tables, strict=True):
        n = table.probs.shape[0]
        for start in range(0, n**group_size, chunk):
            idx = _groups_by_number(torch.arange(start, min(start + chunk, n**group_size)), n, group_size)
            prob = context_prob * table.probs[idx].prod(dim=1)  # (M,)
            est = group_estimates(toy, table, idx, method, scale_by_std=scale_by_std, cost=cost)
            first += prob @ est
            second += prob @ est.square()
    return EstimatorMoments(first, (second - first.square()).clamp(min=0), None)


def _groups_by_number(numbers: Tensor, n: int, group_size: int) -> Tensor:
    """Decode group numbers 0..n^G-1 into (M, G) trajectory indices (base-n digits)."""
    powers = n ** torch.arange(group_size - 1, -1, -1)
    return (numbers.unsqueeze(1) // powers) % n


def sampled_estimator_moments(
    toy: Toy,
    group_size: int,
    method: str,
    *,
    num_groups: int,
    generator: torch.Generator,
    scale_by_std: bool = False,
    chunk: int = 4096,
) -> EstimatorMoments:
    """Monte-Carlo mean and per-coordinate variance of the estimator over ``num_groups`` groups.

    Each group draws its context from ``context_probs`` and G trajectories i.i.d. from that
    context's table, all from ``generator`` (same seed, same numbers).
    """
    if num_groups < 2:
        raise InvalidInputError(f"num_groups must be >= 2 to estimate a variance, got {num_groups}")
    mean = torch.zeros(toy.num_params, dtype=torch.float64)
    sum_sq_dev = torch.zeros(toy.num_params, dtype=torch.float64)  # sum of squared deviations (M2)
    touch_counts = torch.zeros(toy.num_params, dtype=torch.long)
    seen = 0
    for start in range(0, num_groups, chunk):
        size = min(chunk, num_groups - start)
        contexts = torch.multinomial(toy.context_probs, size, replacement=True, generator=generator)
        for c in range(len(toy.tables)):
            count = int((contexts == c).sum())
            if count == 0:
                continue
            table = toy.tables[c]
            idx = torch.multinomial(table.probs, count * group_size, replacement=True, generator=generator)
            est = group_estimates(toy, table, idx.view(count, group_size), method, scale_by_std=scale_by_std)
            # Chan et al.'s pairwise update: stable, and a coordinate no group touched stays exactly 0.
            batch_mean = est.mean(dim=0)
            delta = batch_mean - mean
            total = seen + count
            mean += delta * (count / total)
            sum_sq_dev += (est - batch_mean).square().sum(dim=0) + delta.square() * (seen * count / total)
            touch_counts += (est != 0).sum(dim=0)
            seen = total
    return EstimatorMoments(mean, sum_sq_dev / (num_groups - 1), num_groups, touch_counts)


def relative_error(estimate: Tensor, truth: Tensor) -> float:
    """||estimate - truth|| / ||truth||."""
    return float((estimate - truth).norm() / truth.norm())


def cosine(estimate: Tensor, truth: Tensor) -> float:
    """Cosine of the angle between two flat gradients."""
    denom = float(estimate.norm() * truth.norm())
    return float(estimate @ truth) / denom if denom > 0 else math.nan
