"""The state and steps of a ``calgrpo learn`` run (configuration in :mod:`calgrpo.learn`)."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from calgrpo.errors import ConfigError, InvalidInputError
from calgrpo.learn import LearnConfig
from calgrpo.metrics import verification_at_k
from calgrpo.models.loading import load_policy
from calgrpo.rollout.chat import ChatLayout
from calgrpo.rollout.hf_engine import TransformersEngine
from calgrpo.rollout.loop import rollout
from calgrpo.run_config import (
    eval_problems,
    initial_model,
    minibatch_seed,
    prepare_problems,
    rollout_seed,
    round_problems,
)
from calgrpo.seeding import generator_for
from calgrpo.trackers import Trackers, round_line
from calgrpo.train.batch import build_batch
from calgrpo.train.checkpoint import checkpoint_folder, latest_checkpoint, load_checkpoint, save_checkpoint
from calgrpo.train.trainer import Trainer

log = logging.getLogger(__name__)


class LearnLoop:
    """State of one ``learn`` run: policy, trainer, task, evaluation set, run folder."""

    def __init__(self, config: LearnConfig):
        from calgrpo.configs import write_config

        self.config = config
        self.output = Path(config.output)
        self.output.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.output / "metrics.jsonl"
        self.checkpoints = self.output / "checkpoints"
        self.resume_from = check_run_folder(config, self.metrics_path, self.checkpoints)
        write_config(config, self.output / "config.json")  # the resolved config, next to the run
        # The same problems, seeds and initial model as the train pipeline (calgrpo.run_config).
        self.problems = prepare_problems(config, self.output / "problems")
        self.tasks = {} if config.dataset is not None else {config.task: config.synthetic_task()}
        self.eval_set = eval_problems(self.problems)
        self.policy = load_policy(initial_model(config, self.problems, self.output / "initial_model"))
        self.layout = ChatLayout(self.policy.tokenizer)
        self.engine = TransformersEngine(
            self.policy.model,
            self.policy.tokenizer.pad_token_id,
            self.layout.stop_token_ids,
            config.reuse_cache,
        )
        ref_model = copy.deepcopy(self.policy.model).eval() if config.train.kl_coef > 0 else None
        self.trainer = Trainer(self.policy.model, config.train, ref_model=ref_model)

    def evaluate(self, label: str) -> dict[str, float]:
        """V@1..V@K on the fixed evaluation set (same seed every time, so curves are comparable)."""
        config = self.config
        eval_rollout = dataclasses.replace(config.rollout, group_size=config.eval_samples)
        self.policy.model.eval()
        records = rollout(
            self.eval_set,
            self.engine,
            self.layout,
            eval_rollout,
            generator_for(config.seed, "eval-rollout"),
            policy_version=self.trainer.step,
            tasks=self.tasks,
        )
        result = verification_at_k(records, config.rollout.num_attempts)
        log.info("eval %s: %s", label, ", ".join(f"{k}={v:.3f}" for k, v in result.items()))
        return {f"eval/{k}": v for k, v in result.items()}

    def run(self) -> dict[str, Any]:
        from calgrpo.trackers import open_trackers

        params = config_to_json(self.config)
        with open_trackers(self.config.report_to, self.output, self.output.name, params) as trackers:
            return self._run(trackers)

    def _run(self, trackers: Trackers) -> dict[str, Any]:
        config = self.config
        start_round, before = self._resume_or_start()
        num_attempts = config.rollout.num_attempts
        if start_round == 0:
            trackers.log(before, step=0)
        for round_index in range(start_round, config.rounds):
            started = time.perf_counter()
            problems = round_problems(config, self.problems, round_index)
            self.policy.model.eval()
            records = rollout(
                problems,
                self.engine,
                self.layout,
                config.rollout,
                torch.Generator().manual_seed(rollout_seed(config.seed, round_index)),
                policy_version=self.trainer.step,
                tasks=self.tasks,
            )
            rollout_s = time.perf_counter() - started
            batch = build_batch(records, num_attempts, self.policy.tokenizer.pad_token_id)
            order = torch.Generator().manual_seed(minibatch_seed(config.seed, round_index))
            metrics = self.trainer.train_on(batch, order)
            done = round_index + 1
            metrics.update(
                {
                    "round": done,
                    "time/rollout_s": rollout_s,
                    "time/train_s": time.perf_counter() - started - rollout_s,
                }
            )
            if config.show_progress:  # one line per round, like TRL's logging steps
                log.info("%s", round_line(metrics, config.rounds, num_attempts))
            if config.eval_every and done % config.eval_every == 0 and done < config.rounds:
                metrics.update(self.evaluate(f"round {done}"))
            append_jsonl(self.metrics_path, metrics)
            trackers.log(metrics, step=done)
            if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.rounds:
                self._checkpoint(done, before)
        after = self.evaluate("after")
        append_jsonl(self.metrics_path, {"round": config.rounds, "final": True, **after})
        trackers.log(after, step=config.rounds)
        self._checkpoint(config.rounds, before)
        final = self.output / "model"
        self.policy.model.save_pretrained(final)
        self.policy.tokenizer.save_pretrained(final)
        published = self._publish(final) if config.publish else None
        summary = {
            "config": config_to_json(config),
            "published": published,
            "before": before,
            "after": after,
            "optimizer_steps": self.trainer.step,
            "model": str(final),
        }
        (self.output / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        return summary

    def _publish(self, folder: Path) -> dict[str, Any]:
        """Publish the final model, check it by fetching it back, and say where it went."""
        from calgrpo.storage import fetch_folder, publish_folder
        from calgrpo.storage.embedded import s3_for

        with s3_for(self.config.publish, self.output / "s3") as server:
            manifest = publish_folder(folder, self.config.publish)
            with tempfile.TemporaryDirectory(dir=self.output) as check:
                fetch_folder(self.config.publish, Path(check) / "model")  # verifies every sha256
            endpoint = server.endpoint if server is not None else None
        log.info("published the final model to %s (%d files)", self.config.publish, len(manifest["files"]))
        return {"uri": self.config.publish, "files": len(manifest["files"]), "embedded_s3": endpoint}

    def _resume_or_start(self) -> tuple[int, dict[str, float]]:
        if self.config.resume:
            folder = self.resume_from
            if folder is not None:
                trainer_state, state = load_checkpoint(folder, self.policy.model)
                self.trainer.load_state_dict(trainer_state)
                truncate_jsonl(self.metrics_path, state["round"])
                log.info("resumed from %s (round %d)", folder, state["round"])
                return state["round"], state["before"]
            log.info("no complete checkpoint in %s; starting from scratch", self.checkpoints)
        if self.metrics_path.exists():
            self.metrics_path.unlink()
        before = self.evaluate("before")
        append_jsonl(self.metrics_path, {"round": 0, **before})
        return 0, before

    def _checkpoint(self, done: int, before: dict[str, float]) -> None:
        save_checkpoint(
            checkpoint_folder(self.checkpoints, done),
            model=self.policy.model,
            tokenizer=self.policy.tokenizer,
            trainer_state=self.trainer.state_dict(),
            state={"round": done, "before": before, "config": config_to_json(self.config)},
        )


RESUMABLE_CHANGES = frozenset(
    {"output", "resume", "overwrite", "show_progress", "json", "threads", "publish", "report_to"}
)
"""Fields a resumed run may change: they do not touch what is computed (a run folder may move)."""


def check_run_folder(config: LearnConfig, metrics: Path, checkpoints: Path) -> Path | None:
    """The checkpoint to resume from (None: start fresh); refuses runs that would mix or lie.

    Before any work: --resume needs a verifying checkpoint of the *same* configuration; a fresh
    start needs an empty OUTPUT, or --overwrite (which clears the earlier run's files).
    """
    earlier = metrics.exists() or any(checkpoints.glob("round_*"))
    if config.resume:
        folder = latest_checkpoint(checkpoints)
        if folder is None and earlier:
            raise ConfigError(
                f"learn --resume: no checkpoint under {checkpoints} verifies, so the run cannot continue; "
                "nothing was changed (pass --overwrite without --resume to start over)"
            )
        if folder is not None:
            saved = json.loads((folder / "state.json").read_text()).get("config", {})
            changes = config_changes(saved, config_to_json(config))
            if changes:
                raise ConfigError(
                    f"learn --resume: the run in {config.output} was started with another configuration "
                    f"({'; '.join(changes)}); resume with the same values, or start a new OUTPUT"
                )
        return folder
    if earlier and not config.overwrite:
        raise ConfigError(
            f"learn: {config.output} holds an earlier run (metrics.jsonl or checkpoints); pass --resume to "
            "continue it or --overwrite to start over"
        )
    if earlier:
        metrics.unlink(missing_ok=True)
        shutil.rmtree(checkpoints, ignore_errors=True)
    return None


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``field: saved -> current`` for every field (dotted, nested) that differs, resumable ones aside."""
    flat_saved, flat_current = _flatten(saved), _flatten(current)
    return [
        f"{key}: {flat_saved.get(key)!r} -> {flat_current.get(key)!r}"
        for key in sorted(flat_saved.keys() | flat_current.keys())
        if key.split(".")[0] not in RESUMABLE_CHANGES and flat_saved.get(key) != flat_current.get(key)
    ]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_to_json(config: LearnConfig) -> dict[str, Any]:
    from calgrpo.configs import to_json

    return to_json(config)


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(row, sort_keys=True) + "\n")


def truncate_jsonl(path: Path, keep_round: int) -> None:
    """Drop logged rows of rounds after ``keep_round`` and the final evaluation: they are redone."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for index, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if index < len(lines) - 1:
                message = f"{path} line {index + 1} is not JSON; the run's log is damaged"
                raise InvalidInputError(message) from None
            log.warning("dropping the torn last line of %s (the run was killed while writing it)", path)
    kept = [
        json.dumps(row, sort_keys=True) for row in rows if row["round"] <= keep_round and not row.get("final")
    ]
    path.write_text("".join(line + "\n" for line in kept))
