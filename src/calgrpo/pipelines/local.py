"""``calgrpo pipeline run-local``: the train pipeline on this machine with kfp.local.

Components run as subprocesses of this Python (kfp.local's SubprocessRunner, no containers); the
Kubernetes settings are cluster-only and ignored here. An s3:// registry with no S3 configured
gets an embedded SeaweedFS server for the duration of the run (its data stays under the root).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calgrpo.errors import check_ranges


@dataclass(frozen=True)
class RunLocalConfig:
    """Run the train pipeline locally (kfp.local), by default on generated guess problems and a tiny model."""

    root: Path = Path("runs/kfp")
    """Pipeline root: artifacts of every task, the generated dataset, the embedded S3's data."""
    dataset_uri: str | None = None
    """Dataset to ingest; default: 128 generated guess problems (N = 8) in the root."""
    dataset_format: str = "jsonl"
    """Its --format for ingest."""
    model_uri: str = "tiny:llama"
    """Initial policy."""
    baseline_uri: str = ""
    """Model the final one is evaluated against (empty: no comparison)."""
    registry: str = "s3://calgrpo/registry"
    """Model registry for the promotion step (empty: skip promotion)."""
    rounds: int = 2
    """Rollout -> verify -> train rounds."""
    num_attempts: int = 3
    """K."""
    group_size: int = 8
    """G."""
    max_new_tokens: int = 1
    """Attempt length (0: the task's own budget)."""
    learning_rate: float = 1e-3
    """Learning rate of each round's training."""
    eval_samples: int = 4
    """Evaluation episodes per problem."""
    promote_first: bool = True
    """Promote without a baseline when the registry is empty."""

    def __post_init__(self) -> None:
        check_ranges("run-local", self, {"rounds": (self.rounds >= 1, ">= 1")})


def run_local(config: RunLocalConfig) -> dict[str, Any]:
    """Run the pipeline; returns where things went and the registry's current version."""
    from kfp import local

    from calgrpo.evaluation.promotion import current_version
    from calgrpo.pipelines.definitions import build_train_pipeline
    from calgrpo.storage.embedded import s3_for
    from calgrpo.tasks import get_task

    root = Path(config.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    dataset = config.dataset_uri
    if dataset is None:
        problems = get_task("guess", num_values=8).generate(128, seed=0)
        dataset = str(root / "problems.jsonl")
        Path(dataset).write_text("".join(json.dumps({**p.to_row(), "meta": p.meta}) + "\n" for p in problems))
    started = time.perf_counter()
    with s3_for(config.registry or str(root), root / "s3") as server:
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "artifacts"))
        with contextlib.redirect_stdout(sys.stderr):  # kfp.local logs every task; stdout is for results
            build_train_pipeline(config.rounds)(
            dataset_uri=dataset, dataset_format=config.dataset_format, model_uri=config.model_uri,
            baseline_uri=config.baseline_uri,
            registry=config.registry, num_attempts=config.num_attempts, group_size=config.group_size,
            max_new_tokens=config.max_new_tokens, learning_rate=config.learning_rate, eval_fraction=0.25,
            eval_samples=config.eval_samples, promote_first=config.promote_first,
            )  # fmt: skip
        current = current_version(config.registry, "policy") if config.registry else None
    return {
        "elapsed_s": round(time.perf_counter() - started, 2),
        "artifacts": str(root / "artifacts"),
        "registry": config.registry,
        "embedded_s3": server.endpoint if server is not None else None,
        "current": current,
    }
