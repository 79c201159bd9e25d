"""Attempt-level advantages for multi-attempt episodes (docs/algorithms.md, DESIGN section 2).

Shapes use fixed letters: P prompts, G trajectories per prompt (the group), K attempts.

A trajectory i makes attempts 1..T_i and stops at its first verified success, so
``rewards[p, i, k]`` is 1 only on the last attempt of a successful trajectory. The value of the
episode (the Verification@K reward) is ``S_i = max_k r_{i,k}``.

The returned weight ``A[p, i, k]`` multiplies the score of attempt k's own tokens:
``grad ~ (1/G) * sum_{i,k} A[p, i, k] * grad log pi(attempt k tokens | history)`` for each prompt.
It is 0 wherever the attempt was not generated.

With ``costs`` (the cost of each attempt made, :mod:`calgrpo.algorithms.costs`) the objective is
J = V@K - E[total cost] and the credit of attempt k is its return to go ``Q[i, k] = S_i - sum_{j >= k}
c[i, j]`` in place of S_i; ``costs=None`` is V@K exactly as without them.

Methods live in :data:`ADVANTAGE_METHODS`; add one with :func:`register_advantage_method`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from calgrpo.algorithms.costs import immediate_returns, returns_to_go, total_return, validate_costs
from calgrpo.errors import InvalidInputError
from calgrpo.registry import Registry

AdvantageFn = Callable[..., Tensor]
"""``fn(rewards (P, G, K) float, attempted (P, G, K) bool[, costs (P, G, K) float | None]) ->
advantages (P, G, K)``, inputs validated; a method whose ``fn`` takes no ``costs`` refuses them."""


@dataclass(frozen=True)
class AdvantageMethod:
    """One registered way of turning verdicts into attempt weights."""

    name: str
    fn: AdvantageFn
    unbiased: bool
    """True when the expected weighted score equals grad V@K exactly (tested in tests/toys)."""
    unbiased_with_costs: bool
    """True when, given attempt costs, it equals grad J = grad (V@K - E[cost]) exactly (tests/toys)."""
    supports_costs: bool
    """Its ``fn`` takes ``costs``."""
    outcome: Literal["success", "first_attempt"]
    """Per-trajectory outcome whose group std scales the advantages when ``scale_by_std`` is on."""
    summary: str


ADVANTAGE_METHODS: Registry[AdvantageMethod] = Registry("advantage method")


def register_advantage_method(
    name: str,
    *,
    unbiased: bool,
    unbiased_with_costs: bool = False,
    outcome: Literal["success", "first_attempt"] = "success",
) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator registering ``fn`` under ``name``; its docstring's first line is the summary."""

    def add(fn: AdvantageFn) -> AdvantageFn:
        import inspect

        summary = (fn.__doc__ or name).strip().splitlines()[0]
        takes_costs = "costs" in inspect.signature(fn).parameters
        if unbiased_with_costs and not takes_costs:
            raise ValueError(f"advantage method {name!r}: unbiased_with_costs needs an fn that takes costs")
        method = AdvantageMethod(name, fn, unbiased, unbiased_with_costs, takes_costs, outcome, summary)
        ADVANTAGE_METHODS.add(name, method)
        return fn

    return add


def attempt_advantages(
    rewards: Tensor,
    attempted: Tensor,
    method: str = "cal",
    costs: Tensor | None = None,
    *,
    scale_by_std: bool = False,
    std_eps: float = 1e-6,
) -> Tensor:
    """Per-attempt weights A of shape (P, G, K) for the chosen ``method``.

    Args:
        rewards: (P, G, K), values in {0, 1}; 1 = attempt k of trajectory i was verified correct.
            bool, integer or floating; the output uses its dtype when floating, else float32.
        attempted: (P, G, K) bool; True where attempt k was generated. Attempts form a prefix
            1..T_i, every trajectory makes attempt 1, and nothing follows a success.
        method: a name in :data:`ADVANTAGE_METHODS` (``cal``, ``trajectory``, ``naive``, ``single``,
            ``cal_inclusive``, ``cal_singleton_zero``, or one registered later).
        costs: (P, G, K) floating, finite, >= 0: the cost of each attempt made (ignored where not
            attempted); the weights then target J = V@K - E[total cost]. None: V@K, as without it.
        scale_by_std: divide each prompt's weights by the sample std (over G) of the method's
            per-trajectory outcome, GRPO-style. This reweights prompts, not directions inside a
            prompt. Groups with zero outcome variance get weight 0 (they carry no signal). With costs
            the outcome is the trajectory's return S_i - its costs.
        std_eps: added to the std before dividing.

    Returns:
        (P, G, K) tensor, 0 where ``attempted`` is False.

    Raises:
        InvalidInputError: shapes, dtypes or values violate the contract above.
        UnknownNameError: ``method`` is not registered.
    """
    spec = ADVANTAGE_METHODS.get(method)
    validate_attempt_table(rewards, attempted)
    dtype = rewards.dtype if rewards.is_floating_point() else torch.get_default_dtype()
    rewards = rewards.to(dtype)
    if costs is not None:
        if not spec.supports_costs:
            raise InvalidInputError(f"advantage method {method!r} does not take attempt costs")
        validate_costs(costs, rewards)
        costs = costs.to(dtype)
    if rewards.shape[0] == 0:
        return torch.zeros_like(rewards)
    values = spec.fn(rewards, attempted, costs) if costs is not None else spec.fn(rewards, attempted)
    advantages = torch.where(attempted, values, torch.zeros((), dtype=dtype))
    if scale_by_std:
        if spec.outcome == "success":
            outcome = total_return(trajectory_success(rewards), costs, attempted)
        else:
            outcome = immediate_returns(rewards, costs, attempted)[..., 0]
        std = outcome.std(dim=1, keepdim=True)  # (P, 1)
        scale = torch.where(std > 0, 1.0 / (std + std_eps), torch.zeros_like(std))
        advantages = advantages * scale.unsqueeze(-1)
    return advantages


