"""``calgrpo learn``: rollout -> verify -> train for N rounds in one process, for fast experiments.

Each round samples fresh problems from a synthetic task, runs the multi-attempt rollout with the
current policy, and trains on it. V@k is measured on a fixed evaluation set before training, every
``eval_every`` rounds and at the end. Checkpoints make a killed run resumable with ``--resume``,
bit for bit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calgrpo.errors import ConfigError, check_ranges
from calgrpo.models.config import TinyModelConfig
from calgrpo.rollout.config import RolloutConfig, SamplingParams
from calgrpo.train.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnConfig:
    """An in-process training run on a synthetic task."""

    output: Path = Path("runs/learn")
    """Run folder: metrics.jsonl, summary.json, checkpoints/, model/ (the final policy)."""
    model: str = "tiny:llama"
    """Policy to start from: a hub id, a local folder, an s3:// prefix, or tiny:llama / tiny:qwen2
    (a tiny model built from --tiny.* with a tokenizer trained on the task's texts)."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the tiny model when --model is tiny:*."""
    task: str = "guess"
    """Synthetic task to learn (``guess``)."""
    num_values: int = 32
    """guess: N, the numbers 0..N-1."""
    hint_prob: float = 0.5
    """guess: probability that the hint is the hidden number."""
    rounds: int = 100
    """Rollout + train rounds."""
    prompts_per_round: int = 16
    """Problems per rollout batch (P)."""
    rollout: RolloutConfig = field(
        default_factory=lambda: RolloutConfig(
            num_attempts=5, group_size=8, sampling=SamplingParams(max_new_tokens=3)
        )
    )
    """Attempts K, group size G and sampling."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation on each rollout batch."""
    eval_every: int = 0
    """Evaluate every this many rounds (0: only before and after training)."""
    eval_problems: int = 256
    """Fixed evaluation problems."""
    eval_samples: int = 1
    """Episodes per evaluation problem."""
    checkpoint_every: int = 0
    """Write a checkpoint every this many rounds (0: only at the end)."""
    resume: bool = False
    """Continue from the newest complete checkpoint in OUTPUT/checkpoints. Refused when the run's
    configuration changed (apart from the fields in RESUMABLE_CHANGES) or no checkpoint verifies."""
    overwrite: bool = False
    """Start over in an OUTPUT that holds an earlier run (its metrics and checkpoints are removed);
    without it, such an OUTPUT is refused so that two runs never mix."""
    reuse_cache: bool = True
    """Keep the KV cache across attempts (False re-encodes the history every attempt)."""
    seed: int = 0
    """Base seed of every random stream in the run."""
    show_progress: bool = True
    """Progress bar (terminal) or JSON progress lines (pods) on stderr."""
    json: bool = False
    """Print the summary as JSON on stdout instead of a before/after table."""
    threads: int | None = None
    """CPU threads for torch (default: torch's choice)."""
    publish: str | None = None
    """Also publish the final model here (local path or s3://bucket/prefix, manifest written last).
    For s3:// with no S3 endpoint or credentials configured, an embedded server (SeaweedFS on
    loopback, data in OUTPUT/s3) runs while publishing."""

    def __post_init__(self) -> None:
        positive = ("rounds", "prompts_per_round", "eval_problems", "eval_samples")
        rules = {name: (getattr(self, name) >= 1, ">= 1") for name in positive}
        rules.update(
            {name: (getattr(self, name) >= 0, ">= 0") for name in ("eval_every", "checkpoint_every")}
        )
        check_ranges("learn", self, rules)
        if self.train.lora_rank > 0:  # its checkpoints hold full weights for a bitwise-exact resume
            raise ConfigError("learn: --train.lora-rank is for calgrpo train and the pipeline, not learn")
        if self.rollout.group_size < 2:
            raise ConfigError(
                f"learn: --rollout.group-size must be >= 2 for leave-one-out, got {self.rollout.group_size}"
            )
        if self.train.temperature != self.rollout.sampling.temperature:
            raise ConfigError(
                f"--train.temperature {self.train.temperature} must equal --rollout.sampling.temperature "
                f"{self.rollout.sampling.temperature}: tokens are scored as they were sampled"
            )


def run_learn(config: LearnConfig) -> dict[str, Any]:
    """Run the loop; returns the summary (also written to OUTPUT/summary.json)."""
    from calgrpo.learn_loop import LearnLoop

    return LearnLoop(config).run()
