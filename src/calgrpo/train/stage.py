"""The train stage: one round of CAL-GRPO on one rollout batch, as one function over one config.

``calgrpo train``, the KFP ``train`` and ``train_on_trainjob`` components, and the torchrun and
TrainJob launches all build a :class:`TrainStageConfig` and call :func:`train_stage` (launchers hand
the config over as JSON: ``python -m calgrpo.train.stage CONFIG.json``), so every entry point
trains the same way. The output carries the full training state (weights and AdamW moments as a
sharded checkpoint, scheduler and step in ``trainer.pt``): pass it as ``resume_from`` of the next
round and R rounds are the same computation as R rounds of ``calgrpo learn``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from calgrpo.trackers import DEFAULT_REPORT_TO, check_report_to
from calgrpo.train.config import TrainConfig


@dataclass(frozen=True)
class TrainStageConfig:
    """Train the policy on one rollout batch (attempts.parquet) with CAL-GRPO.

    Writes OUTPUT/model (loadable by rollout), OUTPUT/trainer_shards (model and optimizer state as a
    torch.distributed.checkpoint, loadable by any world size) and OUTPUT/trainer.pt (scheduler and
    step) for --resume-from in the next round, state.json (the round's metrics), history.jsonl (every
    round's metrics so far), the trackers' files (tensorboard/ by default), and a manifest written
    last. Under ``torchrun --nproc-per-node N -m calgrpo.cli train ...`` the global batch is
    split over the N ranks and the step is the same as one process's.
    """

    attempts: str
    """attempts.parquet from the rollout (a path or an s3:// URI)."""
    model: str
    """Policy that generated the attempts: hub id, local folder or s3:// prefix."""
    output: Path
    """Output folder."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation settings."""
    verdicts: str | None = None
    """Authoritative verdicts from ``calgrpo verify`` (path or s3:// URI); their rewards replace the
    rollout's own."""
    publish: str | None = None
    """Also publish OUTPUT here (an s3:// prefix or folder; manifest last) once it is complete."""
    resume_from: str | None = None
    """The previous round's train output (a folder or a published s3:// one): its optimizer,
    scheduler and step are continued."""
    reference: str | None = None
    """The KL anchor (the run's initial model) when --train.kl-coef > 0."""
    num_attempts: int | None = None
    """K; default: the largest attempt number in the file."""
    seed: int = 0
    """Seed of the minibatch order."""
    off_policy: bool = False
    """Train on attempts another policy generated (refused otherwise: their behaviour log-probs are
    not this model's, so every ratio is an importance weight against that other policy)."""
    threads: int | None = None
    """CPU threads for torch (default: torch's choice)."""
    report_to: tuple[str, ...] = DEFAULT_REPORT_TO
    """Trackers of the round's metrics (``tensorboard`` event files in OUTPUT/tensorboard, ``mlflow``,
    ``wandb``, or ``none``; calgrpo.trackers)."""
    round_number: int | None = None
    """The training round this is (the trackers' x-axis, as in ``learn``); default: the optimizer
    step after this round."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: this rank's GPU when CUDA is available, else CPU. Run under ``torchrun`` for data
    parallelism (``--train.strategy ddp|fsdp``): gloo on CPU, NCCL on GPU."""

    def __post_init__(self) -> None:
        from calgrpo.errors import ConfigError

        object.__setattr__(self, "report_to", check_report_to(self.report_to))
        if self.train.kl_coef > 0 and self.reference is None:
            raise ConfigError("--train.kl-coef > 0 needs --reference: the model the KL is measured to")


def train_stage(config: TrainStageConfig) -> dict[str, Any]:
    """One round of training; under torchrun every rank calls this and rank 0 writes the output.
    Returns the round's metrics (reduced over ranks)."""
    import torch

    from calgrpo.configs import to_json
    from calgrpo.models.loading import load_policy
    from calgrpo.rollout.records import check_on_policy, read_attempts
    from calgrpo.storage.core import is_s3
    from calgrpo.storage.folders import content_fingerprint, fetch_folder, local_copy
    from calgrpo.train.batch import build_batch
    from calgrpo.train.checkpoint import save_train_output
    from calgrpo.train.distributed import barrier, init_distributed, load_sharded
    from calgrpo.train.trainer import Trainer

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    context = init_distributed(config.device)
    with tempfile.TemporaryDirectory(prefix="calgrpo-train-") as scratch:
        records = read_attempts(local_copy(config.attempts, scratch))
        if config.verdicts is not None:
            from calgrpo.verify import apply_verdicts, read_verdicts

            records = apply_verdicts(records, read_verdicts(local_copy(config.verdicts, scratch)))
        # Hashing the model folder is a full read of it: only when the attempts name their policy.
        known = not config.off_policy and any(r.policy for r in records)
        policy = content_fingerprint(config.model) if known else None
        check_on_policy(records, config.train.temperature, policy)
        num_attempts = config.num_attempts or max(r.attempt for r in records)
        if context.local_rank != 0:  # one download per node into the model cache, then everyone reads it
            barrier(context)
        policy = load_policy(config.model)
        if context.local_rank == 0:
            barrier(context)
        reference = None
        if config.train.kl_coef > 0:
            reference = load_policy(config.reference).model.eval()
        trainer = Trainer(policy.model, config.train, ref_model=reference, context=context)
        history: list[dict[str, Any]] = []
        if config.resume_from is not None:
            previous = Path(config.resume_from)
            if is_s3(config.resume_from):  # each rank its own verified copy
                previous = fetch_folder(config.resume_from, Path(scratch) / "previous")
            history = read_history(previous / HISTORY)
            trainer.load_state_dict(torch.load(previous / "trainer.pt", weights_only=False))
            if (previous / "trainer_shards").is_dir():  # written by any world size, resharded for this one
                load_sharded(previous / "trainer_shards", trainer.scorer, trainer.optimizer)
    batch = build_batch(records, num_attempts, policy.tokenizer.pad_token_id)
    metrics = trainer.train_on(batch, torch.Generator().manual_seed(config.seed))
    state = {"metrics": metrics, "source_model": config.model, "world_size": context.world_size,
             "config": to_json(config)}  # the resolved config, next to what it produced  # fmt: skip
    save_train_output(
        Path(config.output),
        trainer,
        policy.tokenizer,
        state,
        before_manifest=_round_outputs(config, metrics, history),
    )
    if context.is_main and config.publish:
        from calgrpo.storage.folders import publish_folder

        publish_folder(config.output, config.publish)
    # Every rank leaves together, after rank 0 published: a rank that tore down its process group
    # and exited while rank 0 was still uploading has been seen to abort (SIGABRT) on CI.
    barrier(context)
    if context.active:
        torch.distributed.destroy_process_group()
    return metrics


HISTORY = "history.jsonl"
"""Every round's metrics so far, one JSON object a line, carried from round to round in the train
output (the pipeline's training curves and per-round table come from the last round's)."""

MAX_HISTORY_BYTES = 64 << 20


def read_history(path: Path) -> list[dict[str, Any]]:
    """The rounds logged in a previous train output (none when it has no history)."""
    from calgrpo.errors import InvalidInputError

    if not path.is_file():
        return []
    if path.stat().st_size > MAX_HISTORY_BYTES:
        raise InvalidInputError(f"{path}: over {MAX_HISTORY_BYTES} bytes; not a train stage's history")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("round"), int):
            raise InvalidInputError(
                f"{path} line {number}: not a round's metrics (a JSON object with a round)"
            )
        rows.append(row)
    return rows


def _round_outputs(config: TrainStageConfig, metrics: dict[str, Any], history: list[dict[str, Any]]):
    """Writes the history with this round appended, and the round's metrics to the trackers, inside
    the output folder (rank 0, before its manifest)."""

    def write(folder: Path) -> None:
        from calgrpo.configs import to_json
        from calgrpo.trackers import open_trackers

        step = config.round_number if config.round_number is not None else int(metrics["train/step"])
        row = {"round": step, **metrics}
        (folder / HISTORY).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in [*history, row]))
        with open_trackers(config.report_to, folder, f"round {step}", to_json(config)) as trackers:
            trackers.log(row, step=step)

    return write


def main(argv: list[str] | None = None) -> int:
    """``python -m calgrpo.train.stage CONFIG`` (a JSON file or s3:// object): what launchers run."""
    from calgrpo.configs import read_config
    from calgrpo.storage.folders import local_copy

    (uri,) = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory(prefix="calgrpo-config-") as scratch:
        text = local_copy(uri, scratch).read_text()  # from S3: checked against its recorded sha256
    config = read_config(TrainStageConfig, text, uri)
    metrics = train_stage(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
