"""Sampling and the transformers engine: KV reuse matches re-encoding and a clean forward."""

from __future__ import annotations

import pytest
import torch

from calgrpo.errors import ConfigError, InvalidInputError
from calgrpo.rollout.chat import ChatLayout
from calgrpo.rollout.config import SamplingParams
from calgrpo.rollout.engine import sample_tokens
from calgrpo.rollout.hf_engine import TransformersEngine
from calgrpo.tasks import get_task


def test_sample_tokens_matches_the_distribution() -> None:
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.7]])).expand(20000, 3)
    tokens, logprobs = sample_tokens(logits, SamplingParams(), torch.Generator().manual_seed(0))
    frequencies = torch.bincount(tokens, minlength=3).float() / 20000
    torch.testing.assert_close(frequencies, torch.tensor([0.1, 0.2, 0.7]), atol=0.015, rtol=0)
    torch.testing.assert_close(logprobs, torch.log(torch.tensor([0.1, 0.2, 0.7]))[tokens])


def test_sample_tokens_greedy_top_p_and_temperature() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0]]).expand(2000, 3)
    generator = torch.Generator().manual_seed(0)
    greedy, _ = sample_tokens(logits, SamplingParams(greedy=True), generator)
    assert torch.all(greedy == 1)
    nucleus, _ = sample_tokens(logits, SamplingParams(top_p=0.6), generator)
    assert set(nucleus.tolist()) <= {1, 2}  # the top token has mass 0.665: never only it, never token 0
    _, hot = sample_tokens(logits[:1], SamplingParams(temperature=2.0, greedy=True), generator)
    torch.testing.assert_close(hot, torch.log_softmax(logits[:1] / 2.0, -1)[:, 1])


@pytest.mark.parametrize("kwargs", [{"temperature": 0.0}, {"top_p": 0.0}, {"max_new_tokens": 0}])
def test_sampling_params_validate(kwargs) -> None:
    with pytest.raises(ConfigError):
        SamplingParams(**kwargs)


def _contexts(layout: ChatLayout, n: int) -> list[list[int]]:
    problems = get_task("guess", num_values=8).generate(n, seed=5)
    contexts = [layout.prompt_ids(p.prompt) for p in problems]
    contexts[0] = contexts[0][:3] + contexts[0][-1:]  # rows of different lengths
    return contexts


def _play(policy, reuse: bool, seed: int = 0) -> list[list]:
    layout = ChatLayout(policy.tokenizer)
    engine = TransformersEngine(policy.model, policy.tokenizer.pad_token_id, layout.stop_token_ids, reuse)
    session = engine.open_session(_contexts(layout, 6))
    generator = torch.Generator().manual_seed(seed)
    turns = []
    for turn in range(4):
        generations = session.generate(SamplingParams(max_new_tokens=3), generator)
        turns.append(generations)
        if turn == 1:
            session.keep([5, 0, 3])  # drop rows and reorder the survivors
            generations = [generations[i] for i in (5, 0, 3)]
        session.append([layout.feedback_ids("higher", g.token_ids) for g in generations])
    return turns


def test_cached_session_equals_recomputing_the_history(tiny_policy) -> None:
    cached, recomputed = _play(tiny_policy, reuse=True), _play(tiny_policy, reuse=False)
    for turn_a, turn_b in zip(cached, recomputed, strict=True):
        for a, b in zip(turn_a, turn_b, strict=True):
            assert a.token_ids == b.token_ids
            assert a.finish_reason == b.finish_reason
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)
    assert _play(tiny_policy, reuse=True, seed=1) != cached


def test_cached_session_logprobs_equal_a_clean_forward(tiny_policy) -> None:
    """Padding inside the cached rows must be invisible: compare with each row run alone, unpadded."""
    layout = ChatLayout(tiny_policy.tokenizer)
    engine = TransformersEngine(tiny_policy.model, tiny_policy.tokenizer.pad_token_id, layout.stop_token_ids)
    contexts = _contexts(layout, 5)
    session = engine.open_session(contexts)
    generator = torch.Generator().manual_seed(0)
    sequences = [list(c) for c in contexts]
    checked = 0
    for _ in range(3):
        generations = session.generate(SamplingParams(max_new_tokens=3), generator)
        for row, generation in enumerate(generations):
            full = torch.tensor([sequences[row] + generation.token_ids])
            with torch.no_grad():
                logprobs = torch.log_softmax(tiny_policy.model(full).logits[0, :-1].float(), -1)
            n = len(generation.token_ids)
            expected = logprobs[-n:].gather(-1, full[0, -n:].unsqueeze(-1)).squeeze(-1)
            torch.testing.assert_close(torch.tensor(generation.logprobs), expected, atol=1e-5, rtol=0)
            sequences[row] += generation.token_ids
            checked += n
        feedback = [layout.feedback_ids("lower", g.token_ids) for g in generations]
        session.append(feedback)
        sequences = [s + f for s, f in zip(sequences, feedback, strict=True)]
    assert checked >= 15


def test_append_checks_the_row_count(tiny_policy) -> None:
    layout = ChatLayout(tiny_policy.tokenizer)
    engine = TransformersEngine(tiny_policy.model, tiny_policy.tokenizer.pad_token_id, layout.stop_token_ids)
    session = engine.open_session([layout.prompt_ids("hint 3")])
    with pytest.raises(InvalidInputError, match="append got 2 suffixes"):
        session.append([[1], [2]])
