"""The maths of CAL-GRPO: pure tensor functions, no I/O, no global state."""

from calgrpo.algorithms.advantages import (
    ADVANTAGE_METHODS,
    AdvantageMethod,
    attempt_advantages,
    leave_one_out_mean,
    register_advantage_method,
    trajectory_success,
    validate_attempt_table,
)
from calgrpo.algorithms.loss import PolicyLossConfig, PolicyLossOutput, policy_loss

__all__ = [
    "ADVANTAGE_METHODS",
    "AdvantageMethod",
    "PolicyLossConfig",
    "PolicyLossOutput",
    "attempt_advantages",
    "leave_one_out_mean",
    "policy_loss",
    "register_advantage_method",
    "trajectory_success",
    "validate_attempt_table",
]
