"""What each component of the train pipeline does, as plain functions over the pipeline's config.

A component body reads its ``config`` parameter (:func:`read_pipeline_config`) and calls one of
these with its artifacts' paths; these call the stage functions with the round's problems and
seeds from :mod:`calgrpo.run_config`, the same ones ``calgrpo learn`` uses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

from calgrpo.errors import ConfigError
from calgrpo.pipelines.config import PipelineConfig
from calgrpo.train.stage import TrainStageConfig

ROUND_PROBLEMS = "problems.parquet"
"""The round's problems, in every rollout shard's and the merged attempts' folder (verify reads them)."""


def prepare_problems_step(config: PipelineConfig, unrolled_rounds: int, folder: str) -> str:
    """The run's problems folder; returns the validation report's text. Refuses a config whose
    rounds differ from the rounds compiled into the pipeline (they would silently not all run)."""
    from calgrpo.run_config import prepare_problems

    if config.rounds != unrolled_rounds:
        raise ConfigError(
            f"config.rounds is {config.rounds} but this pipeline was compiled with {unrolled_rounds} "
            "rounds; compile it with the config (calgrpo pipeline compile --config FILE) or set "
            f"rounds: {unrolled_rounds}"
        )
    prepare_problems(config, folder)
    report = Path(folder, "validation.txt")
    if report.is_file():
        return report.read_text()
    return (f"{config.eval_problems} evaluation problems of the synthetic task {config.task!r}; each "
            f"round's {config.prompts_per_round} problems are generated afresh (seed {config.seed})\n")


def resolve_model_step(config: PipelineConfig, which: str) -> str:
    """The concrete URI of the ``model`` to start from or the ``baseline`` to compare with: a
    registry pointer resolved to its version; for an empty baseline the registry's current model
    ("" when nothing was promoted yet: the evaluation then compares with the initial model)."""
    from calgrpo.evaluation.promotion import current_version, resolve_pointer

    if which == "model":
        return resolve_pointer(config.model)
    if which != "baseline":
        raise ConfigError(f"resolve_model: which is 'model' or 'baseline', got {which!r}")
    if config.baseline:
        return resolve_pointer(config.baseline)
    current = current_version(config.registry, config.model_name) if config.registry else None
    return current["model"] if current else ""


def fetch_model_step(config: PipelineConfig, uri: str, problems: str, folder: str) -> None:
    """The initial policy as a model folder (tiny:* built as ``calgrpo learn`` builds it)."""
    from calgrpo.models.loading import load_policy
    from calgrpo.run_config import initial_model

    if uri.startswith("tiny:"):
        initial_model(dataclasses.replace(config, model=uri), problems, folder)
        return
    policy = load_policy(uri)
    policy.model.save_pretrained(folder)
    policy.tokenizer.save_pretrained(folder)


def rollout_step(
    config: PipelineConfig, round_index: int, shard_index: int, problems: str, model: str,
    policy_version: int, folder: str,
) -> dict[str, Any]:  # fmt: skip
    """Round ``round_index``'s problems (this shard of them) rolled out into ``folder``: the
    attempts, the round's problems (verify reads them) and which shard this is."""
    from calgrpo.io import write_problems
    from calgrpo.rollout.loop import shard_of
    from calgrpo.rollout.records import SHARD_FILE
    from calgrpo.rollout.stage import RolloutStageConfig, rollout_stage
    from calgrpo.run_config import rollout_seed, round_problems

    Path(folder).mkdir(parents=True, exist_ok=True)
    mine = shard_of(round_problems(config, problems, round_index), shard_index, config.rollout_shards)
    write_problems(mine, Path(folder, ROUND_PROBLEMS))
    result = rollout_stage(RolloutStageConfig(
        problems=str(Path(folder, ROUND_PROBLEMS)), model=model, output=Path(folder, "attempts.parquet"),
        rollout=config.rollout,
        seed=rollout_seed(config.seed, round_index, shard_index, config.rollout_shards),
        policy_version=policy_version, reuse_cache=config.reuse_cache, engine=config.rollout_engine,
        vllm=config.vllm,
    ))  # fmt: skip
    shard = {"shard_index": shard_index, "num_shards": config.rollout_shards}
    Path(folder, SHARD_FILE).write_text(json.dumps(shard))
    return result


def merge_step(shards: list[str], folder: str) -> int:
    """The round's shards as one attempts.parquet and problems.parquet, in shard order."""
    from calgrpo.io import read_problems, write_problems
    from calgrpo.rollout.records import merge_attempt_shards, write_attempts

    records = merge_attempt_shards(shards)
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_attempts(records, Path(folder, "attempts.parquet"))
    ordered = sorted(shards, key=lambda s: json.loads(Path(s, "shard.json").read_text())["shard_index"])
    if all(Path(s, ROUND_PROBLEMS).is_file() for s in ordered):
        write_problems([p for s in ordered for p in read_problems(Path(s, ROUND_PROBLEMS))],
                       Path(folder, ROUND_PROBLEMS))  # fmt: skip
    return len(records)


def attempts_table(artifact: str) -> Path:
    """The attempts table of an artifact: the file itself, or the one table file in its folder
    (attempts.parquet from the rollout, or another pipeline's .parquet/.jsonl)."""
    from calgrpo.errors import InvalidInputError
    from calgrpo.rollout.records import TABLE_FORMATS

    path = Path(artifact)
    if not path.is_dir():
        return path
    if (path / "attempts.parquet").is_file():
        return path / "attempts.parquet"
    tables = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in TABLE_FORMATS)
    if len(tables) != 1:
        found = len(tables)
        raise InvalidInputError(f"{artifact}: expected one .parquet or .jsonl attempts table, found {found}")
    return tables[0]


