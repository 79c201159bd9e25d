"""Model configuration; importable without torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from calgrpo.errors import ConfigError, check_ranges


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of a tiny decoder-only model."""

    architecture: Literal["llama", "qwen2"] = "llama"
    """Model family of the config."""
    hidden_size: int = 64
    """Width of the residual stream."""
    num_layers: int = 2
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads (hidden_size must divide by it)."""
    intermediate_size: int = 256
    """Width of the MLP."""
    max_positions: int = 512
    """Longest sequence (prompt, all attempts and feedback)."""
    seed: int = 0
    """Initialisation seed (the global RNG is left untouched)."""

    def __post_init__(self) -> None:
        sizes = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions")
        check_ranges("tiny model", self, {name: (getattr(self, name) >= 1, ">= 1") for name in sizes})
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"tiny model: hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}"
            )