def validate_attempt_table(rewards: Tensor, attempted: Tensor) -> None:
    """Raise :class:`InvalidInputError` naming the first violation of the attempt-table contract."""
    if not isinstance(rewards, Tensor) or not isinstance(attempted, Tensor):
        raise InvalidInputError(
            f"rewards and attempted must be torch tensors, got {type(rewards).__name__} "
            f"and {type(attempted).__name__}"
        )
    if rewards.dim() != 3 or rewards.shape != attempted.shape:
        raise InvalidInputError(
            f"rewards and attempted must both have shape (P, G, K); got {tuple(rewards.shape)} "
            f"and {tuple(attempted.shape)}"
        )
    if attempted.dtype != torch.bool:
        raise InvalidInputError(f"attempted must be a bool tensor, got dtype {attempted.dtype}")
    _, group_size, num_attempts = rewards.shape
    if num_attempts < 1:
        raise InvalidInputError("K = 0: each trajectory needs at least one attempt slot")
    if group_size < 2:
        raise InvalidInputError(
            f"G = {group_size} trajectories per prompt; leave-one-out baselines need G >= 2"
        )
    not_binary = (rewards != 0) & (rewards != 1)
    _raise_at_first(not_binary, "rewards must be 0 or 1", show=rewards)
    _raise_at_first(~attempted[..., 0], "empty trajectory: every trajectory must make attempt 1")
    _raise_at_first((rewards != 0) & ~attempted, "reward 1 on an attempt that was not generated")
    # The two checks below compare attempt k+1 (slice 1:) with attempt k, hence attempt_offset=2.
    hole = attempted[..., 1:] & ~attempted[..., :-1]
    _raise_at_first(hole, "attempt made although the attempt before it was not", attempt_offset=2)
    solved_before = torch.cummax(rewards != 0, dim=-1).values[..., :-1]
    after_success = attempted[..., 1:] & solved_before
    _raise_at_first(after_success, "attempt made after a verified success", attempt_offset=2)


def _raise_at_first(bad: Tensor, what: str, *, show: Tensor | None = None, attempt_offset: int = 1) -> None:
    """Raise naming the first True position of ``bad`` (P, G[, K]), and ``show``'s value there."""
    if not bool(bad.any()):
        return
    idx = tuple(int(i) for i in bad.nonzero()[0])
    where = f"prompt {idx[0]}, trajectory {idx[1]}"
    if len(idx) == 3:
        where += f", attempt {idx[2] + attempt_offset} (1-based)"
    value = f"; got {show[idx].item()}" if show is not None else ""
    raise InvalidInputError(f"{what} (first at {where}{value})")


def trajectory_success(rewards: Tensor) -> Tensor:
    """S_i = max_k r_{i,k}: (P, G, K) -> (P, G)."""
    return rewards.amax(dim=-1)


