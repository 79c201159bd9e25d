"""From attempt records to the evaluation's numbers: V@k with CIs, slices, per-problem rows."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from calgrpo.evaluation.stats import (
    bootstrap_mean_ci,
    paired_difference_ci,
    pass_at_k_per_problem,
    v_at_k_per_problem,
)
from calgrpo.rollout.records import AttemptRecord
from calgrpo.tasks import Problem

SLICE_KEYS = ("level", "type", "subject", "difficulty")


@dataclass(frozen=True)
class EpisodeTable:
    """Episodes of one model on the problems, aligned by problem (rows) and sample (columns)."""

    problem_ids: list[str]
    first: np.ndarray
    """(P, n) attempt of the first success, 0 if none within K."""
    attempts: np.ndarray
    """(P, n) attempts made."""
    tokens: np.ndarray
    """(P, n) completion tokens generated."""
    attempt_tokens: np.ndarray | None = None
    """(P, n, K) completion tokens of each attempt (0 where not made)."""
    independent_correct: np.ndarray | None = None
    """(P,) correct answers among ``independent_samples`` independent first attempts per problem."""
    independent_samples: int = 0


def episode_table(problems: list[Problem], records: list[AttemptRecord], samples: int) -> EpisodeTable:
    index = {p.id: i for i, p in enumerate(problems)}
    shape = (len(problems), samples)
    first, attempts, tokens = np.zeros(shape, int), np.zeros(shape, int), np.zeros(shape, int)
    attempt_tokens = np.zeros((*shape, max((r.attempt for r in records), default=1)), int)
    for r in records:
        i, s = index[r.problem_id], r.sample
        attempts[i, s] = max(attempts[i, s], r.attempt)
        tokens[i, s] += len(r.completion_token_ids)
        attempt_tokens[i, s, r.attempt - 1] += len(r.completion_token_ids)
        if r.reward > 0 and (first[i, s] == 0 or r.attempt < first[i, s]):
            first[i, s] = r.attempt
    if (attempts == 0).any():
        raise ValueError("some episodes have no attempts: records and problems do not match")
    return EpisodeTable([p.id for p in problems], first, attempts, tokens, attempt_tokens)


def _curve(per_problem: np.ndarray, seed: int, resamples: int) -> dict[str, list[float]]:
    mean, low, high = bootstrap_mean_ci(per_problem, num_resamples=resamples, seed=seed)
    return {"mean": mean.tolist(), "low": low.tolist(), "high": high.tolist()}


def summarize(problems: list[Problem], table: EpisodeTable, num_attempts: int, *, seed: int = 0,
              resamples: int = 2000) -> dict[str, Any]:  # fmt: skip
    """Every number of the evaluation of one model (see docs/evaluation.md for each key)."""
    per_problem = v_at_k_per_problem(table.first, num_attempts)
    solved = table.first > 0
    failed_first = table.first != 1
    result: dict[str, Any] = {
        "problems": len(problems),
        "episodes_per_problem": int(table.first.shape[1]),
        "v@k": _curve(per_problem, seed, resamples),
        "first_attempt_accuracy": float((table.first == 1).mean()),
        "success_after_failed_first": float((solved & failed_first).sum() / max(failed_first.sum(), 1)),
        "attempts_mean": float(table.attempts.mean()),
        "tokens_per_solved_problem": float(table.tokens.sum() / max(solved.sum(), 1)),
        "slices": {},
    }
    if table.attempt_tokens is not None:
        result["spend"] = spend_by_budget(table, num_attempts)
    if table.independent_correct is not None:
        # Feedback or resampling? The same budget of k attempts, sequential with feedback (V@k) or
        # independent (pass@k), on the same problems: their paired difference per k.
        samples = table.independent_samples
        independent = pass_at_k_per_problem(table.independent_correct, samples, num_attempts)
        mean, low, high = paired_difference_ci(per_problem, independent, num_resamples=resamples, seed=seed)
        result["independent_samples"] = table.independent_samples
        result["pass@k"] = _curve(independent, seed, resamples)
        result["feedback_gain"] = {"mean": mean.tolist(), "low": low.tolist(), "high": high.tolist()}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, problem in enumerate(problems):
        groups[f"task={problem.task}"].append(i)
        for key in SLICE_KEYS:
            if key in problem.meta:
                groups[f"{key}={problem.meta[key]}"].append(i)
    if len(groups) > 1 or any(not k.startswith("task=") for k in groups):
        for name, rows in sorted(groups.items()):
            result["slices"][name] = {
                "problems": len(rows),
                "v@k": _curve(per_problem[rows], seed, resamples),
            }
    return result


def spend_by_budget(table: EpisodeTable, num_attempts: int) -> dict[str, list[float]]:
    """What a budget of k attempts costs, k = 1..K: the mean attempts and completion tokens an episode
    spends when cut at k (it stops at its first success), averaged per problem, then over problems
    (as V@k is)."""
    ks = np.arange(1, num_attempts + 1)
    attempts = np.minimum(table.attempts[..., None], ks)  # (P, n, K)
    width = table.attempt_tokens.shape[-1]
    cumulative = np.cumsum(table.attempt_tokens, axis=-1)
    tokens = cumulative[..., np.minimum(ks, width) - 1]  # (P, n, K)
    return {"attempts": attempts.mean(axis=1).mean(axis=0).tolist(),
            "tokens": tokens.mean(axis=1).mean(axis=0).tolist()}  # fmt: skip


def cost_aware_scores(
    summary: dict[str, Any], per_attempt: tuple[float, ...], per_token: float
) -> list[dict[str, Any]]:
    """J@k = V@k - per_attempt * attempts@k - per_token * tokens@k, for each per-attempt cost level."""
    v_at_k, spend = summary["v@k"]["mean"], summary["spend"]
    spent = list(zip(v_at_k, spend["attempts"], spend["tokens"], strict=True))
    scores = []
    for cost in per_attempt:
        j_at_k = [v - cost * a - per_token * t for v, a, t in spent]
        scores.append({"per_attempt": cost, "per_token": per_token, "j@k": j_at_k})
    return scores


def compare(candidate: EpisodeTable, baseline: EpisodeTable, num_attempts: int, *, seed: int = 0,
            resamples: int = 2000) -> dict[str, list[float]]:  # fmt: skip
    """Paired difference of V@k (candidate - baseline) on the same problems, with its CI."""
    if candidate.problem_ids != baseline.problem_ids:
        raise ValueError("candidate and baseline were evaluated on different problems")
    mean, low, high = paired_difference_ci(
        v_at_k_per_problem(candidate.first, num_attempts), v_at_k_per_problem(baseline.first, num_attempts),
        num_resamples=resamples, seed=seed,
    )  # fmt: skip
    return {"mean": mean.tolist(), "low": low.tolist(), "high": high.tolist()}


def per_problem_rows(
    problems: list[Problem], table: EpisodeTable, num_attempts: int, model: str
) -> list[dict]:
    per_problem = v_at_k_per_problem(table.first, num_attempts)
    return [
        {"model": model, "problem_id": p.id, "task": p.task,
         **{f"v@{k + 1}": float(per_problem[i, k]) for k in range(num_attempts)},
         "attempts_mean": float(table.attempts[i].mean()), "tokens": int(table.tokens[i].sum())}
        for i, p in enumerate(problems)
    ]  # fmt: skip
