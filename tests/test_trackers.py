"""Trackers (issue 18, item 1): learn, train and evaluate write TensorBoard event files that
TensorBoard's own reader loads with the expected tags; MLflow's file store holds a run with its
parameters and metrics; Weights & Biases works offline; unknown names are refused up front."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from calgrpo.errors import ConfigError
from calgrpo.learn import LearnConfig, run_learn
from calgrpo.models.config import TinyModelConfig
from calgrpo.rollout.config import RolloutConfig, SamplingParams
from calgrpo.trackers import check_report_to, open_trackers, round_line, scalars


def _config(output: Path, **changes) -> LearnConfig:
    base = LearnConfig(
        output=output, rounds=2, prompts_per_round=2, task_options={"num_values": 8}, eval_problems=4,
        eval_every=1, rollout=RolloutConfig(num_attempts=2, group_size=2, sampling=SamplingParams(max_new_tokens=2)),
        tiny=TinyModelConfig(hidden_size=32, intermediate_size=64), threads=1, show_progress=False, json=True,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in ``folder``'s event files, read by TensorBoard's own loader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def assert_in_manifest(folder: Path, prefix: str) -> None:
    from calgrpo.manifest import MANIFEST, is_complete

    listed = json.loads((folder / MANIFEST).read_text())["files"]
    assert is_complete(folder) and any(name.startswith(prefix) for name in listed), sorted(listed)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, monkeypatch_module) -> Path:
    monkeypatch_module.delenv("MLFLOW_TRACKING_URI", raising=False)
    output = tmp_path_factory.mktemp("learn") / "run"
    run_learn(_config(output, report_to=("tensorboard", "mlflow")))
    return output


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_learn_writes_tensorboard_events_with_the_logged_numbers(tracked_run) -> None:
    series = tensorboard_scalars(tracked_run / "tensorboard")
    for tag in (
        "train/loss",
        "train/kl",
        "train/entropy",
        "train/clip_fraction",
        "rollout/v@k",
        "time/rollout_s",
    ):
        assert [step for step, _ in series[tag]] == [1, 2], tag
    assert [step for step, _ in series["eval/v@2"]] == [0, 1, 2]  # before, round 1 (eval_every), final
    rows = [json.loads(line) for line in (tracked_run / "metrics.jsonl").read_text().splitlines()]
    logged = {row["round"]: row["train/loss"] for row in rows if "train/loss" in row}
    assert {step: pytest.approx(value, rel=1e-6) for step, value in series["train/loss"]} == logged


def test_learn_writes_an_mlflow_run_with_params_and_metrics(tracked_run) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tracked_run / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("calgrpo").experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["train.method"] == "cal" and run.data.params["rollout.num_attempts"] == "2"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/v_at_2")] == [0, 1, 2]


def test_evaluate_logs_under_the_same_names(tracked_run, tmp_path) -> None:
    from calgrpo.evaluation.stage import EvaluateConfig, evaluate

    problems = tracked_run / "problems" / "eval.parquet"
    rollout = RolloutConfig(num_attempts=2, group_size=2, sampling=SamplingParams(max_new_tokens=2))
    evaluate(EvaluateConfig(problems=str(problems), model=str(tracked_run / "model"),
                            output=str(tmp_path / "eval"), rollout=rollout, step=7, resamples=100))  # fmt: skip
    series = tensorboard_scalars(tmp_path / "eval" / "tensorboard")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert series["eval/v@2"] == [(7, pytest.approx(metrics["candidate"]["v@k"]["mean"][1]))]
    assert "eval/pass@2" in series and "eval/feedback_gain@2" in series
    assert_in_manifest(tmp_path / "eval", "tensorboard/")  # the event files are published with the rest


def test_wandb_offline_run(tmp_path, monkeypatch) -> None:
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    with open_trackers(["wandb"], tmp_path, "offline-run", {"train": {"method": "cal"}}) as trackers:
        trackers.log({"train/loss": 0.5, "eval/v@2": 0.25}, step=1)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))  # the run's log, ready for `wandb sync`


def test_report_to_is_checked_before_any_work(tmp_path) -> None:
    assert check_report_to(["none"]) == ()
    with pytest.raises(ConfigError, match="unknown tracker 'tensorbord'.*tensorboard, mlflow, wandb"):
        _config(tmp_path, report_to=("tensorbord",))
    with pytest.raises(ConfigError, match="twice"):
        check_report_to(["mlflow", "mlflow"])


def test_scalars_and_round_line() -> None:
    assert scalars({"a": 1, "b": float("nan"), "c": "x", "d": True, "e": 0.5}) == {"a": 1.0, "e": 0.5}
    line = round_line({"round": 3, "rollout/v@k": 0.25, "train/loss": -0.01, "train/kl": 0.0,
                       "train/entropy": 1.5, "train/clip_fraction": 0.0, "train/tokens_per_s": 812.4}, 8, 4)  # fmt: skip
    assert line == "round 3/8  V@4 0.250  loss -0.0100  kl 0.0000  entropy 1.500  clip 0.000  812 tok/s"
