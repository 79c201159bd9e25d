"""Verification@k from attempt records (docs/metrics.md).

V@k of a problem is the share of its episodes whose first success came at attempt <= k; the
reported V@k averages that over problems. Attempts are sequential and dependent (each sees the
feedback on the earlier ones), so the independent-samples pass@k estimator does not apply.
"""

from __future__ import annotations

from collections import defaultdict

from calgrpo.rollout.records import AttemptRecord


def verification_at_k(records: list[AttemptRecord], num_attempts: int) -> dict[str, float]:
    """``{"v@1": ..., ..., "v@K": ..., "success_after_failed_first": ..., "attempts_mean": ...}``."""
    first_success: dict[tuple[str, int], int | None] = {}
    attempts_made: dict[tuple[str, int], int] = defaultdict(int)
    for record in records:
        key = (record.problem_id, record.sample)
        attempts_made[key] = max(attempts_made[key], record.attempt)
        first_success.setdefault(key, None)
        if record.reward > 0 and (first_success[key] is None or record.attempt < first_success[key]):
            first_success[key] = record.attempt
    per_problem: dict[str, list[int | None]] = defaultdict(list)
    for (problem_id, _), solved_at in first_success.items():
        per_problem[problem_id].append(solved_at)
    result = {}
    for k in range(1, num_attempts + 1):
        shares = [
            sum(1 for s in runs if s is not None and s <= k) / len(runs) for runs in per_problem.values()
        ]
        result[f"v@{k}"] = sum(shares) / len(shares) if shares else 0.0
    failed_first = [s for s in first_success.values() if s != 1]
    result["success_after_failed_first"] = (
        sum(1 for s in failed_first if s is not None) / len(failed_first) if failed_first else 0.0
    )
    result["attempts_mean"] = sum(attempts_made.values()) / max(len(attempts_made), 1)
    return result
