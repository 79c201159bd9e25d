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
    With --cost or --token-cost the game gets a give-up action and answers of 1-3 tokens, and the
    target is the cost-aware objective J = V@3 - E[cost] (methods registered unbiased under costs
    must match grad J). Exits 1 if an unbiased method is off.
    """

    methods: tuple[str, ...] = ALL_METHODS
    """Advantage methods to check (names in the advantage registry)."""
    group_size: int = 3
    """G, trajectories per group; all 15^G groups per z are enumerated, so 2..4."""
    cost: float = 0.0
    """Cost of every attempt made (> 0: check the cost-aware objective J)."""
    token_cost: float = 0.0
    """Cost per generated token of an attempt (> 0: check J)."""
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
        _ = self.attempt_cost  # negative or non-finite costs fail here, before any work

    @property
    def attempt_cost(self):
        """The costs to check under, or None for plain V@3."""
        from calgrpo.algorithms.costs import AttemptCost

        cost = AttemptCost(per_attempt=self.cost, per_token=self.token_cost)
        return None if cost.free else cost


def run_check_estimator(config: CheckEstimatorConfig) -> int:
    """Handler of ``calgrpo check-estimator``; returns the exit code."""
    from calgrpo.algorithms import ADVANTAGE_METHODS
    from calgrpo.toys.guessing import design_exact_check_toy, design_give_up_toy
    from calgrpo.toys.tables import (
        cosine,
        exact_estimator_moments,
        objective,
        objective_gradient,
        relative_error,
        success_probability,
        true_gradient,
    )

    specs = [ADVANTAGE_METHODS.get(name) for name in config.methods]  # unknown names fail before work
    cost = config.attempt_cost
    if cost is None:
        toy = design_exact_check_toy()
        truth, value, objective_name = true_gradient(toy), success_probability(toy), "V@3"
    else:
        toy = design_give_up_toy()
        truth, value = objective_gradient(toy, cost), objective(toy, cost)
        objective_name = "J = V@3 - E[cost]"
    rows = []
    for spec in specs:
        if cost is not None and not spec.supports_costs:
            rows.append({"method": spec.name, "registered_unbiased": False, "relative_error": float("nan"),
                         "cosine": float("nan"), "total_variance": float("nan"), "ok": True})  # fmt: skip
            continue
        unbiased = spec.unbiased if cost is None else spec.unbiased_with_costs
        moments = exact_estimator_moments(toy, config.group_size, spec.name, cost=cost)
        error = relative_error(moments.mean, truth)
        ok = error <= config.tolerance if unbiased else True
        rows.append(
            {
                "method": spec.name,
                "registered_unbiased": unbiased,
                "relative_error": error,
                "cosine": cosine(moments.mean, truth),
                "total_variance": moments.total_variance,
                "ok": ok,
            }
        )
    result = {
        "toy": toy.name,
        "group_size": config.group_size,
        "objective": objective_name,
        "cost": {"per_attempt": config.cost, "per_token": config.token_cost},
        "v_at_k": success_probability(toy),
        "objective_value": value,
        "grad_norm": float(truth.norm()),
        "methods": rows,
        "passed": all(r["ok"] for r in rows),
    }
    if config.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"toy {result['toy']}: {objective_name} = {value:.6f}, ||grad|| = {result['grad_norm']:.6f}, "
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
