"""The tabular guessing game of DESIGN section 2's exact check, and larger random versions.

A hidden z is drawn from a prior over ``num_values``; each attempt guesses a value; the verifier
answers correct (the episode stops), higher (z is larger) or lower. With ``give_up`` the policy has
one more action, giving up, which ends the episode unsolved (the attempt is made and costs its own
cost); ``token_lengths`` gives each action's length in tokens, for per-token costs. The policy is tabular: one
softmax over guesses per history of earlier (guess, feedback) pairs, i.e. an (H, A) logit matrix.
Histories include impossible ones (e.g. "guess the top value, told higher") so that H is simply
sum_{l < K} (2 * num_values)^l: 43 for 3 values and 3 attempts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import product

import torch
from torch import Tensor

from calgrpo.errors import InvalidInputError
from calgrpo.toys.tables import Toy, TrajectoryTable

HIGHER, LOWER = 1, 2
"""Feedback codes; the logit formula of the exact check uses these values."""

History = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class GuessingGame:
    """The game's rules; build a :class:`Toy` for any logit matrix with :meth:`toy`."""

    prior: tuple[float, ...]
    """P(z = v) for v = 0..num_values-1; positive, sums to 1."""
    num_attempts: int
    """K, attempts per episode (>= 1)."""
    give_up: bool = False
    """One more action (index num_values): give up, ending the episode unsolved."""
    token_lengths: tuple[int, ...] | None = None
    """Tokens of each action's answer (num_actions of them, >= 1); default 1 each."""
    histories: tuple[History, ...] = field(init=False, repr=False)
    """Every failed history of length 0..K-1, in a fixed order (row index of the logits)."""

    def __post_init__(self) -> None:
        if self.num_attempts < 1:
            raise InvalidInputError(f"num_attempts must be >= 1, got {self.num_attempts}")
        if min(self.prior) <= 0 or not math.isclose(sum(self.prior), 1.0, abs_tol=1e-9):
            raise InvalidInputError(f"prior must be positive and sum to 1, got {self.prior}")
        lengths = self.token_lengths
        if lengths is not None and (len(lengths) != self.num_actions or min(lengths) < 1):
            raise InvalidInputError(f"token_lengths must give {self.num_actions} lengths >= 1, got {lengths}")
        steps = list(product(range(self.num_values), (HIGHER, LOWER)))
        histories = [h for length in range(self.num_attempts) for h in product(steps, repeat=length)]
        object.__setattr__(self, "histories", tuple(histories))
        object.__setattr__(self, "_row", {h: i for i, h in enumerate(histories)})

    @property
    def num_values(self) -> int:
        return len(self.prior)

    @property
    def num_actions(self) -> int:
        """A: the guesses, and giving up when allowed."""
        return self.num_values + int(self.give_up)

    @property
    def num_histories(self) -> int:
        return len(self.histories)

    def design_logits(self) -> Tensor:
        """DESIGN's initial logits: 0.8 cos(1.3 a + 0.7 (len(h)+1) + 0.9 sum_{(a',f') in h} (a' + 2 f'))."""
        logits = torch.empty(self.num_histories, self.num_actions, dtype=torch.float64)
        for row, history in enumerate(self.histories):
            phase = 0.7 * (len(history) + 1) + 0.9 * sum(a + 2 * f for a, f in history)
            for a in range(self.num_actions):
                logits[row, a] = 0.8 * math.cos(1.3 * a + phase)
        return logits

    def toy(self, logits: Tensor, name: str = "guessing") -> Toy:
        """Enumerate every trajectory for every z under the softmax policy of ``logits`` (H, A)."""
        if logits.shape != (self.num_histories, self.num_actions):
            raise InvalidInputError(
                f"logits must have shape (H, A) = ({self.num_histories}, {self.num_actions}), "
                f"got {tuple(logits.shape)}"
            )
        policy = torch.softmax(logits.to(torch.float64), dim=-1)
        tables = tuple(self._table(policy, z) for z in range(self.num_values))
        prior = torch.tensor(self.prior, dtype=torch.float64)
        return Toy(name, tables, prior, self.num_histories, self.num_actions)

    def _table(self, policy: Tensor, z: int) -> TrajectoryTable:
        rows: list[tuple[float, list[int], list[int]]] = []  # (prob, history rows, actions)

        def extend(history: History, prob: float, hist_rows: list[int], actions: list[int]) -> None:
            row = self._row[history]  # type: ignore[attr-defined]
            for a in range(self.num_actions):
                p = prob * float(policy[row, a])
                if (
                    a == z or a == self.num_values or len(history) + 1 == self.num_attempts
                ):  # solved, gave up, K
                    rows.append((p, hist_rows + [row], actions + [a]))
                else:
                    feedback = HIGHER if z > a else LOWER
                    extend(history + ((a, feedback),), p, hist_rows + [row], actions + [a])

        extend((), 1.0, [], [])
        return _table_from_paths(rows, policy, z, self.num_attempts, self.token_lengths)


