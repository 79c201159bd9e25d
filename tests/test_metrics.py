"""V@k from hand-made attempt rows."""

from __future__ import annotations

import pytest

from calgrpo.metrics import verification_at_k
from calgrpo.rollout.records import AttemptRecord


def _row(problem: str, sample: int, attempt: int, reward: float) -> AttemptRecord:
    return AttemptRecord(problem, sample, attempt, [1], [2], [-0.1], "2", reward, "", "", "length", 0)


def test_verification_at_k_by_hand() -> None:
    rows = [
        # problem a: sample 0 solved at 1, sample 1 solved at 3
        _row("a", 0, 1, 1.0),
        _row("a", 1, 1, 0.0), _row("a", 1, 2, 0.0), _row("a", 1, 3, 1.0),
        # problem b: never solved within K = 3
        _row("b", 0, 1, 0.0), _row("b", 0, 2, 0.0), _row("b", 0, 3, 0.0),
        _row("b", 1, 1, 0.0), _row("b", 1, 2, 0.0), _row("b", 1, 3, 0.0),
    ]  # fmt: skip
    result = verification_at_k(rows, 3)
    # Per problem first, then over problems: a gives 1/2, 1/2, 1; b gives 0.
    assert result["v@1"] == pytest.approx(0.25)
    assert result["v@2"] == pytest.approx(0.25)
    assert result["v@3"] == pytest.approx(0.5)
    assert result["success_after_failed_first"] == pytest.approx(1 / 3)
    assert result["attempts_mean"] == pytest.approx((1 + 3 + 3 + 3) / 4)
