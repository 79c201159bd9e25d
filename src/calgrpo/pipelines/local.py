"""``calgrpo pipeline run-local``: the train or evaluate pipeline on this machine with kfp.local.

Components run as subprocesses of this Python (kfp.local's SubprocessRunner, no containers); the
Kubernetes settings are cluster-only and ignored here. With no S3 configured, an s3:// registry or
model gets an embedded SeaweedFS server for the duration of the run, its data kept under the root,
so a later run-local with the same root reads the models an earlier one promoted.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from calgrpo.errors import check_ranges

INITIAL = "initial"


@dataclass(frozen=True)
class RunLocalConfig:
    """Run a pipeline locally (kfp.local), by default training a tiny model on generated guess problems."""

    pipeline: Literal["train", "evaluate"] = "train"
    """Which pipeline to run: ``train`` (rounds, evaluate, promote) or ``evaluate`` (the model only)."""
    root: Path = Path("runs/kfp")
    """Pipeline root: artifacts of every task, the generated dataset, the embedded S3's data."""
    dataset_uri: str | None = None
    """Dataset to ingest; default: ``--problems`` generated guess problems in the root."""
    problems: int = 1024
    """Guess problems to generate when no dataset is given; ingest keeps the distinct (hint, answer)
    pairs, at most ``guess_values`` squared, and the train pipeline holds a quarter out for eval."""
    guess_values: int = 16
    """N of the generated guess problems (numbers 0..N-1 to guess)."""
    dataset_format: str = "jsonl"
    """Its --format for ingest."""
    model_uri: str = "tiny:llama"
    """Initial policy (train) or the model to evaluate (evaluate)."""
    baseline_uri: str = INITIAL
    """Model to compare with: ``initial`` (train: the starting model, for V@K before and after training;
    evaluate: none), a model URI, or empty (train: the registry's current model, as on a cluster)."""
    registry: str = "s3://calgrpo/registry"
    """Model registry for the promotion step (empty: skip promotion)."""
    rounds: int = 8
    """Rollout -> verify -> train rounds."""
    num_attempts: int = 4
    """K."""
    group_size: int = 8
    """G."""
    rollout_shards: int = 1
    """Rollout tasks per round (the fan-out; here they run one after another)."""
    max_new_tokens: int = 1
    """Attempt length (0: the task's own budget)."""
    learning_rate: float = 3e-3
    """Learning rate of each round's training."""
    ppo_epochs: int = 2
    """Passes over each round's rollouts."""
    minibatches: int = 8
    """Optimizer steps per pass."""
    precision: str = "fp32"
    """Training precision: ``fp32`` (right for CPUs) or ``bf16`` (autocast; GPUs)."""
    eval_samples: int = 8
    """Evaluation episodes per problem."""
    seed: int = 0
    """Seed of every stage."""
    promote_first: bool = True
    """Promote without a baseline when the registry is empty."""

    def __post_init__(self) -> None:
        check_ranges("run-local", self, {
            "rounds": (self.rounds >= 1, ">= 1"), "problems": (self.problems >= 8, ">= 8"),
            "guess_values": (self.guess_values >= 2, ">= 2"),
        })  # fmt: skip


def _generated_problems(root: Path, count: int, num_values: int) -> str:
    from calgrpo.tasks import get_task

    problems = get_task("guess", num_values=num_values).generate(count, seed=0)
    path = root / "problems.jsonl"
    path.write_text("".join(json.dumps({**p.to_row(), "meta": p.meta}) + "\n" for p in problems))
    return str(path)


def _materialised(root: Path, model_uri: str) -> str:
    """tiny:<arch> built once into the root, so that the initial model can also be the baseline."""
    if not model_uri.startswith("tiny:"):
        return model_uri
    from calgrpo.models.tiny import save_tiny_from_uri

    folder = root / f"initial-{model_uri.removeprefix('tiny:')}"
    if not (folder / "config.json").is_file():
        save_tiny_from_uri(model_uri, folder)
    return str(folder)


def _run_pipeline(config: RunLocalConfig, dataset: str, model: str):
    """Run the chosen pipeline in kfp.local (already initialised); returns kfp.local's task."""
    from calgrpo.pipelines.definitions import build_train_pipeline, evaluate_pipeline

    common = dict(
        dataset_uri=dataset, dataset_format=config.dataset_format, model_uri=model,
        num_attempts=config.num_attempts, max_new_tokens=config.max_new_tokens, seed=config.seed,
    )  # fmt: skip
    if config.pipeline == "evaluate":
        baseline = "" if config.baseline_uri == INITIAL else config.baseline_uri
        return evaluate_pipeline(**common, baseline_uri=baseline, samples=config.eval_samples)
    return build_train_pipeline(config.rounds)(
        **common, baseline_uri=model if config.baseline_uri == INITIAL else config.baseline_uri,
        registry=config.registry, group_size=config.group_size, rollout_shards=config.rollout_shards,
        learning_rate=config.learning_rate, ppo_epochs=config.ppo_epochs, minibatches=config.minibatches,
        precision=config.precision, eval_fraction=0.25, eval_samples=config.eval_samples,
        promote_first=config.promote_first,
    )  # fmt: skip


def summarise_evaluation(folder: str | Path) -> dict[str, Any]:
    """V@1..V@K of the model (and its baseline, and the paired difference at K) from metrics.json."""
    metrics = json.loads(Path(folder, "metrics.json").read_text())
    k = metrics["num_attempts"]
    summary: dict[str, Any] = {"v@k": [round(v, 4) for v in metrics["candidate"]["v@k"]["mean"]]}
    if metrics.get("baseline"):
        summary["baseline_v@k"] = [round(v, 4) for v in metrics["baseline"]["v@k"]["mean"]]
        summary[f"difference_v@{k}"] = {
            key: round(metrics["difference"][key][-1], 4) for key in ("mean", "low", "high")
        }
    summary["report"] = str(Path(folder, "report.html"))
    return summary


def run_local(config: RunLocalConfig) -> dict[str, Any]:
    """Run the pipeline; returns V@K (before and after), where the report and artifacts are, the promotion."""
    from kfp import local

    from calgrpo.evaluation.promotion import current_version
    from calgrpo.storage.core import is_s3
    from calgrpo.storage.embedded import s3_for

    root = Path(config.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    dataset = config.dataset_uri or _generated_problems(root, config.problems, config.guess_values)
    model = _materialised(root, config.model_uri)
    registry = config.registry if config.pipeline == "train" else ""
    # One embedded server serves every s3:// URI of the run (a registry, or a model promoted earlier).
    s3_uri = next((uri for uri in (registry, model, config.baseline_uri, dataset) if is_s3(uri)), "")
    started = time.perf_counter()
    with s3_for(s3_uri, root / "s3") as server:
        before = current_version(registry, "policy") if registry else None
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "artifacts"))
        with contextlib.redirect_stdout(sys.stderr):  # kfp.local logs every task; stdout is for results
            results = _run_pipeline(config, dataset, model).output  # the evaluation folder
        current = current_version(registry, "policy") if registry else None
    return {
        "pipeline": config.pipeline,
        "elapsed_s": round(time.perf_counter() - started, 2),
        **summarise_evaluation(results.path),
        "artifacts": str(root / "artifacts"),
        "registry": registry or None,
        "promoted": current is not None and current != before,
        "embedded_s3": server.endpoint if server is not None else None,
        "current": current,
    }
