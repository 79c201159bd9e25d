"""`calgrpo learn` end to end: summary, metrics, and a killed run resumed to bitwise-identical weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calgrpo.manifest import sha256_file

TINY_RUN = [
    "--rounds", "12", "--prompts-per-round", "4", "--task-options", "num_values", "8",
    "--rollout.num-attempts", "3", "--rollout.group-size", "4", "--rollout.sampling.max-new-tokens", "2",
    "--tiny.hidden-size", "32", "--tiny.intermediate-size", "64",
    "--train.ppo-epochs", "2", "--train.minibatches", "2",
    "--eval-problems", "8", "--eval-every", "4", "--checkpoint-every", "2",
    "--threads", "1", "--no-show-progress", "--json",
]  # fmt: skip


def _learn(output: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "calgrpo.cli", "learn", "--output", str(output), *TINY_RUN, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _weights_hash(output: Path) -> str:
    return sha256_file(output / "model" / "model.safetensors")


def _round_rows(output: Path) -> list[dict]:
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return [
        {k: v for k, v in row.items() if not k.startswith("time/") and k != "train/tokens_per_s"}
        for row in rows
    ]


@pytest.mark.slow
def test_learn_killed_and_resumed_matches_uninterrupted_run_bitwise(tmp_path) -> None:
    straight = _learn(tmp_path / "straight")
    out, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err
    summary = json.loads(out)
    assert set(summary["before"]) >= {"eval/v@1", "eval/v@3", "eval/success_after_failed_first"}
    assert summary["optimizer_steps"] == 12 * 2 * 2

    interrupted = _learn(tmp_path / "interrupted")
    first_checkpoint = tmp_path / "interrupted" / "checkpoints" / "round_000002" / "manifest.json"
    deadline = time.monotonic() + 300
    while not first_checkpoint.exists() and interrupted.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    interrupted.send_signal(signal.SIGKILL)
    interrupted.communicate(timeout=60)
    assert interrupted.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "interrupted" / "model").exists()

    resumed = _learn(tmp_path / "interrupted", "--resume")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resumed from" in err
    assert _weights_hash(tmp_path / "interrupted") == _weights_hash(tmp_path / "straight")
    assert _round_rows(tmp_path / "interrupted") == _round_rows(tmp_path / "straight")


def test_learn_rejects_mismatched_temperatures(tmp_path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "calgrpo.cli",
            "learn",
            "--output",
            str(tmp_path),
            "--train.temperature",
            "0.7",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert result.returncode == 2
    assert "must equal --rollout.sampling.temperature" in result.stderr


def test_learn_publishes_to_an_embedded_s3_when_none_is_configured(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "calgrpo.cli",
            "learn",
            "--output",
            str(tmp_path / "run"),
            *TINY_RUN,
            "--rounds",
            "2",
            "--checkpoint-every",
            "0",
            "--publish",
            "s3://calgrpo/models/guess",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**env, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    published = json.loads(result.stdout)["published"]
    assert published["uri"] == "s3://calgrpo/models/guess" and published["embedded_s3"].startswith(
        "http://127.0.0.1:"
    )
    # The data outlives the server: serve it again (new credentials) and load the model from it.
    from calgrpo.models.loading import load_policy
    from calgrpo.storage.embedded import s3_for

    with s3_for("s3://calgrpo/models/guess", tmp_path / "run" / "s3") as server:
        assert server is not None
        policy = load_policy("s3://calgrpo/models/guess", cache_dir=tmp_path / "cache")
    assert policy.model.config.hidden_size == 32
