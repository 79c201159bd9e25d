"""Sequence packing: trajectories laid end to end in one row, with no padding between them.

Each trajectory keeps its own positions (0, 1, ...) and attends only to itself (a block-diagonal
causal mask), so its log-probs are the ones it gets alone. A trajectory's first token is never
scored, so no token is ever predicted across a boundary. Every per-token tensor of the batch
(loss mask, behaviour log-probs, advantages) is laid out the same way with :meth:`Packed.take`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def plan_packing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins of indices into ``lengths`` whose sums stay within ``capacity`` (first fit, longest
    first; a sequence longer than ``capacity`` gets a bin of its own)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for b, free in enumerate(room):
            if lengths[index] <= free:
                bins[b].append(index)
                room[b] -= lengths[index]
                break
        else:
            bins.append([index])
            room.append(capacity - lengths[index])
    return bins


@dataclass(frozen=True)
class Packed:
    """One packed row of P tokens from an (N, L) batch."""

    index: torch.Tensor
    """(1, P) long: flat position ``n * L + t`` in the source batch of each packed token."""
    position_ids: torch.Tensor
    """(1, P) long: the token's position within its own trajectory."""
    segment: torch.Tensor
    """(1, P) long: which trajectory of the row (0, 1, ...) each token belongs to."""

    @classmethod
    def of(cls, rows: list[int], lengths: list[int], width: int) -> Packed:
        """Pack source rows ``rows`` (real lengths ``lengths``) of a batch ``width`` tokens wide."""
        pairs = zip(rows, lengths, strict=True)
        index = torch.cat([row * width + torch.arange(length) for row, length in pairs])
        positions = torch.cat([torch.arange(length) for length in lengths])
        segment = torch.cat([torch.full((length,), s) for s, length in enumerate(lengths)])
        return cls(index.unsqueeze(0), positions.unsqueeze(0), segment.unsqueeze(0))

    def take(self, source: torch.Tensor) -> torch.Tensor:
        """(N, L) per-token tensor -> (1, P) in packed order."""
        return source.reshape(-1)[self.index.reshape(-1)].reshape(self.index.shape)

    def attention_mask(self) -> torch.Tensor:
        """(1, 1, P, P) bool: token i may attend to j iff same trajectory and j <= i."""
        segment = self.segment[0]
        same = segment.unsqueeze(1) == segment.unsqueeze(0)
        causal = torch.ones(len(segment), len(segment), dtype=torch.bool).tril()
        return (same & causal)[None, None]
