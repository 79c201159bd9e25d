"""The subcommands of ``calgrpo``: one config dataclass and one handler each.

Configs are dataclasses whose field docstrings become ``--help``; handlers import torch and the
library only when they run, so that parsing stays fast. Each handler returns the exit code.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calgrpo.commands_infra import INFRA_COMMANDS
from calgrpo.errors import ConfigError
from calgrpo.evaluation.promotion import PromoteConfig
from calgrpo.evaluation.stage import EvaluateConfig
from calgrpo.ingest.pipeline import IngestConfig
from calgrpo.learn import LearnConfig
from calgrpo.rollout.stage import RolloutStageConfig
from calgrpo.train.stage import TrainStageConfig
from calgrpo.verify import VerifyStageConfig

log = logging.getLogger("calgrpo")

ALL_METHODS = ("cal", "trajectory", "naive", "single", "cal_inclusive", "cal_singleton_zero")


@dataclass(frozen=True)
class CheckEstimatorConfig:
    """Prove the advantage estimators exact on DESIGN's tabular toy (z in {0,1,2}, K = 3).

    Enumerates every ordered group of G trajectories for each hidden z, takes the exact expectation
    of each method's gradient estimate, and compares it with the true gradient of V@3. Methods
    registered as unbiased must match to --tolerance; the others are reported with their bias.
    Exits 1 if an unbiased method is off.
    """

    methods: tuple[str, ...] = ALL_METHODS
    """Advantage methods to check (names in the advantage registry)."""
    group_size: int = 3
    """G, trajectories per group; all 15^G groups per z are enumerated, so 2..4."""
    tolerance: float = 1e-10
    """Largest relative error ||E[g_hat] - grad|| / ||grad|| accepted for an unbiased method."""
    json: bool = False
    """Print the result as one JSON object on stdout instead of a table."""
    debug: bool = False
    """Show tracebacks and debug logs."""

    def __post_init__(self) -> None:
        if not 2 <= self.group_size <= 4:
            raise ConfigError(
                f"--group-size must be in 2..4 (15^G groups are enumerated), got {self.group_size}"
            )
        if not self.tolerance > 0:
            raise ConfigError(f"--tolerance must be > 0, got {self.tolerance}")
        if not self.methods:
            raise ConfigError("--methods needs at least one method name")


def run_check_estimator(config: CheckEstimatorConfig) -> int:
    """Handler of ``calgrpo check-estimator``; returns the exit code."""
    from calgrpo.algorithms import ADVANTAGE_METHODS
    from calgrpo.toys.guessing import design_exact_check_toy
    from calgrpo.toys.tables import (
        cosine,
        exact_estimator_moments,
        relative_error,
        success_probability,
        true_gradient,
    )

    specs = [ADVANTAGE_METHODS.get(name) for name in config.methods]  # unknown names fail before work
    toy = design_exact_check_toy()
    truth = true_gradient(toy)
    rows = []
    for spec in specs:
        moments = exact_estimator_moments(toy, config.group_size, spec.name)
        error = relative_error(moments.mean, truth)
        ok = error <= config.tolerance if spec.unbiased else True
        rows.append(
            {
                "method": spec.name,
                "registered_unbiased": spec.unbiased,
                "relative_error": error,
                "cosine": cosine(moments.mean, truth),
                "total_variance": moments.total_variance,
                "ok": ok,
            }
        )
    result = {
        "toy": toy.name,
        "group_size": config.group_size,
        "v_at_k": success_probability(toy),
        "grad_norm": float(truth.norm()),
        "methods": rows,
        "passed": all(r["ok"] for r in rows),
    }
    if config.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"toy {result['toy']}: V@3 = {result['v_at_k']:.6f}, ||grad|| = {result['grad_norm']:.6f}, "
            f"G = {config.group_size} (every group enumerated)"
        )
        print(f"{'method':<20}{'unbiased?':>10}{'rel. error':>13}{'cosine':>9}{'variance':>11}  verdict")
        for r in rows:
            verdict = "exact" if r["relative_error"] <= config.tolerance else "biased"
            if not r["ok"]:
                verdict = "FAILED (registered unbiased)"
            print(
                f"{r['method']:<20}{'yes' if r['registered_unbiased'] else 'no':>10}"
                f"{r['relative_error']:>13.3e}{r['cosine']:>9.4f}{r['total_variance']:>11.5f}  {verdict}"
            )
    return 0 if result["passed"] else 1


@dataclass(frozen=True)
class ProblemsCommand:
    """Generate a problems.parquet for a synthetic task (seeded)."""

    output: Path
    """Where to write problems.parquet."""
    task: str = "guess"
    """Synthetic task type (``guess``, ``codebreak``)."""
    task_options: dict[str, str] = field(default_factory=dict)
    """The task's options, e.g. ``--task-options num_values 8`` (docs/tasks.md)."""
    num_problems: int = 64
    """How many problems."""
    seed: int = 0
    """Generator seed."""
    id_prefix: str = ""
    """Problem ids are PREFIX-000000, PREFIX-000001, ... (default: the task's name)."""


