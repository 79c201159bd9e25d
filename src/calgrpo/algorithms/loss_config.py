"""Configuration of the policy loss; importable without torch (for CLIs and pipeline code)."""

from __future__ import annotations

from dataclasses import dataclass

from calgrpo.errors import ConfigError


@dataclass(frozen=True)
class PolicyLossConfig:
    """Clipping and regularisation of :func:`policy_loss`."""

    clip_low: float = 0.2
    """eps_low: the ratio is clipped below at 1 - clip_low; in [0, 1)."""
    clip_high: float = 0.2
    """eps_high: the ratio is clipped above at 1 + clip_high; >= 0 (DAPO's clip-higher uses 0.28)."""
    kl_coef: float = 0.0
    """Weight of the k3 KL estimate to the reference policy; >= 0 (0 turns it off)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.clip_low < 1.0:
            raise ConfigError(f"clip_low must be in [0, 1), got {self.clip_low}")
        if self.clip_high < 0.0:
            raise ConfigError(f"clip_high must be >= 0, got {self.clip_high}")
        if self.kl_coef < 0.0:
            raise ConfigError(f"kl_coef must be >= 0, got {self.kl_coef}")
