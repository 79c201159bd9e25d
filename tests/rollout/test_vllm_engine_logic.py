"""The vLLM engine's logic on CPU, without vLLM: arguments in, prompts and sampling out, outputs back.

The vLLM side is played by ``tests/rollout/vllm_fakes.py``, whose classes carry exactly the names the
pinned release declares (checked against the wheel by ``test_vllm_contract.py``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from calgrpo.errors import CalgrpoError, ConfigError, InvalidInputError
from calgrpo.rollout import vllm_engine
from calgrpo.rollout.chat import ChatLayout
from calgrpo.rollout.config import RolloutConfig, SamplingParams, VLLMSettings
from calgrpo.rollout.loop import rollout
from calgrpo.rollout.vllm_engine import (
    LOGPROBS_MODE,
    VLLM_FINISH_REASONS,
    VLLMEngine,
    completion_of,
    generation_of,
    llm_arguments,
    row_seeds,
    sampling_arguments,
    token_prompts,
)
from calgrpo.tasks import Problem
from tests.rollout import vllm_fakes
from tests.rollout.vllm_fakes import FakeLLM, completion, request


def test_vllm_engine_module_imports_without_vllm() -> None:
    code = ("import sys, calgrpo.rollout.vllm_engine, calgrpo.rollout.vllm_contract, calgrpo.rollout.vllm_wheel; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'vllm'))")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"


def test_vllm_engine_without_vllm_is_one_clear_config_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError, installed or not
    with pytest.raises(ConfigError, match=r"needs vLLM.*calgrpo\[gpu\].*--engine transformers"):
        VLLMEngine("model-folder", [2])


def test_vllm_llm_arguments_carry_the_settings() -> None:
    settings = VLLMSettings(
        gpu_memory_utilization=0.5, tensor_parallel_size=2, max_model_len=4096, dtype="float32", seed=3
    )
    arguments = llm_arguments("/models/round-3", settings)
    assert arguments == {"model": "/models/round-3", "enable_prefix_caching": True, "gpu_memory_utilization": 0.5,
                         "tensor_parallel_size": 2, "max_model_len": 4096, "dtype": "float32", "seed": 3,
                         "logprobs_mode": "processed_logprobs"}  # fmt: skip
    assert arguments["logprobs_mode"] == LOGPROBS_MODE


def test_vllm_sampling_arguments_sample_with_our_stop_tokens_only() -> None:
    params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=12)
    stop = [2, 7]
    arguments = sampling_arguments(params, 1234, stop)
    assert arguments == {"n": 1, "temperature": 0.7, "top_p": 0.9, "max_tokens": 12, "seed": 1234, "logprobs": 0,
                         "stop_token_ids": [2, 7], "ignore_eos": True, "detokenize": False}  # fmt: skip
    stop.append(9)
    assert arguments["stop_token_ids"] == [2, 7]  # a copy: vLLM may extend its own list
    fake = vllm_fakes.SamplingParams(**arguments)  # every name is a declared SamplingParams field
    assert fake.logprobs == 0 and fake.ignore_eos


def test_vllm_sampling_arguments_greedy_is_temperature_zero() -> None:
    greedy = sampling_arguments(SamplingParams(temperature=0.7, greedy=True, max_new_tokens=4), 5, [2])
    assert greedy["temperature"] == 0.0 and greedy["max_tokens"] == 4


def test_vllm_sampling_arguments_need_a_resolved_budget() -> None:
    with pytest.raises(InvalidInputError, match="max_new_tokens is None"):
        sampling_arguments(SamplingParams(), 0, [2])


def test_vllm_row_seeds_come_from_the_generator() -> None:
    first = row_seeds(6, torch.Generator().manual_seed(11))
    assert first == row_seeds(6, torch.Generator().manual_seed(11))
    assert first != row_seeds(6, torch.Generator().manual_seed(12))
    assert len(set(first)) == 6 and all(0 <= seed < 2**31 - 1 for seed in first)
    assert row_seeds(0, torch.Generator().manual_seed(11)) == []


def test_vllm_token_prompts_copy_each_row() -> None:
    rows = [[1, 2, 3], [4]]
    prompts = token_prompts(rows)
    assert prompts == [{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": [4]}]
    rows[0].append(9)
    assert prompts[0]["prompt_token_ids"] == [1, 2, 3]
    assert all(set(p) <= set(vllm_fakes.DECLARED["vllm.TokensPrompt"]) for p in prompts)


def test_vllm_generation_takes_the_sampled_tokens_logprob() -> None:
    stopped = completion([5, 9, 2], [-0.1, -1.5, -0.2], "stop", extra=2)  # other ranked entries ignored
    generation = generation_of(completion_of(request(stopped)))
    assert generation.token_ids == [5, 9, 2] and generation.logprobs == [-0.1, -1.5, -0.2]
    assert generation.finish_reason == "stop"
    assert generation_of(completion([7], [-3.0], "length")).finish_reason == "length"


@pytest.mark.parametrize("reason", ["abort", "error", "repetition"])
def test_vllm_requests_vllm_gave_up_on_fail_the_rollout(reason) -> None:
    with pytest.raises(CalgrpoError, match=f"ended a request with '{reason}' after 1 tokens"):
        generation_of(completion([7], [-3.0], reason))


def test_vllm_finish_reasons_cover_vllms() -> None:
    assert set(VLLM_FINISH_REASONS) == set(vllm_fakes.FINISH_REASONS)
    with pytest.raises(InvalidInputError, match=r"unknown vLLM finish reason None; known: \['abort'"):
        generation_of(completion([7], [-3.0], None))


def test_vllm_missing_logprobs_are_an_error_never_a_zero() -> None:
    missing_token = vllm_fakes.CompletionOutput(token_ids=[1, 2], finish_reason="stop",
                                                logprobs=[{1: vllm_fakes.Logprob(logprob=-1.0)}, {3: vllm_fakes.Logprob(logprob=-2.0)}])  # fmt: skip
    with pytest.raises(InvalidInputError, match="no log-prob for sampled token 2: got \\[3\\]"):
        generation_of(missing_token)
    short = vllm_fakes.CompletionOutput(
        token_ids=[1, 2], logprobs=[{1: vllm_fakes.Logprob(logprob=-1.0)}], finish_reason="stop"
    )
    with pytest.raises(InvalidInputError, match="1 log-prob positions for 2 tokens"):
        generation_of(short)
    with pytest.raises(InvalidInputError, match="none log-prob positions"):
        generation_of(vllm_fakes.CompletionOutput(token_ids=[1], finish_reason="stop"))


def test_vllm_one_completion_per_request() -> None:
    one = completion([1], [-1.0], "stop")
    with pytest.raises(InvalidInputError, match="returned 2 completions; n=1"):
        completion_of(request(one, one))


def _fake_engine(monkeypatch, script, stop=(2,)):
    built = {}

    def make_llm(**arguments):
        built.update(arguments)
        return FakeLLM(script)

    module = vllm_fakes.fake_vllm_module()
    module.LLM = make_llm
    monkeypatch.setattr(vllm_engine, "import_vllm", lambda: module)
    engine = VLLMEngine("model-folder", list(stop), VLLMSettings(seed=5))
    assert built == llm_arguments("model-folder", VLLMSettings(seed=5))
    return engine


def test_vllm_session_grows_rows_and_seeds_each_one(monkeypatch) -> None:
    def script(prompt, params):
        return [params.seed % 50 + 10, 2], [-0.5, -0.25], "stop"

    engine = _fake_engine(monkeypatch, script)
    session = engine.open_session([[1, 1], [1, 3]])
    generations = session.generate(SamplingParams(max_new_tokens=4), torch.Generator().manual_seed(0))
    seeds = row_seeds(2, torch.Generator().manual_seed(0))
    assert [g.token_ids for g in generations] == [[seeds[0] % 50 + 10, 2], [seeds[1] % 50 + 10, 2]]
    assert session.rows == [[1, 1, *generations[0].token_ids], [1, 3, *generations[1].token_ids]]
    prompts, sampling = engine.llm.calls[0]
    assert [p["prompt_token_ids"] for p in prompts] == [[1, 1], [1, 3]]
    assert [s.seed for s in sampling] == seeds
    assert all(s.stop_token_ids == [2] and s.max_tokens == 4 and s.ignore_eos for s in sampling)
    session.keep([1])
    session.append([[8]])
    session.generate(SamplingParams(max_new_tokens=4, greedy=True), torch.Generator().manual_seed(1))
    prompts, sampling = engine.llm.calls[1]
    assert (
        prompts == [{"prompt_token_ids": [1, 3, *generations[1].token_ids, 8]}]
        and sampling[0].temperature == 0.0
    )
    with pytest.raises(InvalidInputError, match="append got 2 suffixes for 1 rows"):
        session.append([[1], [2]])
    session.keep([])
    assert (
        session.generate(SamplingParams(max_new_tokens=4), torch.Generator()) == []
        and len(engine.llm.calls) == 2
    )


def test_vllm_engine_runs_the_multi_attempt_loop(monkeypatch, tiny_policy) -> None:
    """The rollout loop over the vLLM engine with vLLM faked: records carry vLLM's tokens,
    log-probs and finish reasons; the same seed gives the same records."""
    layout = ChatLayout(tiny_policy.tokenizer)
    stop = layout.stop_token_ids[0]

    def script(prompt, params):
        if params.seed % 2:  # cut at the budget
            return [5] * params.max_tokens, [-0.5] * params.max_tokens, "length"
        return [6, stop], [-0.75, -0.125], "stop"

    problems = [Problem(id="p", task="guess", prompt="Guess a number from 1 to 8.", answer="3")]
    config = RolloutConfig(num_attempts=2, group_size=4, sampling=SamplingParams(max_new_tokens=3))

    def run():
        engine = _fake_engine(monkeypatch, script, stop=layout.stop_token_ids)
        return rollout(problems, engine, layout, config, torch.Generator().manual_seed(0))

    records = run()
    assert len({r.sample for r in records}) == 4 and {r.attempt for r in records} <= {1, 2}
    for record in records:
        if record.finish_reason == "stop":
            assert record.completion_token_ids == [6, stop] and record.completion_logprobs == [-0.75, -0.125]
        else:
            assert record.completion_token_ids == [5, 5, 5] and record.completion_logprobs == [-0.5] * 3
    assert {r.finish_reason for r in records} == {"stop", "length"}
    assert [(r.sample, r.attempt, r.completion_token_ids) for r in run()] == [
        (r.sample, r.attempt, r.completion_token_ids) for r in records
    ]
