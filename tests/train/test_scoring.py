"""Chunked scoring, token-budget micro-batches, bf16 autocast and gradient checkpointing: the same
gradients as the plain path, less memory."""

from __future__ import annotations

import copy

import pytest
import torch

from calgrpo.train.batch import build_batch, token_budget_micro_batches
from calgrpo.train.config import TrainConfig
from calgrpo.train.scoring import PolicyScorer
from calgrpo.train.trainer import Trainer
from tests.train.test_batch import _records


@pytest.fixture
def batch(tiny_policy):
    return build_batch(_records(tiny_policy, num_problems=4, group=3, seed=2), 4, tiny_policy.tokenizer.pad_token_id)


def _scored_gradient(model, batch, chunk_tokens: int):
    model.zero_grad(set_to_none=True)
    logprobs, entropy = PolicyScorer(model, chunk_tokens)(batch.input_ids, batch.attention_mask, batch.loss_mask)
    (logprobs.sum() + 0.1 * entropy.sum()).backward()
    return logprobs.detach(), entropy.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("chunk_tokens", [1, 7, 10_000])
def test_chunked_scoring_equals_full_logits(tiny_policy, batch, chunk_tokens) -> None:
    model = tiny_policy.model.train()
    full_lp, full_ent, full_grad = _scored_gradient(model, batch, chunk_tokens=0)
    lp, ent, grad = _scored_gradient(model, batch, chunk_tokens=chunk_tokens)
    mask = batch.loss_mask.clone()
    mask[:, 0] = False
    assert mask.sum() > 10
    torch.testing.assert_close(lp[mask], full_lp[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent[mask], full_ent[mask], rtol=1e-5, atol=1e-5)
    assert (lp[~mask] == 0).all() and (ent[~mask] == 0).all()
    for name in full_grad:
        torch.testing.assert_close(grad[name], full_grad[name], rtol=1e-4, atol=1e-6)


def test_token_budget_micro_batches_cover_rows_once_within_budget() -> None:
    lengths = torch.tensor([5, 30, 12, 12, 3, 40, 7])
    rows = torch.arange(100, 107)
    batches = token_budget_micro_batches(rows, lengths, budget=40)
    assert sorted(torch.cat(batches).tolist()) == rows.tolist()
    for micro in batches:
        longest = int(lengths[micro - 100].max())
        assert len(micro) * longest <= 40 or len(micro) == 1
    # Longest first, so rows of similar length share a micro-batch.
    assert batches[0].tolist() == [105] and batches[1].tolist() == [101]
    assert token_budget_micro_batches(rows, lengths, budget=1) == [rows[[i]] for i in [5, 1, 2, 3, 6, 0, 4]]


def _one_step(policy, batch, **overrides) -> dict[str, torch.Tensor]:
    model = copy.deepcopy(policy.model).train()
    config = TrainConfig(learning_rate=1e-2, minibatches=1, micro_batch_size=4, **overrides)
    Trainer(model, config).train_on(batch, torch.Generator().manual_seed(0))
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _max_difference(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_token_budget_and_checkpointing_give_the_same_step(tiny_policy, batch) -> None:
    plain = _one_step(tiny_policy, batch)
    moved = _max_difference(plain, {n: p.detach() for n, p in tiny_policy.model.named_parameters()})
    assert moved > 1e-3
    assert _max_difference(plain, _one_step(tiny_policy, batch, micro_batch_tokens=64)) < 1e-5
    packed = _one_step(tiny_policy, batch, micro_batch_tokens=96, pack_sequences=True)
    assert _max_difference(plain, packed) < 1e-5
    assert _max_difference(plain, _one_step(tiny_policy, batch, gradient_checkpointing=True)) < 1e-5
    assert _max_difference(plain, _one_step(tiny_policy, batch, logprob_chunk_tokens=0)) < 1e-5


def test_bf16_autocast_keeps_fp32_weights_and_a_close_step(tiny_policy, batch) -> None:
    plain = _one_step(tiny_policy, batch)
    bf16 = _one_step(tiny_policy, batch, precision="bf16")
    assert all(t.dtype == torch.float32 for t in bf16.values())  # the master weights stay fp32
    initial = {n: p.detach() for n, p in tiny_policy.model.named_parameters()}
    # Same direction, bf16 rounding aside: the updates agree far better than chance.
    update = torch.cat([(plain[k] - initial[k]).flatten() for k in plain])
    update_bf16 = torch.cat([(bf16[k] - initial[k]).flatten() for k in plain])
    assert torch.nn.functional.cosine_similarity(update, update_bf16, dim=0) > 0.9


def test_packing_plans_fit_and_cover_every_row_once() -> None:
    from calgrpo.train.packing import plan_packing

    lengths = [30, 5, 12, 50, 7, 20, 3]
    bins = plan_packing(lengths, capacity=40)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 40 or len(b) == 1 for b in bins)
    assert [3] in bins  # longer than a row: alone
    assert bins == [[3], [0, 4, 6], [5, 2, 1]]  # 50 | 30+7+3 | 20+12+5: first fit, longest first


def test_packed_rows_score_like_the_padded_batch(tiny_policy, batch) -> None:
    from calgrpo.train.packing import Packed

    lengths = batch.attention_mask.sum(1)
    rows = [0, 3, 5]
    packed = Packed.of(rows, [int(lengths[r]) for r in rows], batch.input_ids.shape[1])
    assert packed.index.shape[1] == sum(int(lengths[r]) for r in rows)  # no padding at all
    scorer = PolicyScorer(tiny_policy.model, chunk_tokens=7)
    with torch.no_grad():
        plain, _ = scorer(batch.input_ids, batch.attention_mask, batch.loss_mask)
        mask = packed.take(batch.loss_mask)
        together, _ = scorer(packed.take(batch.input_ids), packed.attention_mask(), mask,
                             position_ids=packed.position_ids)  # fmt: skip
    torch.testing.assert_close(together, packed.take(plain), rtol=1e-5, atol=1e-5)
    assert mask.sum() > 0


@pytest.mark.slow
def test_compiled_layers_give_the_same_step(tiny_policy, batch) -> None:
    """torch.compile on each decoder layer (inductor on CPU here): the eager update, up to the float
    reordering of fused kernels (AdamW's first step moves each weight by up to lr = 1e-2)."""
    plain = _one_step(tiny_policy, batch)
    assert _max_difference(plain, _one_step(tiny_policy, batch, compile_layers=True)) < 1e-3
