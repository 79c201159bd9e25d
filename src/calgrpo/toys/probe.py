"""DESIGN section 2's counterexample to naive weighting: an informative failure (K = 2).

z is uniform on {1, 2, 3, 4}. Attempt 1 either probes (always fails; the feedback reveals z) with
probability s = sigmoid(t), or guesses 1. Attempt 2 is Bayes-optimal and fixed: after a probe it
names z; after "higher" it guesses uniformly among {2, 3, 4}. So V@2 = 1/2 + s/2 and
dV/dt = s (1 - s) / 2 = +0.125 at t = 0, while naive 0/1 weighting expects -s (1 - s) / 4 = -0.0625.
The single parameter t is one row of one action, so H = A = 1.
"""

from __future__ import annotations

import math

import torch

from calgrpo.toys.tables import Toy, TrajectoryTable


def probe_toy(t: float = 0.0) -> Toy:
    """The probe game at logit t (parameter count D = 1)."""
    s = 1.0 / (1.0 + math.exp(-t))
    score_probe, score_guess = 1.0 - s, -s  # d/dt log s and d/dt log (1 - s)
    tables = []
    for z in (1, 2, 3, 4):
        # Rows: (probability, rewards of attempts 1-2, attempts made, score of attempt 1).
        if z == 1:
            paths = [(s, (0, 1), 2, score_probe), (1 - s, (1, 0), 1, score_guess)]
        else:
            paths = [
                (s, (0, 1), 2, score_probe),
                ((1 - s) / 3, (0, 1), 2, score_guess),
                ((1 - s) * 2 / 3, (0, 0), 2, score_guess),
            ]
        n = len(paths)
        attempted = torch.tensor([[True, made == 2] for _, _, made, _ in paths])
        score_values = torch.zeros(n, 2, 1, dtype=torch.float64)
        score_values[:, 0, 0] = torch.tensor([score for *_, score in paths], dtype=torch.float64)
        tables.append(
            TrajectoryTable(
                probs=torch.tensor([p for p, *_ in paths], dtype=torch.float64),
                rewards=torch.tensor([r for _, r, _, _ in paths], dtype=torch.float64),
                attempted=attempted,
                score_rows=torch.zeros(n, 2, dtype=torch.long),
                score_values=score_values,  # attempt 2's policy is fixed: its score is 0
            )
        )
    return Toy("probe_k2", tuple(tables), torch.full((4,), 0.25, dtype=torch.float64), 1, 1)