def run_verify_command(config: VerifyStageConfig) -> int:
    from calgrpo.verify import verify_stage

    print(json.dumps(verify_stage(config)))
    return 0


def run_ingest(config: IngestConfig) -> int:
    from calgrpo.ingest.pipeline import ValidationFailed, ingest

    try:
        card = ingest(config)
    except ValidationFailed as failed:
        print(failed.report.to_text(), file=sys.stderr, end="")
        print(f"calgrpo: nothing was published at {config.output}", file=sys.stderr)
        return 1
    print(json.dumps(card))
    return 0


def run_evaluate(config: EvaluateConfig) -> int:
    from calgrpo.evaluation.stage import evaluate

    _set_threads(config.threads)
    metrics = evaluate(config)
    k = config.k
    curve = metrics["candidate"]["v@k"]
    line = {
        "v@k": curve["mean"][k - 1],
        "ci": [curve["low"][k - 1], curve["high"][k - 1]],
        "output": config.output,
    }
    if "difference" in metrics:
        line["difference"] = {key: metrics["difference"][key][k - 1] for key in ("mean", "low", "high")}
    print(json.dumps(line))
    return 0


def run_promote(config: PromoteConfig) -> int:
    from calgrpo.evaluation.promotion import promote

    decision = promote(config)
    print(json.dumps(decision))
    return 0


def run_problems(config: ProblemsCommand) -> int:
    from calgrpo.io import write_problems
    from calgrpo.tasks import synthetic_task

    task = synthetic_task(config.task, config.task_options)
    problems = task.generate(config.num_problems, config.seed, id_prefix=config.id_prefix or config.task)
    write_problems(problems, config.output)
    print(json.dumps({"problems": len(problems), "output": str(config.output)}))
    return 0


def run_rollout_command(config: RolloutStageConfig) -> int:
    from calgrpo.rollout.stage import rollout_stage

    print(json.dumps(rollout_stage(config)))
    return 0


def run_train_command(config: TrainStageConfig) -> int:
    from calgrpo.train.stage import train_stage

    metrics = train_stage(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(metrics))
    return 0


def run_learn_command(config: LearnConfig) -> int:
    from calgrpo.learn import run_learn

    _set_threads(config.threads)
    summary = run_learn(config)
    if config.json:
        print(json.dumps(summary, indent=2))
        return 0
    keys = [k for k in summary["before"] if k.startswith("eval/v@")]
    print(f"{'':<8}" + "".join(f"{k.removeprefix('eval/'):>8}" for k in keys))
    for label in ("before", "after"):
        print(f"{label:<8}" + "".join(f"{summary[label][k]:>8.3f}" for k in keys))
    print(f"final model: {summary['model']}")
    if summary.get("published"):
        published = summary["published"]
        where = f" (embedded S3, data in {config.output / 's3'})" if published["embedded_s3"] else ""
        print(f"published: {published['uri']}{where}")
    return 0


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


COMMANDS: dict[str, tuple[type, Callable[[Any], int]]] = {
    "check-estimator": (CheckEstimatorConfig, run_check_estimator),
    "ingest": (IngestConfig, run_ingest),
    "evaluate": (EvaluateConfig, run_evaluate),
    "promote": (PromoteConfig, run_promote),
    "problems": (ProblemsCommand, run_problems),
    "rollout": (RolloutStageConfig, run_rollout_command),
    "verify": (VerifyStageConfig, run_verify_command),
    "train": (TrainStageConfig, run_train_command),
    "learn": (LearnConfig, run_learn_command),
}
COMMANDS.update(INFRA_COMMANDS)
