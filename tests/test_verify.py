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


def _run_verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calgrpo.cli", "verify", *args], capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "COLUMNS": "400"})  # fmt: skip


@pytest.mark.parametrize("table", ["completions.parquet", "completions.jsonl"])
def test_completions_generated_elsewhere_are_verified_from_four_columns(tmp_path, table) -> None:
    """Another engine's or pipeline's output: problem_id, sample, attempt, completion and nothing else."""
    import pandas as pd

    from calgrpo.tasks import Problem

    write_problems([Problem(id="g1", task="gsm8k", prompt="2+2?", answer="#### 4")], tmp_path / "problems.parquet")
    frame = pd.DataFrame({"problem_id": ["g1", "g1", "g1"], "sample": [0, 0, 1], "attempt": [1, 2, 1],
                          "completion": ["#### 5", "#### 4", "the answer is 4"]})  # fmt: skip
    path = tmp_path / table
    frame.to_json(path, orient="records", lines=True) if table.endswith(".jsonl") else frame.to_parquet(path)
    result = _run_verify("--problems", str(tmp_path / "problems.parquet"), "--attempts", str(path),
                         "--output", str(tmp_path / "verdicts.jsonl"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = read_verdicts(tmp_path / "verdicts.jsonl")
    assert [(r.sample, r.attempt, r.reward) for r in rows] == [(0, 1, 0.0), (0, 2, 1.0), (1, 1, 1.0)]


def test_a_long_verify_reports_progress_and_saves_its_config(tmp_path) -> None:
    import pandas as pd

    from calgrpo.tasks import Problem

    write_problems([Problem(id="g1", task="gsm8k", prompt="2+2?", answer="#### 4")], tmp_path / "problems.parquet")
    count = 3000
    frame = pd.DataFrame({"problem_id": ["g1"] * count, "sample": range(count), "attempt": [1] * count,
                          "completion": ["#### 4", "#### 5"] * (count // 2)})  # fmt: skip
    frame.to_parquet(tmp_path / "completions.parquet")
    result = _run_verify("--problems", str(tmp_path / "problems.parquet"), "--attempts",
                         str(tmp_path / "completions.parquet"), "--output", str(tmp_path / "v.parquet"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    reports = [json.loads(line) for line in result.stderr.splitlines() if line.startswith('{"progress"')]
    assert len(reports) >= 5 and reports[-1]["done"] == reports[-1]["total"], result.stderr  # about every 10%
    assert json.loads((tmp_path / "v.config.json").read_text())["attempts"] == str(tmp_path / "completions.parquet")
    assert sum(row.reward for row in read_verdicts(tmp_path / "v.parquet")) == count // 2


def test_bad_attempt_tables_and_outputs_are_refused_with_one_line(tmp_path) -> None:
    import pandas as pd

    from calgrpo.tasks import Problem

    problems = tmp_path / "problems.parquet"
    write_problems([Problem(id="g1", task="gsm8k", prompt="2+2?", answer="#### 4")], problems)
    twice = pd.DataFrame({"problem_id": ["g1", "g1"], "sample": [0, 0], "attempt": [1, 1], "completion": ["4", "4"]})
    twice.to_parquet(tmp_path / "twice.parquet")
    pd.DataFrame({"problem_id": ["g1"], "completion": ["4"]}).to_parquet(tmp_path / "short.parquet")
    cases = [
        (["--attempts", str(tmp_path / "twice.parquet"), "--output", str(tmp_path / "v.parquet")], 1, "appears twice"),
        (["--attempts", str(tmp_path / "short.parquet"), "--output", str(tmp_path / "v.parquet")], 1,
         "missing columns ['sample', 'attempt']"),
        (["--attempts", str(tmp_path), "--output", str(tmp_path / "v.parquet")], 1, "is a folder"),
        (["--attempts", str(tmp_path / "twice.parquet"), "--output", str(tmp_path / "v.csv")], 2,
         ".parquet or .jsonl"),
    ]  # fmt: skip
    for args, code, message in cases:
        result = _run_verify("--problems", str(problems), *args)
        assert result.returncode == code and message in result.stderr, (args, result.stderr[-500:])
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "v.csv").exists() and not (tmp_path / "v.parquet").exists()
