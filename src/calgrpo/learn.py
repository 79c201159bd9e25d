"""``calgrpo learn``: rollout -> verify -> train for N rounds in one process, for fast experiments.

Each round samples fresh problems from a synthetic task (or draws them from an ingested dataset),
runs the multi-attempt rollout with the current policy, and trains on it. V@k is measured on a fixed
evaluation set before training, every ``eval_every`` rounds and at the end. Checkpoints make a
killed run resumable with ``--resume``, bit for bit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calgrpo.errors import ConfigError, check_ranges
from calgrpo.run_config import RunConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnConfig(RunConfig):
    """An in-process training run: every setting of the train pipeline's config (the same YAML file
    drives both), plus where this process keeps its run folder."""

    output: Path = Path("runs/learn")
    """Run folder: metrics.jsonl, summary.json, config.json, checkpoints/, model/ (the final policy)."""
    eval_every: int = 0
    """Evaluate every this many rounds (0: only before and after training)."""
    checkpoint_every: int = 0
    """Write a checkpoint every this many rounds (0: only at the end)."""
    resume: bool = False
    """Continue from the newest complete checkpoint in OUTPUT/checkpoints. Refused when the run's
    configuration changed (apart from the fields in RESUMABLE_CHANGES) or no checkpoint verifies."""
    overwrite: bool = False
    """Start over in an OUTPUT that holds an earlier run (its metrics and checkpoints are removed);
    without it, such an OUTPUT is refused so that two runs never mix."""
    show_progress: bool = True
    """A line per round on stderr (round, the batch's V@K, loss, KL, entropy, clip fraction, tokens/s)."""
    json: bool = False
    """Print the summary as JSON on stdout instead of a before/after table."""
    threads: int | None = None
    """CPU threads for torch (default: torch's choice)."""
    publish: str | None = None
    """Also publish the final model here (local path or s3://bucket/prefix, manifest written last).
    For s3:// with no S3 endpoint or credentials configured, an embedded server (SeaweedFS on
    loopback, data in OUTPUT/s3) runs while publishing."""

    def __post_init__(self) -> None:
        super().__post_init__()
        rules = {name: (getattr(self, name) >= 0, ">= 0") for name in ("eval_every", "checkpoint_every")}
        check_ranges("learn", self, rules)
        if self.train.lora_rank > 0:  # its checkpoints hold full weights for a bitwise-exact resume
            raise ConfigError("learn: --train.lora-rank is for calgrpo train and the pipeline, not learn")


def run_learn(config: LearnConfig) -> dict[str, Any]:
    """Run the loop; returns the summary (also written to OUTPUT/summary.json)."""
    from calgrpo.learn_loop import LearnLoop

    return LearnLoop(config).run()
