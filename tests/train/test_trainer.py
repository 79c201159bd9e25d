"""The trainer: masked loss, improvement on a fixed batch, configuration errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from calgrpo.algorithms import attempt_advantages, policy_loss
from calgrpo.errors import ConfigError, UnknownNameError
from calgrpo.train.batch import build_batch
from calgrpo.train.config import TrainConfig
from calgrpo.train.scoring import token_logprobs
from calgrpo.train.trainer import Trainer
from tests.train.test_batch import _records


def _surrogate(model, batch, method="cal") -> float:
    """The policy-gradient loss of the current model on the batch (lower is better)."""
    advantages = attempt_advantages(batch.rewards, batch.attempted, method)
    per_token = advantages.view(batch.input_ids.shape[0], -1).gather(1, batch.token_attempt)
    with torch.no_grad():
        logprobs, _ = token_logprobs(model, batch.input_ids, batch.attention_mask)
        out = policy_loss(
            logprobs,
            batch.behaviour_logprobs,
            per_token,
            batch.loss_mask,
            normalizer=batch.input_ids.shape[0],
        )
    return float(out.loss)


def test_trainer_lowers_the_loss_on_a_fixed_batch(tiny_policy) -> None:
    records = _records(tiny_policy, num_problems=6, group=4, seed=1)
    batch = build_batch(records, 4, tiny_policy.tokenizer.pad_token_id)
    assert batch.rewards.amax(-1).std() > 0  # some groups carry signal
    trainer = Trainer(tiny_policy.model, TrainConfig(learning_rate=1e-2, clip_low=0.99, clip_high=10.0))
    before = _surrogate(tiny_policy.model, batch)
    for step in range(5):
        metrics = trainer.train_on(batch, torch.Generator().manual_seed(step))
    after = _surrogate(tiny_policy.model, batch)
    assert after < before - 1e-3
    assert trainer.step == 5
    for key in (
        "train/loss",
        "train/kl",
        "train/clip_fraction",
        "train/grad_norm",
        "train/entropy",
        "train/tokens_per_s",
        "rollout/v@k",
        "rollout/zero_variance_groups",
        "train/advantage_mean",
    ):
        assert key in metrics


def test_trainer_ignores_context_tokens(tiny_policy) -> None:
    """Changing behaviour log-probs of prompt/feedback tokens must not change the update."""
    batch = build_batch(_records(tiny_policy, seed=2), 4, tiny_policy.tokenizer.pad_token_id)
    junk = batch.behaviour_logprobs.clone()
    junk[~batch.loss_mask] = 123.0
    weights = {}
    for name, behaviour in (("clean", batch.behaviour_logprobs), ("junk", junk)):
        model = type(tiny_policy.model)(tiny_policy.model.config)
        model.load_state_dict(tiny_policy.model.state_dict())
        Trainer(model, TrainConfig()).train_on(
            dataclasses.replace(batch, behaviour_logprobs=behaviour), torch.Generator().manual_seed(0)
        )
        weights[name] = model.state_dict()
    for key, value in weights["clean"].items():
        assert torch.equal(value, weights["junk"][key]), key


def test_trainer_minibatches_and_epochs_count_optimizer_steps(tiny_policy) -> None:
    batch = build_batch(_records(tiny_policy), 4, tiny_policy.tokenizer.pad_token_id)
    trainer = Trainer(tiny_policy.model, TrainConfig(ppo_epochs=3, minibatches=2, micro_batch_size=2))
    metrics = trainer.train_on(batch, torch.Generator().manual_seed(0))
    assert trainer.step == 6
    assert metrics["train/step"] == 6


def test_trainer_state_roundtrip(tiny_policy) -> None:
    batch = build_batch(_records(tiny_policy), 4, tiny_policy.tokenizer.pad_token_id)
    trainer = Trainer(tiny_policy.model, TrainConfig(warmup_steps=3))
    trainer.train_on(batch, torch.Generator().manual_seed(0))
    other = Trainer(tiny_policy.model, TrainConfig(warmup_steps=3))
    other.load_state_dict(trainer.state_dict())
    assert other.step == 1
    assert other.scheduler.get_last_lr() == trainer.scheduler.get_last_lr()


def test_trainer_follows_the_decay_and_resumes_on_it(tiny_policy) -> None:
    batch = build_batch(_records(tiny_policy), 4, tiny_policy.tokenizer.pad_token_id)
    config = TrainConfig(learning_rate=1e-3, minibatches=2, lr_schedule="linear", lr_decay_steps=8,
                         lr_final_ratio=0.25)  # fmt: skip
    trainer = Trainer(tiny_policy.model, config)
    rates = [trainer.train_on(batch, torch.Generator().manual_seed(0))["train/lr"] for _ in range(2)]
    resumed = Trainer(tiny_policy.model, config)
    resumed.load_state_dict(trainer.state_dict())
    rates += [resumed.train_on(batch, torch.Generator().manual_seed(0))["train/lr"] for _ in range(2)]
    # Two steps a round; train/lr is the rate after the round's last step: at steps 2, 4, 6, 8 of the
    # 8-step decay (a resumed trainer that restarted the curve would give 0.25 and 0.5 again).
    assert rates == pytest.approx([1e-3 * (1 - 0.75 * t) for t in (0.25, 0.5, 0.75, 1.0)])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"ppo_epochs": 0}, "ppo_epochs"),
        ({"clip_low": 1.5}, "clip_low"),
        ({"temperature": 0.0}, "temperature"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"lr_schedule": "linear"}, "lr_decay_steps"),
        ({"lr_final_ratio": 1.5}, "lr_final_ratio"),
    ],
)
def test_train_config_validates(kwargs, field) -> None:
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**kwargs)


def test_trainer_rejects_unknown_method_and_missing_reference(tiny_policy) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'cal'"):
        Trainer(tiny_policy.model, TrainConfig(method="cla"))
    with pytest.raises(ConfigError, match="reference model"):
        Trainer(tiny_policy.model, TrainConfig(kl_coef=0.1))
