"""Where a round's training runs: in the task's process (one device), under torchrun inside the task's
pod (several GPUs), or as a Kubeflow Trainer TrainJob (several nodes). All three run the same
``calgrpo train`` step with the same arguments, so they produce the same update."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from calgrpo.errors import CalgrpoError
from calgrpo.train.trainjob import TrainJobRequest

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def train_cli_args(
    *, method: str, learning_rate: float, ppo_epochs: int, minibatches: int, temperature: float,
    precision: str, seed: int, strategy: str = "fsdp",
) -> list[str]:  # fmt: skip
    """``calgrpo train`` options for one round (``seed``: the minibatch order's seed)."""
    return ["--train.method", method, "--train.learning-rate", repr(learning_rate),
            "--train.ppo-epochs", str(ppo_epochs), "--train.minibatches", str(minibatches),
            "--train.temperature", repr(temperature), "--train.precision", precision,
            "--train.strategy", strategy, "--seed", str(seed)]  # fmt: skip


def train_with_torchrun(*, attempts: str, verdicts: str, model: str, output: str, args: list[str],
                        processes: int) -> dict[str, Any]:  # fmt: skip
    """``calgrpo train`` on ``processes`` local ranks (this pod's GPUs); returns the round's metrics."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "calgrpo.cli", "train", "--attempts", attempts, "--verdicts", verdicts, "--model", model,
               "--output", output, *args]  # fmt: skip
    with tempfile.TemporaryFile("w+") as errors:
        # The metrics are read from the output's state.json; stdout carries nothing else we need.
        result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=errors, text=True, check=False)
        if result.returncode != 0:
            errors.seek(0)
            tail = errors.read()[-4000:]
            raise CalgrpoError(f"torchrun training failed (exit {result.returncode}):\n{tail}")
    return json.loads(Path(output, "state.json").read_text())["metrics"]


def request_from_task_config(task_config, *, name: str, image: str, num_nodes: int, procs_per_node: int,
                             namespace: str | None = None) -> TrainJobRequest:  # fmt: skip
    """A TrainJob request carrying what KFP passed through from the train task (resources per node,
    tolerations, node selector, environment such as the S3 credentials from their Secret)."""
    if namespace is None:
        namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    # command: a placeholder; train_on_cluster sets the real one, which depends on the staging paths.
    return TrainJobRequest(
        name=name, namespace=namespace, image=image, command=["calgrpo"], num_nodes=num_nodes,
        procs_per_node=procs_per_node, resources=task_config.resources or {}, env=task_config.env or [],
        node_selector=task_config.node_selector or {}, tolerations=task_config.tolerations or [],
    )  # fmt: skip
