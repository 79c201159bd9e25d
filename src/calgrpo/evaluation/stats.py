"""Verification@k and its uncertainty, as pure numpy functions (docs/evaluation.md).

Shapes: P problems, n episodes per problem, K attempts. ``first`` holds, per episode, the attempt
of its first verified success (1..K), or 0 when no attempt within K succeeded.

V@k is not pass@k: attempts are sequential and each sees feedback on the earlier ones, so the
unbiased pass@k estimator for independent samples does not apply to them. V@k is counted directly:
the share of episodes whose first success came at attempt <= k, averaged per problem, then over
problems. Uncertainty comes from a bootstrap over problems (the unit that varies between datasets).
"""

from __future__ import annotations

import numpy as np


def v_at_k_per_problem(first: np.ndarray, num_attempts: int) -> np.ndarray:
    """(P, n) first-success attempts -> (P, K) share of each problem's episodes solved by attempt k."""
    ks = np.arange(1, num_attempts + 1)
    solved_by = (first[:, :, None] > 0) & (first[:, :, None] <= ks)  # (P, n, K)
    return solved_by.mean(axis=1)


def pass_at_k_per_problem(correct: np.ndarray, samples: int, num_attempts: int) -> np.ndarray:
    """Unbiased pass@k from independent attempts (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).

    Args:
        correct: (P,) correct attempts among ``samples`` independent first attempts per problem.
        samples: n, independent attempts per problem (>= ``num_attempts``).

    Returns:
        (P, K) the probability that at least one of k independent attempts is correct, k = 1..K.
    """
    if samples < num_attempts:
        raise ValueError(f"pass@{num_attempts} needs >= {num_attempts} independent samples, got {samples}")
    correct = np.asarray(correct, dtype=float)
    # C(n-c, k) / C(n, k) = prod_{i<k} (n-c-i) / (n-i); a factor <= 0 means every k-subset holds a success.
    factors = np.clip(samples - correct[:, None] - np.arange(num_attempts), 0, None) / (
        samples - np.arange(num_attempts)
    )  # (P, K)
    return 1.0 - np.cumprod(factors, axis=1)


def bootstrap_mean_ci(
    per_problem: np.ndarray, *, num_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over problems and its percentile-bootstrap interval.

    Args:
        per_problem: (P, ...) one value (or vector) per problem.

    Returns:
        (mean, low, high), each shaped like ``per_problem[0]``.
    """
    generator = np.random.default_rng(seed)
    num_problems = per_problem.shape[0]
    if num_problems == 0:
        nan = np.full(per_problem.shape[1:], np.nan)
        return nan, nan, nan
    picks = generator.integers(0, num_problems, size=(num_resamples, num_problems))
    means = per_problem[picks].mean(axis=1)  # (R, ...)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return per_problem.mean(axis=0), low, high


def paired_difference_ci(
    candidate: np.ndarray,
    baseline: np.ndarray,
    *,
    num_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate minus baseline on the same problems, bootstrapped over problems (paired)."""
    if candidate.shape != baseline.shape:
        raise ValueError(f"paired results must align: {candidate.shape} vs {baseline.shape}")
    return bootstrap_mean_ci(candidate - baseline, num_resamples=num_resamples, level=level, seed=seed)
