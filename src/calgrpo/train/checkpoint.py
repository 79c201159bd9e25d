"""Training checkpoints: model, optimizer, scheduler, RNG states and progress, manifest last.

Layout: ``<root>/round_<R:06d>/{model/, trainer.pt, rng.pt, state.json, manifest.json}``. ``model/``
is a ``save_pretrained`` folder (weights and tokenizer), so any checkpoint is also a loadable model.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calgrpo.manifest import is_complete, write_manifest

log = logging.getLogger(__name__)


def checkpoint_folder(root: Path, round_index: int) -> Path:
    return root / f"round_{round_index:06d}"


def save_checkpoint(folder: Path, *, model, tokenizer, trainer_state: dict, state: dict[str, Any]) -> Path:
    """Write a complete checkpoint into ``folder`` (replacing what is there); returns the folder."""
    if folder.exists():
        shutil.rmtree(folder)  # a leftover from a crash: never mix two writes in one folder
    folder.mkdir(parents=True)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    torch.save(trainer_state, folder / "trainer.pt")
    torch.save(
        {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
        folder / "rng.pt",
    )
    (folder / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True))
    write_manifest(folder)
    return folder


def save_train_output(
    folder: Path,
    trainer,
    tokenizer,
    state: dict[str, Any],
    before_manifest: Callable[[Path], None] | None = None,
) -> Path:
    """``calgrpo train``'s output, from every rank of a (possibly distributed) run; returns the folder.

    All ranks write their shards of model and optimizer state (``trainer_shards/``, a
    torch.distributed.checkpoint any world size can load) and join in gathering the full weights;
    rank 0 writes ``model/`` (a save_pretrained folder), ``trainer.pt`` (scheduler, step),
    ``state.json``, whatever ``before_manifest(folder)`` adds (the trackers' files) and, last, the
    manifest.
    """
    from calgrpo.train.distributed import barrier, full_state_dict, save_sharded

    context = trainer.context
    if context.is_main and folder.exists():
        shutil.rmtree(folder)  # never mix two writes in one folder
    barrier(context)
    save_sharded(folder / "trainer_shards", trainer.scorer, trainer.optimizer)
    weights = full_state_dict(trainer.scorer)
    if context.is_main:
        trainer.model.save_pretrained(folder / "model", state_dict=trainer.model_weights(weights))
        tokenizer.save_pretrained(folder / "model")
        torch.save(trainer.state_dict(with_optimizer=False), folder / "trainer.pt")
        (folder / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True))
        if before_manifest is not None:
            before_manifest(folder)
        write_manifest(folder)
    barrier(context)
    return folder


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root``; incomplete ones are skipped with a warning."""
    if not root.is_dir():
        return None
    for folder in sorted(root.glob("round_*"), reverse=True):
        if is_complete(folder):
            return folder
        log.warning("skipping incomplete checkpoint %s (no valid manifest)", folder)
    return None


def load_checkpoint(folder: Path, model) -> tuple[dict, dict]:
    """Load weights into ``model``, restore global RNG states; returns (trainer_state, state)."""
    from safetensors.torch import load_file

    weights = {}
    for shard in sorted((folder / "model").glob("*.safetensors")):
        weights.update(load_file(shard))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # Tied output embeddings are saved once; anything else missing means a different model.
    real_missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if real_missing or unexpected:
        raise ValueError(
            f"checkpoint {folder} does not fit the model: missing {real_missing}, unexpected {unexpected}"
        )
    rng = torch.load(folder / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    trainer_state = torch.load(folder / "trainer.pt", weights_only=False)
    state = json.loads((folder / "state.json").read_text())
    return trainer_state, state
