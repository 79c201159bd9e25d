"""The file-based stages from the command line: problems -> rollout -> train -> rollout again."""

from __future__ import annotations

import json

import pandas as pd

from calgrpo.manifest import is_complete
from calgrpo.rollout.records import ATTEMPT_COLUMNS
from tests.helpers import run_calgrpo


def test_stages_over_files(tmp_path, tiny_policy_folder) -> None:
    problems = tmp_path / "problems.parquet"
    made = run_calgrpo("problems", "--output", str(problems), "--num-problems", "6", "--task-options", "num_values", "8")
    assert made["problems"] == 6
    attempts = tmp_path / "attempts.parquet"
    rollout_args = [
        "--problems",
        str(problems),
        "--rollout.num-attempts",
        "3",
        "--rollout.group-size",
        "4",
        "--rollout.sampling.max-new-tokens",
        "2",
        "--threads",
        "1",
    ]
    first = run_calgrpo("rollout", "--model", str(tiny_policy_folder), "--output", str(attempts), *rollout_args)
    frame = pd.read_parquet(attempts)
    assert list(frame.columns) == ATTEMPT_COLUMNS
    assert first["attempts"] == len(frame)
    assert set(frame.groupby("problem_id")["sample"].nunique()) == {4}
    assert 0.0 <= first["v@1"] <= first["v@3"] <= 1.0
    saved = json.loads((tmp_path / "attempts.config.json").read_text())  # the resolved config beside it
    assert saved["rollout"]["num_attempts"] == 3 and saved["rollout"]["sampling"]["max_new_tokens"] == 2

    trained = tmp_path / "round1"
    metrics = run_calgrpo(
        "train",
        "--attempts",
        str(attempts),
        "--model",
        str(tiny_policy_folder),
        "--output",
        str(trained),
        "--train.learning-rate",
        "1e-2",
        "--threads",
        "1",
    )
    assert metrics["train/step"] == 1
    assert is_complete(trained)

    again = run_calgrpo(
        "rollout",
        "--model",
        str(trained / "model"),
        "--output",
        str(tmp_path / "a2.parquet"),
        "--policy-version",
        "1",
        *rollout_args,
    )
    assert again["attempts"] > 0
    assert set(pd.read_parquet(tmp_path / "a2.parquet")["policy_version"]) == {1}

    second = run_calgrpo(
        "train",
        "--attempts",
        str(tmp_path / "a2.parquet"),
        "--model",
        str(trained / "model"),
        "--output",
        str(tmp_path / "round2"),
        "--resume-from",
        str(trained),
        "--threads",
        "1",
    )
    assert second["train/step"] == 2  # the optimizer state and step carried over
