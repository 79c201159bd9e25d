"""Data-parallel training under torchrun on CPU (gloo): same global batch -> same weights, any world size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from calgrpo.manifest import is_complete
from tests.helpers import run_calgrpo

TRAIN = [
    "--train.learning-rate",
    "3e-3",
    "--train.minibatches",
    "2",
    "--train.ppo-epochs",
    "2",
    "--train.micro-batch-size",
    "3",
    "--train.logprob-chunk-tokens",
    "5",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def attempts(tmp_path_factory, tiny_policy_folder) -> Path:
    """A rollout of 8 guess problems x G = 4 x K = 3 by the tiny policy."""
    folder = tmp_path_factory.mktemp("distributed")
    run_calgrpo("problems", "--output", str(folder / "problems.parquet"), "--num-problems", "8", "--task-options", "num_values", "8")
    run_calgrpo(
        "rollout",
        "--problems",
        str(folder / "problems.parquet"),
        "--model",
        str(tiny_policy_folder),
        "--output",
        str(folder / "attempts.parquet"),
        "--rollout.num-attempts",
        "3",
        "--rollout.group-size",
        "4",
        "--rollout.sampling.max-new-tokens",
        "2",
        "--seed",
        "1",
    )
    return folder / "attempts.parquet"


def _train(attempts: Path, model: Path, output: Path, *extra: str, processes: int = 1) -> dict:
    return run_calgrpo(
        "train",
        "--attempts",
        str(attempts),
        "--model",
        str(model),
        "--output",
        str(output),
        *TRAIN,
        *extra,
        processes=processes,
    )


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model" / "model.safetensors")


def _max_difference(a: Path, b: Path) -> float:
    first, second = _weights(a), _weights(b)
    assert first.keys() == second.keys()
    return max(float((first[k] - second[k]).abs().max()) for k in first)


def test_two_ranks_match_one_process_with_ddp_and_fsdp(attempts, tiny_policy_folder, tmp_path) -> None:
    single = _train(attempts, tiny_policy_folder, tmp_path / "one")
    ddp = _train(attempts, tiny_policy_folder, tmp_path / "ddp", "--train.strategy", "ddp", processes=2)
    fsdp = _train(attempts, tiny_policy_folder, tmp_path / "fsdp", "--train.strategy", "fsdp", processes=2)
    for folder in ("one", "ddp", "fsdp"):
        assert is_complete(tmp_path / folder)
    initial = load_file(Path(tiny_policy_folder) / "model.safetensors")
    moved = max(float((w - initial[k]).abs().max()) for k, w in _weights(tmp_path / "one").items())
    assert moved > 1e-3  # training changed the weights, so agreement below is not trivial
    for strategy in ("ddp", "fsdp"):
        difference = _max_difference(tmp_path / "one", tmp_path / strategy)
        assert difference < 2e-5, (strategy, difference)
    for metrics in (ddp, fsdp):  # metrics are reduced over ranks, not rank 0's share
        assert metrics["train/step"] == single["train/step"] == 4
        assert metrics["train/loss"] == pytest.approx(single["train/loss"], abs=1e-5)
        assert metrics["train/grad_norm"] == pytest.approx(single["train/grad_norm"], rel=1e-4)


def test_sharded_state_resumes_on_another_world_size(attempts, tiny_policy_folder, tmp_path) -> None:
    """Round 1 on 2 FSDP ranks, round 2 on 1 process == both rounds on 1 process."""
    _train(attempts, tiny_policy_folder, tmp_path / "r1-two", "--train.strategy", "fsdp", processes=2)
    _train(attempts, tiny_policy_folder, tmp_path / "r1-one")
    difference = _max_difference(tmp_path / "r1-two", tmp_path / "r1-one")
    assert difference < 2e-5, difference
    resumed = _train(
        attempts,
        tmp_path / "r1-two" / "model",
        tmp_path / "r2-from-two",
        "--resume-from",
        str(tmp_path / "r1-two"),
        "--off-policy",  # round 1's attempts again, now for round 1's model
    )
    straight = _train(
        attempts,
        tmp_path / "r1-one" / "model",
        tmp_path / "r2-one",
        "--resume-from",
        str(tmp_path / "r1-one"),
        "--off-policy",
    )
    assert resumed["train/step"] == straight["train/step"] == 8  # step and AdamW moments carried over
    difference = _max_difference(tmp_path / "r2-from-two", tmp_path / "r2-one")
    assert difference < 5e-5, difference


def _error_lines(stderr: str) -> str:
    """What the ranks said about their failure (torchrun's own traceback is in the tail, not the cause)."""
    words = ("error", "terminate", "what()", "abort", "exception", "signal")
    lines = [line for line in stderr.splitlines() if any(word in line.lower() for word in words)]
    return "\n".join(lines)[:6000] + "\n...\n" + stderr[-2000:]


class LocalCluster:
    """Stands in for Kubernetes: "creating" the TrainJob runs its nodes' command here (one node of
    2 processes under torchrun, gloo), and its status reports how that ended."""

    def __init__(self) -> None:
        self.manifests: list[dict] = []
        self.result: subprocess.CompletedProcess | None = None
        self.deleted: list[str] = []

    def create(self, manifest: dict) -> None:
        self.manifests.append(manifest)
        command = manifest["spec"]["trainer"]["command"]
        self.result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )

    def status(self, namespace: str, name: str) -> dict:
        ok = self.result.returncode == 0
        condition = {
            "type": "Complete" if ok else "Failed",
            "status": "True",
            "reason": "JobsCompleted" if ok else "JobFailed",
            "message": _error_lines(self.result.stderr),
        }
        return {"conditions": [condition]}

    def new_logs(self, namespace: str, name: str, seen: dict) -> list[str]:
        return []

    def delete(self, namespace: str, name: str) -> None:
        self.deleted.append(name)


