"""What the pipeline's components do around the stage functions: find an attempts table in an
artifact, build the train stage's config for round r, hand its output on as the round's model and
training state."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from calgrpo.train.stage import TrainStageConfig


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


def round_config(
    *, attempts: str, verdicts: str, model: str, output: str, state: str | None, method: str,
    learning_rate: float, ppo_epochs: int, minibatches: int, temperature: float, precision: str, seed: int,
    round_index: int,
) -> TrainStageConfig:  # fmt: skip
    """The train stage's config for pipeline round ``round_index`` (artifact folders as inputs).

    The minibatch order is seeded as ``calgrpo learn`` seeds it (``derive_seed(seed, "minibatches",
    r)``), and ``state`` (the previous round's train output) carries AdamW's moments, the warm-up
    and the step counter over, as ``learn`` keeps them in memory.
    """
    from calgrpo.seeding import derive_seed
    from calgrpo.train.config import TrainConfig

    train = TrainConfig(method=method, learning_rate=learning_rate, ppo_epochs=ppo_epochs,
                        minibatches=minibatches, temperature=temperature, precision=precision,
                        strategy="fsdp")  # fmt: skip
    return TrainStageConfig(
        attempts=str(Path(attempts, "attempts.parquet")), verdicts=str(Path(verdicts, "verdicts.parquet")),
        model=model, output=Path(output), train=train, resume_from=state,
        seed=derive_seed(seed, "minibatches", round_index),
    )  # fmt: skip


def finish_round(result: dict[str, Any], train_output: str, new_model, metrics) -> None:
    """The trained model as its own artifact (hard links where the filesystem allows, so no second
    copy of the weights) carrying its training step as ``policy_version`` (what the next rollout
    records, as ``calgrpo learn`` records its trainer's step), and the round's metrics logged (``@``
    is not allowed in KFP metric names)."""
    shutil.copytree(Path(train_output, "model"), new_model.path, copy_function=_link_or_copy)
    new_model.metadata["policy_version"] = int(result["train/step"])
    for key, value in result.items():
        metrics.log_metric(key.replace("@", "_at_"), float(value))


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
