"""Seeds derived from a base seed and labels, so each round's randomness is independent of history.

Every random stream of a run (problems of round r, its rollout, its minibatch order, evaluation) is
``torch.Generator().manual_seed(derive_seed(seed, label, r))``: resuming at round r needs no saved
generator state, and no library code touches a global RNG.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *labels: object) -> int:
    """A 63-bit seed determined by ``seed`` and ``labels``."""
    text = ":".join([str(seed), *map(str, labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def generator_for(seed: int, *labels: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *labels))
