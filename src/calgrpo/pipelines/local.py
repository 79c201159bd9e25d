"""``calgrpo pipeline run-local``: the train or evaluate pipeline on this machine with kfp.local.

Components run as subprocesses of this Python (kfp.local's SubprocessRunner, no containers); the
Kubernetes settings are cluster-only and ignored here. With no S3 configured, an s3:// registry or
model gets an embedded SeaweedFS server for the duration of the run, its data kept under the root,
so a later run-local with the same root reads the models an earlier one promoted. kfp.local's own
output (every task's logs and outputs) goes to ROOT/run-local.log; the terminal gets one line per
task (all of it with --verbose).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from calgrpo.errors import CalgrpoError
from calgrpo.pipelines.config import PipelineConfig
from calgrpo.trackers import ROUND_MARKER


@dataclass(frozen=True)
class RunLocalConfig(PipelineConfig):
    """Run a pipeline locally (kfp.local): the train pipeline with the same config as ``calgrpo
    learn`` (by default a tiny model on the guess task), or the evaluate pipeline."""

    pipeline: Literal["train", "evaluate"] = "train"
    """Which pipeline to run: ``train`` (rounds, evaluate, promote) or ``evaluate`` (--model against
    --baseline on the dataset, or on the synthetic task's evaluation problems)."""
    root: Path = Path("runs/kfp")
    """Pipeline root: artifacts of every task, the log, the embedded S3's data."""
    verbose: bool = False
    """Show kfp.local's full output (every task's logs) instead of one line per task."""


def _evaluation_dataset(config: RunLocalConfig) -> str:
    """The evaluate pipeline's dataset: the configured one, or the synthetic task's evaluation
    problems written as JSONL (ingest's ``jsonl`` format)."""
    if config.dataset is not None:
        return config.dataset
    from calgrpo.run_config import eval_problems, prepare_problems

    folder = prepare_problems(config, config.root / "generated")
    path = config.root / "generated" / "eval.jsonl"
    path.write_text("".join(json.dumps({**p.to_row(), "meta": p.meta}) + "\n" for p in eval_problems(folder)))
    return str(path)


def _run_pipeline(config: RunLocalConfig):
    """Run the chosen pipeline in kfp.local (already initialised); returns kfp.local's task."""
    from calgrpo.pipelines.config import pipeline_config_json
    from calgrpo.pipelines.definitions import build_train_pipeline, evaluate_pipeline

    if config.pipeline == "evaluate":
        model = config.model
        if model.startswith("tiny:"):
            from calgrpo.run_config import initial_model, prepare_problems

            problems = prepare_problems(config, config.root / "generated")
            model = initial_model(config, problems, config.root / f"initial-{model.removeprefix('tiny:')}")
        dataset_format = config.dataset_format if config.dataset is not None else "jsonl"
        return evaluate_pipeline(
            dataset_uri=_evaluation_dataset(config), dataset_format=dataset_format, model_uri=model,
            baseline_uri=config.baseline, num_attempts=config.rollout.num_attempts,
            samples=config.eval_samples, max_new_tokens=config.rollout.sampling.max_new_tokens or 0,
            seed=config.seed,
        )  # fmt: skip
    pipeline = as_pipeline_config(config)
    return build_train_pipeline(pipeline)(config=pipeline_config_json(pipeline))


def _kfp_local_safe(uri: str | None, root: Path) -> str | None:
    """``uri``, or for a local file or folder whose path contains "python3" a link to it under ROOT:
    kfp.local's subprocess runner replaces "python3" in every argument of a task with its Python's
    path, parameter values included, so such a path (any file inside a virtual environment's
    site-packages, e.g. the packaged GGUF model) would reach the task mangled."""
    import hashlib

    if not uri or "python3" not in uri or not Path(uri).exists():
        return uri
    link = root / "inputs" / (hashlib.sha256(uri.encode()).hexdigest()[:12] + Path(uri).suffix)
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(Path(uri).resolve())
    return str(link)


def as_pipeline_config(config: PipelineConfig) -> PipelineConfig:
    """The PipelineConfig part of a command's config that extends it (its own fields dropped)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(PipelineConfig)}
    return PipelineConfig(**{name: getattr(config, name) for name in names})


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


def best_possible_v_at_k(config: PipelineConfig, num_attempts: int) -> list[float] | None:
    """V@1..V@K of the best policy, for a synthetic task that can compute it quickly (None otherwise):
    how far the trained model got."""
    if config.dataset is not None:
        return None
    best = getattr(config.synthetic_task(), "best_v_at_k", None)
    curve = None if best is None else best(num_attempts)
    return None if curve is None else [round(v, 4) for v in curve]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_EVENT = re.compile(r"Task '([^']+)' finished with status (\w+)")
_ROUND_TASK = re.compile(r"(rollout|merge-attempts|verify|train|train-on-trainjob)(?:-(\d+))?")
"""A task of the train pipeline's rounds; kfp.local numbers the n-th one of a component ``name-n``."""


class TaskLines(io.TextIOBase):
    """Where kfp.local writes: everything to the log, and to ``echo`` one line per finished task,
    except that a round's rollout, merge and verify tasks show only as the line of its train task
    (the round's end) unless they fail."""

    def __init__(self, log, echo, verbose: bool, rounds: int = 0):
        self.log, self.echo, self.verbose, self.rounds = log, echo, verbose, rounds
        self.started = time.perf_counter()
        self.pending = ""
        self.round_numbers = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.verbose:
            self.echo.write(text)
            return len(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            plain = _ANSI.sub("", line)
            if ROUND_MARKER in plain:  # the train task's numbers, shown on its round's line
                self.round_numbers = plain.split(ROUND_MARKER, 1)[1].strip()
            match = _TASK_EVENT.search(plain)
            if match:
                self._task_line(match.group(1), match.group(2).lower())
        return len(text)

    def _task_line(self, task: str, status: str) -> None:
        label = task
        in_round = _ROUND_TASK.fullmatch(task) if self.rounds else None
        if in_round is not None and status == "success":
            if not in_round.group(1).startswith("train"):
                return
            label = f"round {int(in_round.group(2) or 1)}/{self.rounds} (rollout, verify, train)"
            if self.round_numbers:  # "round r/R  V@K ...  loss ...": the numbers say which round
                label, self.round_numbers = self.round_numbers, ""
        elapsed = time.perf_counter() - self.started
        self.echo.write(f"  [{elapsed:6.0f} s] {label:<40} {status}\n")
        self.echo.flush()

    def flush(self) -> None:
        self.log.flush()
        self.echo.flush()


def run_local(config: RunLocalConfig) -> dict[str, Any]:
    """Run the pipeline; returns V@K (before and after), where the report and artifacts are, the promotion."""
    import dataclasses

    from kfp import local

    from calgrpo.evaluation.promotion import current_version
    from calgrpo.storage.core import is_s3
    from calgrpo.storage.embedded import s3_for

    config = dataclasses.replace(config, root=Path(config.root).resolve())
    config.root.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, **{
        name: _kfp_local_safe(getattr(config, name), config.root) for name in ("model", "baseline", "dataset")
    })  # fmt: skip
    registry = config.registry if config.pipeline == "train" else ""
    # One embedded server serves every s3:// URI of the run (a registry, or a model promoted earlier).
    uris = (registry, config.model, config.baseline, config.dataset or "")
    s3_uri = next((uri for uri in uris if is_s3(uri)), "")
    log_path = config.root / "run-local.log"
    started = time.perf_counter()
    print(f"calgrpo: the {config.pipeline} pipeline in kfp.local; full log: {log_path}", file=sys.stderr)
    with s3_for(s3_uri, config.root / "s3") as server, open(log_path, "w") as log:
        before = current_version(registry, config.model_name) if registry else None
        artifacts = str(config.root / "artifacts")
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=artifacts)
        # kfp.local prints every task's logs on stdout: they go to the log, a line a task to stderr.
        lines = TaskLines(log, sys.stderr, config.verbose, config.rounds if config.pipeline == "train" else 0)
        with contextlib.redirect_stdout(lines), warnings.catch_warnings():
            # kfp.local warns, for every task, that cluster settings and images do nothing here.
            warnings.showwarning = lambda message, category, *_, **__: lines.write(
                f"{category.__name__}: {message}\n"
            )
            try:
                results = _run_pipeline(config).output  # the evaluation folder
            except RuntimeError as failure:  # kfp.local: "Pipeline ... finished with status FAILURE"
                reason = _ANSI.sub("", str(failure)).rstrip(". ")
                raise CalgrpoError(f"{reason}; the failing task's output is in {log_path}") from None
        current = current_version(registry, config.model_name) if registry else None
    evaluation = summarise_evaluation(results.path)
    return {
        "pipeline": config.pipeline,
        "elapsed_s": round(time.perf_counter() - started, 2),
        **evaluation,
        "optimum_v@k": best_possible_v_at_k(config, len(evaluation["v@k"])),
        "artifacts": str(config.root / "artifacts"),
        "log": str(log_path),
        "registry": registry or None,
        "promoted": current is not None and current != before,
        "embedded_s3": server.endpoint if server is not None else None,
        "current": current,
    }
