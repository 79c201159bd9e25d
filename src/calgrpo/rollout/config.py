"""Rollout configuration; importable without torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from calgrpo.errors import ConfigError, check_ranges
from calgrpo.tasks.base import FeedbackMode


@dataclass(frozen=True)
class SamplingParams:
    """How attempts are sampled."""

    temperature: float = 1.0
    """Softmax temperature (> 0). Behaviour log-probs are taken at this temperature, and the
    trainer must score tokens at the same one."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]; below 1 the samples are slightly off-policy."""
    max_new_tokens: int | None = None
    """Longest attempt in tokens (>= 1; default: the budget of the problems' task)."""
    greedy: bool = False
    """Take the most likely token instead of sampling (evaluation)."""

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class RolloutConfig:
    """How many attempts and trajectories, and how they are sampled."""

    num_attempts: int = 5
    """K, attempts per trajectory (>= 1)."""
    group_size: int = 8
    """G, trajectories per problem (>= 1; training needs >= 2)."""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    """Sampling of each attempt."""
    feedback_mode: FeedbackMode = "detailed"
    """Feedback the model sees after a failed attempt: ``detailed`` or ``binary``."""

    def __post_init__(self) -> None:
        if self.num_attempts < 1:
            raise ConfigError(f"num_attempts must be >= 1, got {self.num_attempts}")
        if self.group_size < 1:
            raise ConfigError(f"group_size must be >= 1, got {self.group_size}")


@dataclass(frozen=True)
class VLLMSettings:
    """How the offline engine is built (one per rollout task: each round is a fresh pod)."""

    gpu_memory_utilization: float = 0.85
    """Share of the GPU memory vLLM may take for weights and KV cache."""
    tensor_parallel_size: int = 1
    """GPUs one model is split over."""
    max_model_len: int | None = None
    """Longest trajectory (prompt + all attempts + feedback); default: the model's."""
    dtype: str = "bfloat16"
    seed: int = 0

    def __post_init__(self) -> None:
        check_ranges("vllm", self, {
            "gpu_memory_utilization": (0 < self.gpu_memory_utilization <= 1, "in (0, 1]"),
            "tensor_parallel_size": (self.tensor_parallel_size >= 1, ">= 1"),
        })  # fmt: skip
