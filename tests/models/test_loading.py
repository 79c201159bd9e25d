"""Policy loading from a local folder (the same code path as s3:// after download) and tiny models."""

from __future__ import annotations

import pytest
import torch

from calgrpo.errors import ConfigError, InvalidInputError
from calgrpo.models.config import TinyModelConfig
from calgrpo.models.loading import load_policy, resolve_model_folder
from calgrpo.storage import StorageError
from tests.helpers import tiny_guess_policy


def test_tiny_policy_roundtrips_through_a_local_folder(tmp_path, tiny_policy_folder) -> None:
    first = load_policy(str(tiny_policy_folder))
    first.model.save_pretrained(tmp_path / "copy")
    first.tokenizer.save_pretrained(tmp_path / "copy")
    second = load_policy(str(tmp_path / "copy"))
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), second.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    ids = torch.tensor([second.tokenizer("guess 0 to 7 hint 3")["input_ids"]])
    torch.testing.assert_close(first.model(ids).logits, second.model(ids).logits)


def test_tiny_tokenizer_has_one_token_per_number_and_a_chat_template(tiny_policy) -> None:
    tokenizer = tiny_policy.tokenizer
    for value in range(8):
        assert len(tokenizer(str(value), add_special_tokens=False)["input_ids"]) == 1
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hint 3"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|assistant|>")
    assert tokenizer.eos_token == "<|end|>"


def test_tiny_models_are_seeded_and_leave_the_global_rng_alone(tmp_path) -> None:
    state = torch.get_rng_state()
    a = tiny_guess_policy(tmp_path / "a", seed=1).model.state_dict()
    b = tiny_guess_policy(tmp_path / "b", seed=1).model.state_dict()
    c = tiny_guess_policy(tmp_path / "c", seed=2).model.state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_tiny_qwen2_builds_and_loads(tmp_path) -> None:
    policy = tiny_guess_policy(tmp_path / "qwen", architecture="qwen2")
    assert policy.model.config.model_type == "qwen2"


def test_tiny_model_config_validates() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        TinyModelConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ConfigError, match="num_layers"):
        TinyModelConfig(num_layers=0)


def test_resolve_model_folder(tmp_path) -> None:
    assert resolve_model_folder("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"  # a hub id
    with pytest.raises(InvalidInputError, match="does not exist"):
        resolve_model_folder(str(tmp_path / "missing"))
    with pytest.raises(InvalidInputError, match="no config.json"):
        resolve_model_folder(str(tmp_path))
    with pytest.raises(StorageError, match="no bucket"):
        resolve_model_folder("s3:///prefix")