def _table_from_paths(
    paths: list[tuple[float, list[int], list[int]]],
    policy: Tensor,
    z: int,
    num_attempts: int,
    token_lengths: tuple[int, ...] | None = None,
) -> TrajectoryTable:
    n, num_actions = len(paths), policy.shape[1]
    probs = torch.tensor([p for p, _, _ in paths], dtype=torch.float64)
    rewards = torch.zeros(n, num_attempts, dtype=torch.float64)
    attempted = torch.zeros(n, num_attempts, dtype=torch.bool)
    score_rows = torch.zeros(n, num_attempts, dtype=torch.long)
    score_values = torch.zeros(n, num_attempts, num_actions, dtype=torch.float64)
    tokens = torch.zeros(n, num_attempts, dtype=torch.float64)
    for i, (_, hist_rows, actions) in enumerate(paths):
        for k, (row, a) in enumerate(zip(hist_rows, actions, strict=True)):
            attempted[i, k] = True
            tokens[i, k] = token_lengths[a] if token_lengths is not None else 1.0
            rewards[i, k] = float(a == z)
            score_rows[i, k] = row
            # d log softmax(theta_row)[a] / d theta_row = onehot(a) - softmax(theta_row)
            score_values[i, k] = -policy[row]
            score_values[i, k, a] += 1.0
    return TrajectoryTable(probs, rewards, attempted, score_rows, score_values, tokens)


def design_exact_check_game() -> GuessingGame:
    """DESIGN section 2's exact check: z in {0,1,2}, prior [0.5, 0.3, 0.2], K = 3 (43 histories)."""
    return GuessingGame(prior=(0.5, 0.3, 0.2), num_attempts=3)


def design_exact_check_toy() -> Toy:
    """The exact-check game under its cosine initial logits."""
    game = design_exact_check_game()
    return game.toy(game.design_logits(), name="tabular_k3")


def design_give_up_game() -> GuessingGame:
    """The exact-check game with a give-up action (index 3, one token) and guesses 0, 1, 2 of 1, 2
    and 3 tokens: the cost-aware check (J = V@3 - E[cost]) of ``calgrpo check-estimator --cost``."""
    return GuessingGame(prior=(0.5, 0.3, 0.2), num_attempts=3, give_up=True, token_lengths=(1, 2, 3, 1))


def design_give_up_toy() -> Toy:
    """The give-up game under the same cosine formula for its initial logits."""
    game = design_give_up_game()
    return game.toy(game.design_logits(), name="tabular_k3_giveup")


def random_guessing_toy(
    num_values: int, num_attempts: int, seed: int, logit_scale: float = 1.0, give_up: bool = False
) -> Toy:
    """A larger game with a random (Dirichlet(1)) prior and N(0, logit_scale^2) logits, seeded; with
    ``give_up``, a give-up action and answers of 1..3 tokens (drawn from the same seed)."""
    generator = torch.Generator().manual_seed(seed)
    # -log(U) is Exponential(1); normalised exponentials are a Dirichlet(1) draw.
    prior = -torch.log(torch.rand(num_values, generator=generator, dtype=torch.float64))
    prior = tuple(float(p) for p in prior / prior.sum())
    lengths = None
    if give_up:
        lengths = tuple(int(n) for n in torch.randint(1, 4, (num_values + 1,), generator=generator))
    game = GuessingGame(prior=prior, num_attempts=num_attempts, give_up=give_up, token_lengths=lengths)
    logits = logit_scale * torch.randn(
        game.num_histories, game.num_actions, generator=generator, dtype=torch.float64
    )
    suffix = "_giveup" if give_up else ""
    return game.toy(logits, name=f"random_n{num_values}_k{num_attempts}_seed{seed}{suffix}")