def train_round_config(
    config: PipelineConfig, round_index: int, *, attempts: str, verdicts: str | None, model: str, output: str,
    state: str | None, reference: str | None,
) -> TrainStageConfig:  # fmt: skip
    """The train stage's config for round ``round_index`` (artifact folders as inputs): every
    training setting of the run, the minibatch order seeded as ``calgrpo learn`` seeds it, and
    ``state`` (the previous round's train output) carrying AdamW's moments, the warm-up and the step
    counter over, as ``learn`` keeps them in memory. ``reference``: the initial model (KL anchor)."""
    from calgrpo.run_config import minibatch_seed

    return TrainStageConfig(
        attempts=str(attempts_table(attempts)),
        verdicts=str(Path(verdicts, "verdicts.parquet")) if verdicts is not None else None,
        model=model, output=Path(output), train=config.train, resume_from=state,
        reference=reference if config.train.kl_coef > 0 else None,
        num_attempts=config.rollout.num_attempts, seed=minibatch_seed(config.seed, round_index),
        report_to=config.report_to, round_number=round_index + 1,
    )  # fmt: skip


def finish_round(result: dict[str, Any], train_output: str, new_model, metrics, config: PipelineConfig,
                 round_index: int) -> None:  # fmt: skip
    """The trained model as its own artifact (hard links where the filesystem allows, so no second
    copy of the weights) carrying its training step as ``policy_version`` (what the next rollout
    records, as ``calgrpo learn`` records its trainer's step), the round's metrics logged (``@``
    is not allowed in KFP metric names), and one line on stdout with them, as ``learn`` prints."""
    from calgrpo.trackers import ROUND_MARKER, round_line

    line = round_line({"round": round_index + 1, **result}, config.rounds, config.rollout.num_attempts)
    print(ROUND_MARKER + line, flush=True)
    shutil.copytree(Path(train_output, "model"), new_model.path, copy_function=_link_or_copy)
    new_model.metadata["policy_version"] = int(result["train/step"])
    for key, value in result.items():
        metrics.log_metric(key.replace("@", "_at_"), float(value))


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def evaluate_step(config: PipelineConfig, problems: str, model: str, baseline: str, initial: str,
                  output: str, train_state: str | None = None) -> dict[str, Any]:  # fmt: skip
    """V@1..V@K of the trained model on the run's evaluation split, paired with the baseline (the
    initial model when ``baseline`` is empty), at the rollout's temperature and attempt length. The
    report states significance at the run's promotion margin and draws the training curves from the
    last round's history (``train_state``)."""
    from calgrpo.evaluation.stage import EvaluateConfig, evaluate
    from calgrpo.run_config import SYNTHETIC_EVAL
    from calgrpo.train.stage import HISTORY

    episodes = dataclasses.replace(config.rollout, group_size=config.eval_samples)
    history = Path(train_state, HISTORY) if train_state is not None else None
    return evaluate(EvaluateConfig(problems=str(Path(problems, SYNTHETIC_EVAL)), model=model,
                                   baseline=baseline or initial, output=output, rollout=episodes,
                                   seed=config.seed, report_to=config.report_to, step=config.rounds,
                                   name=config.model_name, margin=config.margin,
                                   training_history=str(history) if history and history.is_file() else None,
                                   base_model=config.model))  # fmt: skip


def log_evaluation(outcome: dict[str, Any], results: str, report, metrics, page=None) -> None:
    """An evaluation's headline (its main table and significance sentence) as the Markdown artifact,
    report.html as the HTML one, and V@k as KFP metrics (no ``@`` allowed in their names)."""
    Path(report.path).write_text(Path(results, "headline.md").read_text())
    if page is not None:
        shutil.copyfile(Path(results, "report.html"), page.path)
    candidate = outcome["candidate"]
    for k, value in enumerate(candidate["v@k"]["mean"], start=1):
        metrics.log_metric(f"eval/v_at_{k}", value)
    if "pass@k" in candidate:  # the no-feedback comparison: K independent attempts
        independent = candidate["pass@k"]["mean"]
        metrics.log_metric(f"eval/pass_at_{len(independent)}", independent[-1])
        metrics.log_metric("eval/feedback_gain_low", candidate["feedback_gain"]["low"][-1])
    if "difference" in outcome:
        metrics.log_metric("eval/difference_low", outcome["difference"]["low"][-1])


def round_table_step(config: PipelineConfig, train_state: str, table) -> None:
    """The per-round metrics of the whole run (the last round's history) as a Markdown table."""
    from calgrpo.evaluation.report import training_markdown
    from calgrpo.train.stage import HISTORY, read_history

    rows = read_history(Path(train_state, HISTORY))
    Path(table.path).write_text(f"## Training by round ({len(rows)} rounds)\n\n"
                                + training_markdown(rows, config.rollout.num_attempts))  # fmt: skip


def promote_step(config: PipelineConfig, model: str, results: str) -> bool:
    """Register the trained model and move the current pointer if it clears the margin (no registry:
    nothing to do)."""
    from calgrpo.evaluation.promotion import PromoteConfig, promote

    if not config.registry:
        return False
    decision = promote(PromoteConfig(model=model, evaluation=results, registry=config.registry,
                                     name=config.model_name, margin=config.margin))  # fmt: skip
    return bool(decision["promoted"])
