"""What an attempt costs (the cost-aware objective J = V@K - E[cost]; calgrpo.algorithms.costs).

Importable without torch, like loss_config: configs that hold it are read in images without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from calgrpo.errors import ConfigError, InvalidInputError

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class AttemptCost:
    """What an attempt costs, in units of the success reward (1)."""

    per_attempt: float = 0.0
    """Charged for every attempt made (the give-up answer included)."""
    per_token: float = 0.0
    """Charged per generated token of an attempt."""

    def __post_init__(self) -> None:
        for name in ("per_attempt", "per_token"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                flag = f"--train.cost.{name.replace('_', '-')}"
                raise ConfigError(f"cost.{name} ({flag}) must be a finite number >= 0, got {value}")

    @property
    def free(self) -> bool:
        return self.per_attempt == 0 and self.per_token == 0

    def of(self, attempted: Tensor, tokens: Tensor | None = None) -> Tensor:
        """(..., K) float64 cost of each attempt (0 where not attempted); ``tokens``: (..., K) generated."""
        import torch

        costs = self.per_attempt * attempted.to(torch.float64)
        if self.per_token:
            if tokens is None:
                raise InvalidInputError("a per-token cost needs each attempt's token count")
            costs = costs + self.per_token * tokens.to(torch.float64) * attempted
        return costs
