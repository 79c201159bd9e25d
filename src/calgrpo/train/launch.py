"""Where a round's training runs: in the task's process (one device), under torchrun inside the task's
pod (several GPUs), or as a Kubeflow Trainer TrainJob (several nodes). All three run
:func:`calgrpo.train.stage.train_stage` on the same :class:`TrainStageConfig`, so they produce the
same update."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from calgrpo.configs import write_config
from calgrpo.errors import CalgrpoError
from calgrpo.train.stage import TrainStageConfig, train_stage
from calgrpo.train.trainjob import TrainJobRequest

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def run_train(config: TrainStageConfig, processes: int = 1) -> dict[str, Any]:
    """The train stage in this process (``processes`` <= 1) or under torchrun on ``processes`` local
    ranks (this pod's GPUs), which receive ``config`` as JSON; returns the round's metrics."""
    if processes <= 1:
        return train_stage(config)
    with tempfile.TemporaryDirectory(prefix="calgrpo-launch-") as folder:
        config_file = Path(folder, "train_config.json")
        write_config(config, config_file)
        ranks = f"--nproc-per-node={processes}"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", ranks,
                   "-m", "calgrpo.train.stage", str(config_file)]  # fmt: skip
        with tempfile.TemporaryFile("w+") as errors:
            # The metrics are read from the output's state.json; stdout carries nothing else we need.
            result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=errors, text=True, check=False)
            if result.returncode != 0:
                errors.seek(0)
                tail = errors.read()[-4000:]
                raise CalgrpoError(f"torchrun training failed (exit {result.returncode}):\n{tail}")
    return json.loads(Path(config.output, "state.json").read_text())["metrics"]


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
