"""V@k and its intervals on hand-made tables and on synthetic data with a known truth."""

from __future__ import annotations

import numpy as np
import pytest

from calgrpo.evaluation.stats import (
    bootstrap_mean_ci,
    paired_difference_ci,
    pass_at_k_per_problem,
    v_at_k_per_problem,
)
from calgrpo.evaluation.summary import episode_table, summarize
from calgrpo.rollout.records import AttemptRecord
from calgrpo.tasks import Problem


def test_v_at_k_by_hand() -> None:
    # 3 problems x 2 episodes, K = 3. 0 = not solved within K (cut at K).
    first = np.array([[1, 1],   # solved at attempt 1 every time
                      [0, 0],   # never solved
                      [3, 0]])  # solved at the last attempt once, cut at K once  # fmt: skip
    per_problem = v_at_k_per_problem(first, 3)
    np.testing.assert_allclose(per_problem, [[1, 1, 1], [0, 0, 0], [0, 0, 0.5]])
    np.testing.assert_allclose(per_problem.mean(0), [1 / 3, 1 / 3, 0.5])


def _row(problem, sample, attempt, reward, tokens=2):
    return AttemptRecord(
        problem, sample, attempt, [1], [5] * tokens, [-0.1] * tokens, "x", reward, "", "", "stop", 0
    )


def test_summary_from_records() -> None:
    problems = [
        Problem(id=p, task="guess", prompt="", answer="1", meta={"level": lvl})
        for p, lvl in (("a", 1), ("b", 2))
    ]
    records = [_row("a", 0, 1, 1.0), _row("a", 1, 1, 0.0), _row("a", 1, 2, 1.0),
               _row("b", 0, 1, 0.0), _row("b", 0, 2, 0.0), _row("b", 1, 1, 0.0), _row("b", 1, 2, 0.0)]  # fmt: skip
    table = episode_table(problems, records, samples=2)
    np.testing.assert_array_equal(table.first, [[1, 2], [0, 0]])
    summary = summarize(problems, table, 2, resamples=200)
    assert summary["v@k"]["mean"] == pytest.approx([0.25, 0.5])
    assert summary["first_attempt_accuracy"] == pytest.approx(0.25)
    assert summary["success_after_failed_first"] == pytest.approx(1 / 3)
    assert summary["attempts_mean"] == pytest.approx(1.75)
    assert summary["tokens_per_solved_problem"] == pytest.approx(14 / 2)
    assert set(summary["slices"]) == {"task=guess", "level=1", "level=2"}
    assert summary["slices"]["level=1"]["v@k"]["mean"] == pytest.approx([0.5, 1.0])


def test_bootstrap_interval_covers_the_truth_about_95_percent() -> None:
    covered = 0
    for trial in range(200):
        generator = np.random.default_rng(1000 + trial)
        p = generator.beta(2.0, 2.0, size=60)  # the problem population has true mean success 0.5
        episodes = generator.random((60, 4)) < p[:, None]
        first = np.where(episodes, 1, 0)
        _, low, high = bootstrap_mean_ci(v_at_k_per_problem(first, 1), num_resamples=1000, seed=trial)
        covered += bool(low[0] <= 0.5 <= high[0])
    assert 180 <= covered <= 198  # 90-99% of 200 seeded trials


def test_paired_difference_and_shape_checks() -> None:
    candidate = np.array([[1.0], [1.0], [0.5], [1.0]])
    baseline = np.array([[0.0], [0.5], [0.5], [0.0]])
    mean, low, high = paired_difference_ci(candidate, baseline, num_resamples=500)
    assert mean[0] == pytest.approx(0.625) and 0 < low[0] <= mean[0] <= high[0] <= 1
    with pytest.raises(ValueError, match="align"):
        paired_difference_ci(candidate, baseline[:3])


def test_pass_at_k_is_the_unbiased_estimator() -> None:
    from math import comb

    correct, samples = np.array([0, 1, 2, 4, 6, 6]), 6
    expected = [[1 - comb(samples - c, k) / comb(samples, k) for k in range(1, 5)] for c in correct]
    np.testing.assert_allclose(pass_at_k_per_problem(correct, samples, 4), expected, atol=1e-12)
    # The estimator is unbiased: averaged over every way to draw the samples, it is 1 - (1 - p)^k.
    rng = np.random.default_rng(0)
    draws = rng.random((20000, samples)) < 0.3
    estimate = pass_at_k_per_problem(draws.sum(axis=1), samples, 4).mean(axis=0)
    np.testing.assert_allclose(estimate, 1 - 0.7 ** np.arange(1, 5), atol=0.01)
    with pytest.raises(ValueError, match="needs >= 4 independent samples"):
        pass_at_k_per_problem(correct, 3, 4)


def test_spend_by_budget_and_the_cost_aware_score_by_hand() -> None:
    """One problem, two episodes (K = 3): solved at once with 3 tokens; failed thrice with 2, 2, 4."""
    import numpy as np

    from calgrpo.evaluation.summary import EpisodeTable, cost_aware_scores, spend_by_budget

    table = EpisodeTable(["a"], first=np.array([[1, 0]]), attempts=np.array([[1, 3]]), tokens=np.array([[3, 8]]),
                         attempt_tokens=np.array([[[3, 0, 0], [2, 2, 4]]]))  # fmt: skip
    spend = spend_by_budget(table, 3)
    assert spend == {"attempts": [1.0, 1.5, 2.0], "tokens": [2.5, 3.5, 5.5]}
    (score,) = cost_aware_scores({"v@k": {"mean": [0.5, 0.5, 0.5]}, "spend": spend}, (0.1,), 0.01)
    assert score["j@k"] == pytest.approx([0.375, 0.315, 0.245])