def leave_one_out_mean(values: Tensor, members: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of ``values`` over the other members of each group, and how many others there are.

    Args:
        values: (P, G, ...) numbers.
        members: bool, same shape; who counts towards the mean.

    Returns:
        (mean, count), both shaped like ``values``: for each (p, i, ...), the mean of values[p, j, ...]
        over members j != i, and the number of such j. The mean is 0 where the count is 0.
    """
    members = members.to(values.dtype)
    total = (values * members).sum(dim=1, keepdim=True)
    count = members.sum(dim=1, keepdim=True)
    others_total = total - values * members
    others_count = count - members
    mean = others_total / others_count.clamp(min=1)
    return torch.where(others_count > 0, mean, torch.zeros_like(mean)), others_count


def _trajectory_baseline(rewards: Tensor, attempted: Tensor, costs: Tensor | None = None) -> Tensor:
    """Leave-one-out mean of the return R (S without costs) over all other trajectories, (P, G, K)."""
    returns = total_return(trajectory_success(rewards), costs, attempted)
    mean, _ = leave_one_out_mean(returns, torch.ones_like(returns, dtype=torch.bool))
    return mean.unsqueeze(-1).expand_as(rewards)


@register_advantage_method("cal", unbiased=True, unbiased_with_costs=True)
def cal_advantages(rewards: Tensor, attempted: Tensor, costs: Tensor | None = None) -> Tensor:
    """CAL: S_i minus the mean S of the other trajectories that reached attempt k (all others if none did).

    ``A_{i,k} = S_i - mean_{j in R_k, j != i} S_j`` with ``R_k = {j : T_j >= k}``; when i alone
    reached k (n_k = 1) the baseline falls back to the trajectory level. The baseline never reads
    trajectory i, so the estimate is exactly unbiased for grad V@K. With costs, S is replaced by the
    return to go Q_{., k} on both sides (the fallback: the others' whole return), unbiased for grad J.
    """
    to_go = returns_to_go(trajectory_success(rewards), costs, attempted)
    reached_mean, others = leave_one_out_mean(to_go, attempted)
    return to_go - torch.where(others > 0, reached_mean, _trajectory_baseline(rewards, attempted, costs))


@register_advantage_method("trajectory", unbiased=True, unbiased_with_costs=True)
def trajectory_advantages(rewards: Tensor, attempted: Tensor, costs: Tensor | None = None) -> Tensor:
    """Trajectory level: S_i minus the mean S of all other trajectories, the same for every attempt.

    With costs, the whole return R_i = S_i - all its costs, minus the others' mean R: costs paid
    before attempt k add zero-mean noise to its credit, so it stays unbiased for grad J.
    """
    returns = total_return(trajectory_success(rewards), costs, attempted)
    return returns.unsqueeze(-1).expand_as(rewards) - _trajectory_baseline(rewards, attempted, costs)


@register_advantage_method("naive", unbiased=False)
def naive_advantages(rewards: Tensor, attempted: Tensor, costs: Tensor | None = None) -> Tensor:
    """Naive (biased): r_{i,k} minus the mean r_{j,k} of the others that reached k (0 if none did).

    It credits only each attempt's immediate success, so a failed attempt whose feedback made a
    later success possible is never rewarded. With costs: r_{i,k} - c_{i,k}, likewise.
    """
    immediate = immediate_returns(rewards, costs, attempted)
    reached_mean, _ = leave_one_out_mean(immediate, attempted)
    return immediate - reached_mean


@register_advantage_method("single", unbiased=False, outcome="first_attempt")
def single_attempt_advantages(rewards: Tensor, attempted: Tensor, costs: Tensor | None = None) -> Tensor:
    """Single (GRPO on attempt 1 only): r_{i,1} minus the others' mean r_{j,1}; later attempts get 0.

    Unbiased for V@1, not for V@K. With costs: r_{i,1} - c_{i,1}.
    """
    first = immediate_returns(rewards, costs, attempted)[..., :1]
    mean, _ = leave_one_out_mean(first, torch.ones_like(first, dtype=torch.bool))
    advantages = torch.zeros_like(rewards)
    advantages[..., :1] = first - mean
    return advantages


@register_advantage_method("cal_inclusive", unbiased=False)
def cal_inclusive_advantages(rewards: Tensor, attempted: Tensor, costs: Tensor | None = None) -> Tensor:
    """Ablation (biased): S_i minus the mean S over R_k including i itself."""
    to_go = returns_to_go(trajectory_success(rewards), costs, attempted)
    members = attempted.to(rewards.dtype)
    mean = (to_go * members).sum(dim=1, keepdim=True) / members.sum(dim=1, keepdim=True).clamp(min=1)
    return to_go - mean


@register_advantage_method("cal_singleton_zero", unbiased=False)
def cal_singleton_zero_advantages(rewards: Tensor, attempted: Tensor, costs: Tensor | None = None) -> Tensor:
    """Ablation (biased): CAL, but A = 0 when i alone reached attempt k (n_k = 1)."""
    to_go = returns_to_go(trajectory_success(rewards), costs, attempted)
    reached_mean, others = leave_one_out_mean(to_go, attempted)
    return torch.where(others > 0, to_go - reached_mean, torch.zeros_like(to_go))
