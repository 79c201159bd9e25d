"""Checkpoints: complete only with a valid manifest; the newest complete one wins; exact restore."""

from __future__ import annotations

import torch

from calgrpo.manifest import is_complete
from calgrpo.train.checkpoint import checkpoint_folder, latest_checkpoint, load_checkpoint, save_checkpoint
from calgrpo.train.config import TrainConfig
from calgrpo.train.trainer import Trainer


def _save(root, round_index, policy, trainer):
    return save_checkpoint(
        checkpoint_folder(root, round_index),
        model=policy.model,
        tokenizer=policy.tokenizer,
        trainer_state=trainer.state_dict(),
        state={"round": round_index},
    )


def test_checkpoint_roundtrip_and_latest(tmp_path, tiny_policy) -> None:
    trainer = Trainer(tiny_policy.model, TrainConfig())
    trainer.step = 7
    _save(tmp_path, 2, tiny_policy, trainer)
    with torch.no_grad():
        for p in tiny_policy.model.parameters():
            p.add_(0.5)
    newest = _save(tmp_path, 4, tiny_policy, trainer)
    assert is_complete(newest)
    assert latest_checkpoint(tmp_path) == newest

    fresh = type(tiny_policy.model)(tiny_policy.model.config)
    trainer_state, state = load_checkpoint(newest, fresh)
    assert state == {"round": 4}
    assert trainer_state["step"] == 7
    for key, value in tiny_policy.model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key


def test_incomplete_or_corrupt_checkpoints_are_skipped(tmp_path, tiny_policy) -> None:
    trainer = Trainer(tiny_policy.model, TrainConfig())
    good = _save(tmp_path, 2, tiny_policy, trainer)
    corrupt = _save(tmp_path, 4, tiny_policy, trainer)
    with open(corrupt / "trainer.pt", "ab") as handle:
        handle.write(b"x")
    unfinished = checkpoint_folder(tmp_path, 6)
    (unfinished / "model").mkdir(parents=True)  # a crash before the manifest
    assert not is_complete(corrupt) and not is_complete(unfinished)
    assert latest_checkpoint(tmp_path) == good
    assert latest_checkpoint(tmp_path / "nothing") is None
