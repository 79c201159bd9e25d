"""The maths of CAL-GRPO: pure tensor functions, no I/O, no global state.

Names are imported lazily so that ``calgrpo.algorithms.loss_config`` stays importable without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ADVANTAGE_METHODS": "calgrpo.algorithms.advantages",
    "AdvantageMethod": "calgrpo.algorithms.advantages",
    "attempt_advantages": "calgrpo.algorithms.advantages",
    "leave_one_out_mean": "calgrpo.algorithms.advantages",
    "register_advantage_method": "calgrpo.algorithms.advantages",
    "trajectory_success": "calgrpo.algorithms.advantages",
    "validate_attempt_table": "calgrpo.algorithms.advantages",
    "PolicyLossConfig": "calgrpo.algorithms.loss_config",
    "PolicyLossOutput": "calgrpo.algorithms.loss",
    "policy_loss": "calgrpo.algorithms.loss",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'calgrpo.algorithms' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
