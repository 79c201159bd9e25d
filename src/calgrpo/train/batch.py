"""From attempt records to training tensors: sequences, masks, per-token attempt indices.

Shapes: N trajectories (N = P * G), L tokens (longest trajectory), P prompts, G group, K attempts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from calgrpo.errors import InvalidInputError
from calgrpo.rollout.records import AttemptRecord


@dataclass(frozen=True)
class TrajectoryBatch:
    """Right-padded trajectories of one rollout batch, grouped by prompt."""

    input_ids: torch.Tensor
    """(N, L) long; trajectory n = prompt n // G, sample n % G."""
    attention_mask: torch.Tensor
    """(N, L) bool, True on real tokens."""
    loss_mask: torch.Tensor
    """(N, L) bool, True on attempt (completion) tokens only: prompt and feedback are context."""
    token_attempt: torch.Tensor
    """(N, L) long, 0-based attempt index of each completion token, 0 elsewhere (masked)."""
    behaviour_logprobs: torch.Tensor
    """(N, L) float32, behaviour log-prob of each completion token, 0 elsewhere."""
    rewards: torch.Tensor
    """(P, G, K) float32 verdicts."""
    attempted: torch.Tensor
    """(P, G, K) bool."""
    tokens: torch.Tensor
    """(P, G, K) float32 tokens each attempt generated (0 where not attempted): per-token costs."""
    problem_ids: list[str]
    """(P,) problem id of each prompt, in order."""

    @property
    def group_size(self) -> int:
        return self.rewards.shape[1]


def build_batch(records: list[AttemptRecord], num_attempts: int, pad_token_id: int) -> TrajectoryBatch:
    """Assemble the records of a rollout (every problem with samples 0..G-1) into tensors."""
    if not records:
        raise InvalidInputError("no attempt records to train on")
    problem_ids = list(dict.fromkeys(r.problem_id for r in records))  # first-seen order
    group_size = max(r.sample for r in records) + 1
    by_trajectory: dict[tuple[str, int], list[AttemptRecord]] = {}
    for record in records:
        if not 1 <= record.attempt <= num_attempts:
            raise InvalidInputError(
                f"attempt {record.attempt} of {record.problem_id} is outside 1..{num_attempts}"
            )
        by_trajectory.setdefault((record.problem_id, record.sample), []).append(record)
    num_prompts = len(problem_ids)
    rewards = torch.zeros(num_prompts, group_size, num_attempts)
    attempted = torch.zeros(num_prompts, group_size, num_attempts, dtype=torch.bool)
    tokens = torch.zeros(num_prompts, group_size, num_attempts)
    sequences, completion_flags, attempt_ids, behaviour = [], [], [], []
    for p, problem_id in enumerate(problem_ids):
        for sample in range(group_size):
            attempts = sorted(by_trajectory.get((problem_id, sample), []), key=lambda r: r.attempt)
            if not attempts:
                raise InvalidInputError(
                    f"problem {problem_id} has no trajectory {sample}; every group needs G samples"
                )
            if [r.attempt for r in attempts] != list(range(1, len(attempts) + 1)):
                raise InvalidInputError(
                    f"problem {problem_id} sample {sample} has attempts {[r.attempt for r in attempts]}"
                )
            ids, flags, which, logprobs = [], [], [], []
            for r in attempts:
                k = r.attempt - 1
                rewards[p, sample, k] = r.reward
                attempted[p, sample, k] = True
                tokens[p, sample, k] = len(r.completion_token_ids)
                ids += r.context_token_ids + r.completion_token_ids
                flags += [False] * len(r.context_token_ids) + [True] * len(r.completion_token_ids)
                which += [0] * len(r.context_token_ids) + [k] * len(r.completion_token_ids)
                logprobs += [0.0] * len(r.context_token_ids) + list(r.completion_logprobs)
            sequences.append(ids)
            completion_flags.append(flags)
            attempt_ids.append(which)
            behaviour.append(logprobs)
    length = max(len(s) for s in sequences)

    def pad(rows, value, dtype):
        out = torch.full((len(rows), length), value, dtype=dtype)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row, dtype=dtype)
        return out

    input_ids = pad(sequences, pad_token_id, torch.long)
    attention_mask = pad([[True] * len(s) for s in sequences], False, torch.bool)
    loss_mask = pad(completion_flags, False, torch.bool)
    # A completion's first token is predicted from the token before it, so position 0 is never trained.
    loss_mask[:, 0] = False
    return TrajectoryBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        loss_mask=loss_mask,
        token_attempt=pad(attempt_ids, 0, torch.long),
        behaviour_logprobs=pad(behaviour, 0.0, torch.float32),
        rewards=rewards,
        attempted=attempted,
        tokens=tokens,
        problem_ids=problem_ids,
    )


def token_budget_micro_batches(rows: torch.Tensor, lengths: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Split ``rows`` (R,) with real lengths ``lengths`` (R,) into micro-batches of at most ``budget``
    padded tokens (rows x longest row), longest first; a row longer than the budget goes alone.

    Sorting by length first is what saves the padding: each micro-batch is padded only to its own
    longest row, not the batch's.
    """
    order = torch.argsort(lengths, descending=True, stable=True)
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order.tolist():
        length = int(lengths[index])
        if current and (len(current) + 1) * max(longest, length) > budget:
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        batches.append(current)
    return [rows[torch.tensor(batch)] for batch in batches]
