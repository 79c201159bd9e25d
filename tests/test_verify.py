"""The verify stage: CLI over files, summary, and authoritative rewards applied to attempt rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from calgrpo.errors import InvalidInputError
from calgrpo.io import write_problems
from calgrpo.rollout.records import AttemptRecord, write_attempts
from calgrpo.verify import VERDICT_COLUMNS, VerdictRow, apply_verdicts, read_verdicts
from tests.tasks.test_code import HUMANEVAL


def _attempt(problem_id, sample, attempt, completion, reward=0.0):
    return AttemptRecord(problem_id, sample, attempt, [1], [2], [-0.5], completion, reward, "", "", "stop", 0)


def test_verify_cli_writes_verdicts_and_summary(tmp_path) -> None:
    from calgrpo.tasks import Problem

    gsm = Problem(id="g1", task="gsm8k", prompt="2+2?", answer="#### 4")
    write_problems([HUMANEVAL, gsm], tmp_path / "problems.parquet")
    records = [
        _attempt("he-1", 0, 1, "    return sorted(values)\n"),
        _attempt(
            "he-1",
            0,
            2,
            "```python\ndef running_max(values):\n    import itertools\n"
            "    return list(itertools.accumulate(values, max))\n```",
        ),
        _attempt("he-1", 1, 1, "import os\nos._exit(0)\n"),
        _attempt("g1", 0, 1, "#### 4"),
        _attempt("g1", 1, 1, "#### 5"),
    ]
    write_attempts(records, tmp_path / "attempts.parquet")
    for suffix in ("parquet", "jsonl"):
        output = tmp_path / f"verdicts.{suffix}"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "calgrpo.cli",
                "verify",
                "--problems",
                str(tmp_path / "problems.parquet"),
                "--attempts",
                str(tmp_path / "attempts.parquet"),
                "--output",
                str(output),
                "--workers",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, "COLUMNS": "400"},
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        rows = read_verdicts(output)
        assert [r.reward for r in rows] == [0.0, 1.0, 0.0, 1.0, 0.0]
        assert rows[2].crashed and rows[2].verdict == "crashed"
        assert rows[0].isolation and rows[3].isolation == ""
        assert summary["per_task"]["code"] == {"verdicts": 3, "pass_rate": 1 / 3, "timeouts": 0, "crashes": 1}
        assert summary["per_task"]["gsm8k"]["pass_rate"] == 0.5
        assert json.loads((tmp_path / "verdicts.summary.json").read_text())["verdicts"] == 5
    assert list(VerdictRow.__dataclass_fields__) == VERDICT_COLUMNS


def _verdict(problem_id, sample, attempt, reward):
    return VerdictRow(problem_id, sample, attempt, "guess", reward, "", "", "", 0.0, False, False)


def test_apply_verdicts_truncates_after_the_first_authoritative_success() -> None:
    records = [_attempt("p", 0, k, str(k)) for k in (1, 2, 3)] + [_attempt("p", 1, 1, "x", reward=1.0)]
    verdicts = [
        _verdict("p", 0, 1, 0.0),
        _verdict("p", 0, 2, 1.0),
        _verdict("p", 0, 3, 1.0),
        _verdict("p", 1, 1, 0.0),
    ]
    updated = apply_verdicts(records, verdicts)
    assert [(r.sample, r.attempt, r.reward) for r in updated] == [(0, 1, 0.0), (0, 2, 1.0), (1, 1, 0.0)]
    with pytest.raises(InvalidInputError, match="no verdict"):
        apply_verdicts(records, verdicts[:2])
