"""From attempt records to tensors: masks cover attempt tokens only; behaviour log-probs match the trainer."""

from __future__ import annotations

import pytest
import torch

from calgrpo.errors import InvalidInputError
from calgrpo.rollout.chat import ChatLayout
from calgrpo.rollout.config import RolloutConfig, SamplingParams
from calgrpo.rollout.hf_engine import TransformersEngine
from calgrpo.rollout.loop import rollout
from calgrpo.tasks import get_task
from calgrpo.train.batch import build_batch
from calgrpo.train.scoring import token_logprobs


def _records(policy, num_problems=4, group=3, attempts=4, seed=0):
    layout = ChatLayout(policy.tokenizer)
    engine = TransformersEngine(policy.model, policy.tokenizer.pad_token_id, layout.stop_token_ids)
    problems = get_task("guess", num_values=8).generate(num_problems, seed=seed)
    config = RolloutConfig(num_attempts=attempts, group_size=group, sampling=SamplingParams(max_new_tokens=2))
    return rollout(problems, engine, layout, config, torch.Generator().manual_seed(seed))


def test_build_batch_masks_exactly_the_completion_tokens(tiny_policy) -> None:
    records = _records(tiny_policy)
    batch = build_batch(records, 4, tiny_policy.tokenizer.pad_token_id)
    assert batch.input_ids.shape[0] == 4 * 3
    assert batch.rewards.shape == (4, 3, 4)
    n = 0
    for p, problem_id in enumerate(batch.problem_ids):
        for sample in range(3):
            trajectory = sorted(
                (r for r in records if r.problem_id == problem_id and r.sample == sample),
                key=lambda r: r.attempt,
            )
            expected_ids, expected_mask, expected_attempt = [], [], []
            for r in trajectory:
                expected_ids += r.context_token_ids + r.completion_token_ids
                expected_mask += [False] * len(r.context_token_ids) + [True] * len(r.completion_token_ids)
                expected_attempt += [0] * len(r.context_token_ids) + [r.attempt - 1] * len(
                    r.completion_token_ids
                )
                assert batch.attempted[p, sample, r.attempt - 1]
                assert batch.rewards[p, sample, r.attempt - 1] == r.reward
            length = len(expected_ids)
            assert batch.input_ids[n, :length].tolist() == expected_ids
            assert batch.loss_mask[n, :length].tolist() == expected_mask  # prompt and feedback: never trained
            assert not batch.loss_mask[n, length:].any() and not batch.attention_mask[n, length:].any()
            assert batch.token_attempt[n, :length].tolist() == expected_attempt
            assert batch.attempted[p, sample].sum() == len(trajectory)
            n += 1


def test_behaviour_logprobs_equal_the_trainers_scoring(tiny_policy) -> None:
    """On the first pass the PPO ratio must be exactly 1 (up to float error)."""
    batch = build_batch(_records(tiny_policy), 4, tiny_policy.tokenizer.pad_token_id)
    with torch.no_grad():
        logprobs, entropy = token_logprobs(tiny_policy.model, batch.input_ids, batch.attention_mask)
    mask = batch.loss_mask
    assert mask.sum() > 20
    torch.testing.assert_close(logprobs[mask], batch.behaviour_logprobs[mask], atol=1e-5, rtol=0)
    assert torch.all(entropy[mask] > 0)


def test_build_batch_rejects_incomplete_groups(tiny_policy) -> None:
    records = _records(tiny_policy)
    missing_sample = [r for r in records if not (r.problem_id == records[0].problem_id and r.sample == 1)]
    with pytest.raises(InvalidInputError, match="has no trajectory 1"):
        build_batch(missing_sample, 4, 0)
    with pytest.raises(InvalidInputError, match="outside 1..2"):
        build_batch(records, 2, 0)
    with pytest.raises(InvalidInputError, match="no attempt records"):
        build_batch([], 4, 0)
