"""The vLLM engine: clear failure without vLLM, output conversion, and on a GPU the real thing."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch

from calgrpo.errors import ConfigError, UnknownNameError
from calgrpo.rollout.engine import open_engine
from calgrpo.rollout.vllm_engine import generation_of

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here; the missing-vLLM message cannot be observed")
def test_missing_vllm_is_one_clear_error(tiny_policy_folder) -> None:
    with pytest.raises(ConfigError, match=r"needs vLLM.*calgrpo\[gpu\].*--engine transformers"):
        open_engine("vllm", str(tiny_policy_folder))


def test_unknown_engine_lists_the_known_ones(tiny_policy_folder) -> None:
    with pytest.raises(UnknownNameError, match="transformers.*vllm|vllm.*transformers"):
        open_engine("sglang", str(tiny_policy_folder))


def test_vllm_completion_becomes_a_generation() -> None:
    """Sampled token ids with one-entry log-prob dicts (``logprobs=0``) and vLLM's finish reasons."""

    def logprob(value: float) -> SimpleNamespace:
        return SimpleNamespace(logprob=value, rank=1, decoded_token=None)

    stopped = SimpleNamespace(token_ids=[5, 9, 2], logprobs=[{5: logprob(-0.1)}, {9: logprob(-1.5)}, {2: logprob(-0.2)}],
                              finish_reason="stop")  # fmt: skip
    generation = generation_of(stopped)
    assert generation.token_ids == [5, 9, 2] and generation.logprobs == [-0.1, -1.5, -0.2]
    assert generation.finish_reason == "stop"
    cut = SimpleNamespace(token_ids=[7], logprobs=[{7: logprob(-3.0)}], finish_reason="length")
    assert generation_of(cut).finish_reason == "length"
    with pytest.raises(ValueError):  # a log-prob missing for a token is a bug, never a silent zero
        generation_of(SimpleNamespace(token_ids=[1, 2], logprobs=[{1: logprob(-1.0)}], finish_reason="stop"))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed (the gpu extra); the engine is untested here")
def test_vllm_rollout_records_match_the_trainer_scoring(tiny_policy_folder) -> None:
    """Multi-attempt rollout through vLLM: records well formed, stop tokens kept, and the behaviour
    log-probs agree with what the trainer computes for the same tokens (bf16 tolerance)."""
    from calgrpo.models.loading import load_policy
    from calgrpo.rollout.config import RolloutConfig, SamplingParams, VLLMSettings
    from calgrpo.rollout.loop import rollout
    from calgrpo.tasks import get_task
    from calgrpo.train.batch import build_batch
    from calgrpo.train.scoring import token_logprobs

    problems = get_task("guess", num_values=8).generate(16, seed=0)
    _, layout, engine = open_engine("vllm", str(tiny_policy_folder),
                                    vllm_settings=VLLMSettings(gpu_memory_utilization=0.3, dtype="float32"))  # fmt: skip
    config = RolloutConfig(num_attempts=3, group_size=4, sampling=SamplingParams(max_new_tokens=3))
    records = rollout(problems, engine, layout, config, torch.Generator().manual_seed(0))
    assert {r.attempt for r in records} <= {1, 2, 3} and len({(r.problem_id, r.sample) for r in records}) == 64
    for record in records:
        assert len(record.completion_token_ids) == len(record.completion_logprobs) >= 1
        if record.finish_reason == "stop":
            assert record.completion_token_ids[-1] in layout.stop_token_ids
    policy = load_policy(str(tiny_policy_folder))
    batch = build_batch(records, 3, policy.tokenizer.pad_token_id)
    with torch.no_grad():
        scored, _ = token_logprobs(policy.model, batch.input_ids, batch.attention_mask, score_mask=batch.loss_mask)
    mask = batch.loss_mask.clone()
    mask[:, 0] = False
    torch.testing.assert_close(scored[mask], batch.behaviour_logprobs[mask], atol=2e-3, rtol=1e-3)
