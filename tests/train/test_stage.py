"""The train stage as the pipeline runs it: round after round through its output, it is the same
computation as ``calgrpo learn``'s trainer kept in memory (AdamW moments, warm-up, step)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from calgrpo.configs import from_json, to_json
from calgrpo.errors import ConfigError
from calgrpo.train.config import TrainConfig
from calgrpo.train.stage import TrainStageConfig, train_stage
from tests.helpers import run_calgrpo

SETTINGS = TrainConfig(learning_rate=3e-3, minibatches=2, ppo_epochs=2, warmup_steps=3, micro_batch_size=3,
                       logprob_chunk_tokens=5)  # fmt: skip


@pytest.fixture(scope="module")
def attempts(tmp_path_factory, tiny_policy_folder) -> Path:
    """A rollout of 8 guess problems x G = 4 x K = 3 by the tiny policy."""
    folder = tmp_path_factory.mktemp("stage")
    run_calgrpo("problems", "--output", str(folder / "problems.parquet"), "--num-problems", "8", "--num-values", "8")
    run_calgrpo("rollout", "--problems", str(folder / "problems.parquet"), "--model", str(tiny_policy_folder),
                "--output", str(folder / "attempts.parquet"), "--rollout.num-attempts", "3",
                "--rollout.group-size", "4", "--rollout.sampling.max-new-tokens", "2", "--seed", "1")  # fmt: skip
    return folder / "attempts.parquet"


def _round(attempts: Path, model: str, output: Path, round_index: int, state: str | None) -> dict:
    from calgrpo.pipelines.training import round_config

    config = round_config(attempts=str(attempts.parent), verdicts="unused", model=model, output=str(output),
                          state=state, method="cal", learning_rate=SETTINGS.learning_rate, ppo_epochs=2,
                          minibatches=2, temperature=1.0, precision="fp32", seed=5,
                          round_index=round_index)  # fmt: skip
    # The pipeline's settings plus this test's warm-up and small micro-batches; no verdicts file.
    return train_stage(TrainStageConfig(**{**config.__dict__, "train": SETTINGS, "verdicts": None, "device": "cpu"}))


def test_pipeline_rounds_through_the_stage_equal_learns_trainer_bitwise(attempts, tiny_policy_folder, tmp_path):
    from calgrpo.models.loading import load_policy
    from calgrpo.rollout.records import read_attempts
    from calgrpo.seeding import generator_for
    from calgrpo.train.batch import build_batch
    from calgrpo.train.trainer import Trainer

    torch.set_num_threads(1)
    first = _round(attempts, str(tiny_policy_folder), tmp_path / "r1", 0, None)
    second = _round(attempts, str(tmp_path / "r1" / "model"), tmp_path / "r2", 1, str(tmp_path / "r1"))
    # `calgrpo learn`: one trainer in memory for both rounds.
    policy = load_policy(str(tiny_policy_folder))
    trainer = Trainer(policy.model, SETTINGS)
    batch = build_batch(read_attempts(attempts), 3, policy.tokenizer.pad_token_id)
    in_memory = [trainer.train_on(batch, generator_for(5, "minibatches", r)) for r in (0, 1)]
    untimed = [{k: v for k, v in m.items() if not k.endswith("_per_s")} for m in (first, second, *in_memory)]
    assert untimed[:2] == untimed[2:]
    assert second["train/step"] == 2 * first["train/step"] == 8  # the step counter (and warm-up) continued
    saved = load_file(tmp_path / "r2" / "model" / "model.safetensors")
    weights = policy.model.state_dict()
    assert all(torch.equal(saved[name], weights[name]) for name in saved)
    # Without the state (what each pipeline round did before), round 2 is a different update.
    fresh = _round(attempts, str(tmp_path / "r1" / "model"), tmp_path / "r2-fresh", 1, None)
    assert fresh["train/step"] == 4 and fresh["train/loss"] != second["train/loss"]


def test_the_stage_config_travels_as_json_and_refuses_unknown_fields(tmp_path) -> None:
    config = TrainStageConfig(attempts="s3://b/a.parquet", model="tiny", output=tmp_path, train=SETTINGS,
                              resume_from="s3://b/state", seed=3)  # fmt: skip
    assert from_json(TrainStageConfig, to_json(config)) == config
    with pytest.raises(ConfigError, match="unknown field.*learning_rat"):
        from_json(TrainStageConfig, {**to_json(config), "train": {"learning_rat": 1.0}})
    with pytest.raises(ConfigError, match="learning_rate"):  # the dataclass's own checks run
        from_json(TrainStageConfig, {**to_json(config), "train": {"learning_rate": -1.0}})