def test_a_trainjob_round_through_s3_matches_training_in_the_task(
    attempts, tiny_policy_folder, tmp_path, s3_env
) -> None:
    """The train component's multi-node path: inputs staged on (real, embedded) S3, the job's
    torchrun ranks read them from there and publish the output, which comes back as the new model."""
    from calgrpo.train.stage import TrainStageConfig
    from calgrpo.train.trainjob import TrainJobRequest, train_on_cluster

    verdicts = tmp_path / "verdicts.parquet"
    run_calgrpo(
        "verify",
        "--problems",
        str(attempts.parent / "problems.parquet"),
        "--attempts",
        str(attempts),
        "--output",
        str(verdicts),
    )
    cluster = LocalCluster()
    request = TrainJobRequest(
        name="calgrpo-train-r1-test",
        namespace="ns",
        image="img",
        command=["x"],
        num_nodes=1,
        procs_per_node=2,
    )
    config = TrainStageConfig(attempts=str(attempts), verdicts=str(verdicts), model=str(tiny_policy_folder),
                              output=tmp_path / "out", train=_settings("fsdp"), device="cpu")  # fmt: skip
    metrics = train_on_cluster(
        config,
        staging=f"{s3_env}/staging",
        request=request,
        jobs=cluster,
        node_output=str(tmp_path / "node"),
        poll_s=0,
        launcher=(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"),
    )
    assert cluster.result.returncode == 0, cluster.result.stderr[-3000:]
    assert cluster.deleted == ["calgrpo-train-r1-test"] and metrics["train/step"] == 4
    command = cluster.manifests[0]["spec"]["trainer"]["command"]
    assert command[-3:-1] == ["-m", "calgrpo.train.stage"] and command[-1].startswith(f"{s3_env}/staging/")
    local = _train(attempts, tiny_policy_folder, tmp_path / "local", "--verdicts", str(verdicts))
    assert metrics["train/loss"] == pytest.approx(local["train/loss"], abs=1e-5)
    difference = _max_difference(tmp_path / "out", tmp_path / "local")
    assert difference < 2e-5, difference


def test_train_with_torchrun_runs_the_in_pod_multi_gpu_path(attempts, tiny_policy_folder, tmp_path) -> None:
    """What the train component does with several GPUs in its pod, here with 2 CPU ranks: the ranks
    receive the stage's config as JSON."""
    from calgrpo.train.launch import run_train
    from calgrpo.train.stage import TrainStageConfig

    verdicts = tmp_path / "verdicts.parquet"
    run_calgrpo("verify", "--problems", str(attempts.parent / "problems.parquet"), "--attempts", str(attempts),
                "--output", str(verdicts))  # fmt: skip
    config = TrainStageConfig(attempts=str(attempts), verdicts=str(verdicts), model=str(tiny_policy_folder),
                              output=tmp_path / "out", train=_settings("fsdp"), seed=7, device="cpu")  # fmt: skip
    metrics = run_train(config, processes=2)
    assert metrics["train/step"] == 4 and is_complete(tmp_path / "out")
    assert (tmp_path / "out" / "model" / "config.json").is_file()


def _settings(strategy: str):
    """TRAIN's settings as a TrainConfig."""
    from calgrpo.train.config import TrainConfig

    return TrainConfig(learning_rate=3e-3, minibatches=2, ppo_epochs=2, micro_batch_size=3, logprob_chunk_tokens=5,
                       strategy=strategy)  # fmt: skip
