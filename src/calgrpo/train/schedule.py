"""The learning-rate schedule: linear warm-up, then constant or a decay to a floor.

A pure function of the optimizer step, so a resumed run (the scheduler's step restored) continues
on exactly the curve it left.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "cosine")


def learning_rate_factor(
    step: int, warmup_steps: int, schedule: str = "constant", decay_steps: int = 0, final_ratio: float = 0.0
) -> float:
    """The multiplier of the base learning rate for optimizer step ``step`` (0 = the first step).

    Warm-up: ``(step + 1) / (warmup_steps + 1)`` up to 1. Then ``constant`` stays at 1; ``linear`` and
    ``cosine`` fall from 1 to ``final_ratio`` over the ``decay_steps`` steps after the warm-up and stay
    at ``final_ratio`` after them.
    """
    warm = min(1.0, (step + 1) / (warmup_steps + 1))
    if schedule == "constant":
        return warm
    if schedule not in SCHEDULES:
        raise ValueError(f"learning-rate schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if decay_steps < 1:  # a direct caller's mistake; TrainConfig refuses it before a run starts
        raise ValueError(f"a {schedule} decay needs decay_steps >= 1, got {decay_steps}")
    progress = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
    shape = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return warm * (final_ratio + (1.0 - final_ratio) * shape)
