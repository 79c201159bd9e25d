"""Resuming and restarting ``learn`` runs (issue 15, item 7): two runs never mix, a changed
configuration is named and refused, a run without a verifying checkpoint is left alone, and a torn
last metrics line (a kill mid-write) does not stop a resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from calgrpo.errors import ConfigError
from calgrpo.learn import LearnConfig, run_learn
from calgrpo.manifest import MANIFEST
from calgrpo.models.config import TinyModelConfig
from calgrpo.rollout.config import RolloutConfig, SamplingParams
from calgrpo.train.config import TrainConfig


def _config(output: Path, **changes) -> LearnConfig:
    base = LearnConfig(
        output=output, rounds=2, prompts_per_round=2, task_options={"num_values": 8}, eval_problems=4, checkpoint_every=1,
        rollout=RolloutConfig(num_attempts=2, group_size=2, sampling=SamplingParams(max_new_tokens=2)),
        tiny=TinyModelConfig(hidden_size=32, intermediate_size=64), threads=1, show_progress=False, json=True,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("learn") / "run"
    run_learn(_config(output))
    return output


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


def test_resume_with_a_changed_config_names_the_fields(finished_run, tmp_path) -> None:
    output = _copy(finished_run, tmp_path)
    changed = _config(output, resume=True, seed=1, train=TrainConfig(learning_rate=5e-3))
    with pytest.raises(ConfigError, match=r"seed: 0 -> 1.*|train\.learning_rate") as caught:
        run_learn(changed)
    assert "seed: 0 -> 1" in str(caught.value) and "train.learning_rate" in str(caught.value)


def test_resume_with_the_same_config_and_a_torn_metrics_line(finished_run, tmp_path) -> None:
    output = _copy(finished_run, tmp_path)
    with open(output / "metrics.jsonl", "a") as handle:
        handle.write('{"round": 3, "train/lo')  # killed mid-write
    summary = run_learn(_config(output, resume=True, threads=2))  # threads may change on resume
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert summary["optimizer_steps"] > 0 and all(row["round"] <= 2 for row in rows)
    assert rows[-1].get("final")  # the final evaluation was redone after the torn line


def test_resume_without_a_verifying_checkpoint_changes_nothing(finished_run, tmp_path) -> None:
    output = _copy(finished_run, tmp_path)
    for manifest in (output / "checkpoints").glob(f"round_*/{MANIFEST}"):
        manifest.write_text("{}")
    before = (output / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match="no checkpoint .* verifies"):
        run_learn(_config(output, resume=True))
    assert (output / "metrics.jsonl").read_text() == before  # not deleted, not restarted


def test_a_new_run_over_an_earlier_one_needs_overwrite(finished_run, tmp_path) -> None:
    output = _copy(finished_run, tmp_path)
    with pytest.raises(ConfigError, match="holds an earlier run"):
        run_learn(_config(output))
    run_learn(_config(output, overwrite=True, rounds=1))
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert max(row["round"] for row in rows) == 1  # the earlier run's rounds are gone
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["round_000001"]
