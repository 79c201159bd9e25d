"""LoRA training: only adapters move, and the saved model is the plain architecture with them merged."""

from __future__ import annotations

import copy

import torch

from calgrpo.train.batch import build_batch
from calgrpo.train.config import TrainConfig
from calgrpo.train.lora import apply_lora, merge_lora_weights
from calgrpo.train.trainer import Trainer
from tests.train.test_batch import _records


def test_merge_matches_peft_merge_and_unload(tiny_policy) -> None:
    model = apply_lora(copy.deepcopy(tiny_policy.model), rank=4, alpha=8.0, targets=("q_proj", "down_proj"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # peft starts B at zero; give it values so the merge is not trivial
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    merged = merge_lora_weights(model.state_dict(), scaling=8.0 / 4)
    reference = model.merge_and_unload().state_dict()
    assert merged.keys() == reference.keys()
    for key, tensor in reference.items():
        torch.testing.assert_close(merged[key], tensor)
    assert not torch.equal(merged["model.layers.0.self_attn.q_proj.weight"],
                           tiny_policy.model.state_dict()["model.layers.0.self_attn.q_proj.weight"])  # fmt: skip


def test_lora_trains_adapters_only_and_saves_a_plain_model(tiny_policy, tmp_path) -> None:
    from calgrpo.models.loading import load_policy

    original = {k: v.clone() for k, v in tiny_policy.model.state_dict().items()}
    batch = build_batch(_records(tiny_policy, num_problems=4, group=3, seed=2), 4, tiny_policy.tokenizer.pad_token_id)
    trainer = Trainer(tiny_policy.model, TrainConfig(learning_rate=5e-2, lora_rank=4, lora_alpha=8.0))
    trainable = [n for n, p in trainer.scorer.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    for step in range(3):
        trainer.train_on(batch, torch.Generator().manual_seed(step))
    trainer.save_model(tmp_path / "model", tiny_policy.tokenizer)
    saved = load_policy(str(tmp_path / "model"))
    weights = saved.model.state_dict()
    assert weights.keys() == original.keys()
    moved = max(float((weights[k] - original[k]).abs().max()) for k in original)
    assert moved > 1e-4  # the merged adapters changed the weights they sit on
    assert torch.equal(weights["model.embed_tokens.weight"], original["model.embed_tokens.weight"])  # not adapted
    with torch.no_grad():  # the plain saved model computes what the adapted one does
        ids = batch.input_ids[:2]
        expected = trainer.scorer.model(input_ids=ids, use_cache=False).logits
        torch.testing.assert_close(saved.model(input_ids=ids, use_cache=False).logits, expected, rtol=1e-4, atol=1e-4)
