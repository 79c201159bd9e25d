"""Policy loading from a local folder (the same code path as s3:// after download) and tiny models."""

from __future__ import annotations

import shutil

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


def test_resolve_model_folder_refuses_what_is_no_model(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="no such folder"):
        resolve_model_folder(str(tmp_path / "missing"))
    with pytest.raises(InvalidInputError, match="no config.json"):
        resolve_model_folder(str(tmp_path))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="not a model folder"):
        resolve_model_folder(str(tmp_path / "file.txt"))
    with pytest.raises(StorageError, match="no bucket"):
        resolve_model_folder("s3:///prefix")
    for not_an_id in ("org/name/../../etc", "a b", "org/name@"):
        with pytest.raises(InvalidInputError, match="not a hub id"):
            resolve_model_folder(not_an_id)
    with pytest.raises(ConfigError, match="tiny:llama or tiny:qwen2"):
        resolve_model_folder("tiny:gpt5", cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())  # a failed build leaves nothing behind


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """The hub client offline, its cache under tmp_path: a hub id resolves only to what is cached."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _cache_snapshot(hub, repo: str, commit: str, refs: tuple[str, ...], source) -> None:
    """Lay out a model in the hub cache as a download would: snapshots/<commit>, refs/<name> -> commit."""
    storage = hub / ("models--" + repo.replace("/", "--"))
    shutil.copytree(source, storage / "snapshots" / commit)
    (storage / "refs").mkdir(parents=True)
    for ref in refs:
        (storage / "refs" / ref).write_text(commit)


def test_hub_ids_with_a_revision_load_the_pinned_snapshot(offline_hub, tmp_path) -> None:
    old, new = "a" * 40, "b" * 40
    tiny_guess_policy(tmp_path / "v1", seed=1)
    tiny_guess_policy(tmp_path / "v2", seed=2)
    _cache_snapshot(offline_hub, "acme/guesser", old, ("v1",), tmp_path / "v1")
    shutil.copytree(tmp_path / "v2", offline_hub / "models--acme--guesser" / "snapshots" / new)
    (offline_hub / "models--acme--guesser" / "refs" / "main").write_text(new)
    latest, pinned = load_policy("acme/guesser"), load_policy("acme/guesser@v1")
    by_commit = load_policy(f"acme/guesser@{old}")
    weight = "model.embed_tokens.weight"
    assert torch.equal(pinned.model.state_dict()[weight], by_commit.model.state_dict()[weight])
    assert not torch.equal(pinned.model.state_dict()[weight], latest.model.state_dict()[weight])
    assert pinned.source == "acme/guesser@v1"
    with pytest.raises(InvalidInputError, match=r"acme/guesser@v9: cannot get it from the hub.*network"):
        resolve_model_folder("acme/guesser@v9")
    with pytest.raises(InvalidInputError, match="acme/unknown: cannot get it from the hub"):
        resolve_model_folder("acme/unknown")


def test_tiny_models_load_by_name_and_are_built_once(tmp_path) -> None:
    cache = tmp_path / "cache"
    folder = resolve_model_folder("tiny:llama", cache_dir=cache)
    assert resolve_model_folder("tiny:llama", cache_dir=cache) == folder
    rebuilt = resolve_model_folder("tiny:llama", cache_dir=tmp_path / "elsewhere")
    a = load_policy(folder).model.state_dict()
    b = load_policy(rebuilt).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same model wherever it is built
    assert sorted(p.name for p in cache.iterdir()) == ["tiny-llama"]
