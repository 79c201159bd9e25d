"""The calgrpo command: help, exit codes, JSON output (run as a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _calgrpo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "calgrpo.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "400"},  # keep tyro's error boxes on one line
    )


def test_cli_help_lists_subcommands() -> None:
    result = _calgrpo("--help")
    assert result.returncode == 0
    assert "check-estimator" in result.stdout


def test_cli_check_estimator_json_passes() -> None:
    result = _calgrpo("check-estimator", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True
    assert report["v_at_k"] == pytest.approx(0.755177, abs=5e-7)
    by_method = {row["method"]: row for row in report["methods"]}
    assert by_method["cal"]["relative_error"] < 1e-10
    assert by_method["naive"]["relative_error"] > 1.0


def test_cli_check_estimator_with_costs_checks_the_cost_aware_objective() -> None:
    result = _calgrpo("check-estimator", "--cost", "0.1", "--token-cost", "0.04", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["toy"] == "tabular_k3_giveup" and report["objective"] == "J = V@3 - E[cost]"
    by_method = {row["method"]: row for row in report["methods"]}
    assert by_method["cal"]["registered_unbiased"] and by_method["cal"]["relative_error"] < 1e-10
    assert by_method["trajectory"]["relative_error"] < 1e-10
    assert by_method["naive"]["relative_error"] > 0.1 and not by_method["naive"]["registered_unbiased"]
    assert _calgrpo("check-estimator", "--cost", "-1").returncode == 2


def test_cli_unknown_method_is_a_usage_error() -> None:
    result = _calgrpo("check-estimator", "--methods", "cal", "naiv")
    assert result.returncode == 2
    assert "Did you mean 'naive'" in result.stderr


def test_cli_out_of_range_option_is_a_usage_error() -> None:
    result = _calgrpo("check-estimator", "--group-size", "9")
    assert result.returncode == 2
    assert "--group-size must be in 2..4" in result.stderr + result.stdout


def test_cli_check_estimator_fails_when_tolerance_is_impossible() -> None:
    result = _calgrpo("check-estimator", "--methods", "cal", "--tolerance", "1e-30")
    assert result.returncode == 1
    assert "FAILED" in result.stdout


def test_python_dash_m_calgrpo_is_the_command() -> None:
    result = subprocess.run([sys.executable, "-m", "calgrpo", "check-estimator", "--json"], capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["passed"] is True


def test_every_command_takes_a_config_file_that_flags_override(tmp_path) -> None:
    from calgrpo.cli import parse
    from calgrpo.errors import ConfigError

    run = tmp_path / "run.yaml"
    run.write_text("model: tiny:llama\nrounds: 3\nrollout:\n  num_attempts: 4\n  sampling:\n    temperature: 0.7\n"
                   "train:\n  learning_rate: 1.0e-5\n  temperature: 0.7\n  pack_sequences: false\n"
                   "  lora_targets: [q_proj, v_proj]\n")  # fmt: skip
    config, _ = parse(["learn", "--config", str(run), "--rounds", "5", "--output", str(tmp_path / "out")])
    assert (config.rounds, config.rollout.num_attempts, config.rollout.sampling.temperature) == (5, 4, 0.7)
    assert config.train.learning_rate == 1e-5 and config.train.lora_targets == ("q_proj", "v_proj")
    (tmp_path / "local.yaml").write_text("rounds: 2\n")
    pipeline, _ = parse(["pipeline", "run-local", f"--config={tmp_path / 'local.yaml'}"])
    assert pipeline.rounds == 2
    # A mapping is merged key by key: the typed option wins, the file's others stay.
    (tmp_path / "task.yaml").write_text("task_options:\n  num_values: 16\n  hint_prob: 0.5\n")
    merged, _ = parse(["learn", "--config", str(tmp_path / "task.yaml"), "--task-options", "hint_prob", "0.9"])
    assert merged.task_options == {"num_values": "16", "hint_prob": "0.9"}
    assert merged.synthetic_task().options.hint_prob == 0.9
    (tmp_path / "bad.yaml").write_text("train:\n  learning_rat: 1.0\n")
    with pytest.raises(ConfigError, match="unknown setting train.learning_rat"):
        parse(["learn", "--config", str(tmp_path / "bad.yaml")])
    result = _calgrpo("learn", "--config", str(tmp_path / "bad.yaml"))
    assert result.returncode == 2 and "unknown setting train.learning_rat" in result.stderr
    assert "Traceback" not in result.stderr


def test_natural_mistakes_get_one_line_and_debug_a_traceback(tmp_path) -> None:
    for args, message in [
        (["train", "--attempts", str(tmp_path / "nope.parquet"), "--model", "m", "--output", str(tmp_path / "o")],
         f"no such file or folder: {tmp_path / 'nope.parquet'}"),
        (["verify", "--problems", str(tmp_path), "--attempts", "a.jsonl", "--output", "v.jsonl"],
         f"{tmp_path} is a folder without problems.parquet"),
    ]:  # fmt: skip
        result = _calgrpo(*args)
        assert result.returncode == 1 and f"calgrpo: error: {message}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        debugged = _calgrpo(*args, "--debug")  # every command takes --debug
        assert debugged.returncode == 1 and "Traceback" in debugged.stderr


def test_usage_mistakes_are_one_line_with_the_fix() -> None:
    for args, expected in [
        ((), "no command given: expected one of {check-estimator"),
        (("learn", "--roundz", "2"), "Unrecognized options: --roundz, 2; did you mean --rounds?"),
        (("learn", "--rounds", "x"), "Error parsing --rounds: invalid literal for int()"),
        (("ingest", "--format", "gsm9k", "--input", "x", "--output", "y"), "invalid choice 'gsm9k' for argument"),
        (("evaluate",), "missing --problems, --model, --output (required)"),
        (("learn", "--task-options", "num_value", "8"), "guess has no option 'num_value'; its options: num_values"),
    ]:  # fmt: skip
        result = subprocess.run([sys.executable, "-m", "calgrpo", *args], capture_output=True, text=True,
                                timeout=120, check=False, env={**os.environ, "COLUMNS": "60"})  # fmt: skip
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("calgrpo: error: ") and expected in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_problems_may_be_an_ingest_output_folder(tmp_path) -> None:
    import pandas as pd

    from calgrpo.io import write_problems
    from calgrpo.tasks import Problem

    (tmp_path / "dataset").mkdir()
    write_problems([Problem(id="g1", task="gsm8k", prompt="2+2?", answer="#### 4")],
                   tmp_path / "dataset" / "problems.parquet")  # fmt: skip
    pd.DataFrame({"problem_id": ["g1"], "sample": [0], "attempt": [1], "completion": ["#### 4"]}).to_parquet(
        tmp_path / "completions.parquet")  # fmt: skip
    result = _calgrpo("verify", "--problems", str(tmp_path / "dataset"), "--attempts",
                      str(tmp_path / "completions.parquet"), "--output", str(tmp_path / "v.parquet"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["per_task"]["gsm8k"]["pass_rate"] == 1.0
