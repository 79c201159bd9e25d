"""The rollout stage: multi-attempt episodes with verifier feedback, as one function over one config.

``calgrpo rollout`` and the pipeline's ``rollout`` component build a :class:`RolloutStageConfig` and
call :func:`rollout_stage`; ``calgrpo learn`` keeps its engine in memory between rounds and calls
the same loop (:func:`calgrpo.rollout.loop.rollout`) with the same seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from calgrpo.errors import ConfigError
from calgrpo.rollout.config import RolloutConfig, VLLMSettings


@dataclass(frozen=True)
class RolloutStageConfig:
    """Run the multi-attempt rollout: G episodes of up to K attempts per problem, with verifier feedback.

    Writes attempts.parquet, one row per attempt (token ids, behaviour log-probs, the
    sampling temperature, the generating policy, verdict, feedback).
    """

    problems: str
    """Problems to solve: a problems.parquet, or an ingest output folder (FOLDER#SPLIT for a split),
    locally or on s3://."""
    model: str
    """Policy: hub id (ID@REVISION pins one), local folder or s3:// prefix."""
    output: Path
    """Where to write the attempts (a .parquet file)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Attempts K, group size G, sampling (the attempt length defaults to the task's budget)."""
    seed: int = 0
    """Seed of every sampling draw (same seed, same attempts)."""
    policy_version: int = 0
    """Recorded in each row: the training step of this policy."""
    reuse_cache: bool = True
    """Keep the KV cache across attempts instead of re-encoding the history (transformers engine)."""
    engine: Literal["transformers", "vllm"] = "transformers"
    """``transformers`` (CPU or GPU) or ``vllm`` (GPU, the ``gpu`` extra; prefix caching)."""
    vllm: VLLMSettings = field(default_factory=VLLMSettings)
    """Settings of the vLLM engine."""
    shard_index: int = 0
    """Roll out contiguous shard SHARD_INDEX of NUM_SHARDS of the problems (a fan-out's part)."""
    num_shards: int = 1
    """Shards the problems are split into."""
    show_progress: bool = True
    """Progress bar (terminal) or JSON progress lines (pods) on stderr."""
    threads: int | None = None
    """CPU threads for torch (default: torch's choice)."""

    def __post_init__(self) -> None:
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ConfigError(
                f"--shard-index {self.shard_index} of --num-shards {self.num_shards}: "
                "need 0 <= index < shards"
            )
        if Path(self.output).suffix != ".parquet":
            raise ConfigError(f"--output {self.output}: name the .parquet file to write the attempts to")


def rollout_stage(config: RolloutStageConfig) -> dict[str, Any]:
    """Roll out the problems (this shard of them), write the attempts; returns counts and V@k."""
    import torch

    from calgrpo.configs import write_config
    from calgrpo.io import load_problems
    from calgrpo.metrics import verification_at_k
    from calgrpo.rollout.engine import open_engine
    from calgrpo.rollout.loop import rollout, shard_of
    from calgrpo.rollout.records import write_attempts
    from calgrpo.storage.folders import content_fingerprint

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    problems = shard_of(load_problems(config.problems), config.shard_index, config.num_shards)
    _, layout, engine = open_engine(
        config.engine, config.model, reuse_cache=config.reuse_cache, vllm_settings=config.vllm
    )
    records = rollout(
        problems,
        engine,
        layout,
        config.rollout,
        torch.Generator().manual_seed(config.seed),
        policy_version=config.policy_version,
        policy=content_fingerprint(config.model) or "",
        show_progress=config.show_progress,
    )
    write_attempts(records, config.output)
    # The resolved config, next to what it produced (OUTPUT's name + .config.json).
    write_config(config, Path(config.output).with_name(Path(config.output).stem + ".config.json"))
    result: dict[str, Any] = {"problems": len(problems), "attempts": len(records)}
    result["output"] = str(config.output)
    result.update(verification_at_k(records, config.rollout.num_attempts))
    return result
