"""End to end: evaluate a trained vs an untrained tiny model, reports, registry and promotion gate."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pandas as pd
import pytest

from calgrpo.errors import CalgrpoError
from calgrpo.evaluation.promotion import PromoteConfig, current_version, promote, resolve_pointer
from calgrpo.evaluation.stage import EvaluateConfig, evaluate
from calgrpo.io import write_problems
from calgrpo.manifest import is_complete
from calgrpo.rollout.config import RolloutConfig, SamplingParams
from calgrpo.tasks import get_task


def _episodes(samples: int) -> RolloutConfig:
    """K = 3 attempts of one token, ``samples`` episodes per problem."""
    return RolloutConfig(num_attempts=3, group_size=samples, sampling=SamplingParams(max_new_tokens=1))

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An untrained and a trained tiny guess model (N = 8, K = 3), and evaluation problems."""
    import torch

    from calgrpo.learn import LearnConfig, run_learn
    from calgrpo.models.config import TinyModelConfig
    from calgrpo.rollout.config import RolloutConfig, SamplingParams
    from calgrpo.train.config import TrainConfig

    root = tmp_path_factory.mktemp("eval")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run_learn(LearnConfig(
            output=root / "learn", task_options={"num_values": 8}, rounds=150, prompts_per_round=32,
            tiny=TinyModelConfig(hidden_size=32, intermediate_size=64),
            rollout=RolloutConfig(num_attempts=3, group_size=8, sampling=SamplingParams(max_new_tokens=1)),
            train=TrainConfig(learning_rate=3e-3), eval_problems=32, show_progress=False,
        ))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    problems = get_task("guess", num_values=8).generate(48, seed=99, id_prefix="heldout")
    write_problems(problems, root / "problems.parquet")
    return {"untrained": str(root / "learn" / "initial_model"), "trained": summary["model"],
            "problems": str(root / "problems.parquet"), "root": root}  # fmt: skip


def _evaluate(models, candidate, baseline, output):
    return evaluate(EvaluateConfig(problems=models["problems"], model=models[candidate], baseline=models[baseline],
                                   output=str(output), rollout=_episodes(4), resamples=500))  # fmt: skip


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    return data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and width > 100 and height > 100


def test_trained_model_is_promoted_and_untrained_is_not(models, tmp_path) -> None:
    better = _evaluate(models, "trained", "untrained", tmp_path / "eval_trained")
    assert better["difference"]["low"][-1] > 0.05
    out = tmp_path / "eval_trained"
    assert is_complete(out)
    for name in ("metrics.json", "report.md", "report.html", "curves.png", "per_problem.parquet",
                 "transcripts.parquet"):  # fmt: skip
        assert (out / name).is_file(), name
    assert _is_png(out / "curves.png")
    assert "| difference |" in (out / "report.md").read_text()
    assert "data:image/png;base64," in (out / "report.html").read_text()
    per_problem = pd.read_parquet(out / "per_problem.parquet")
    assert len(per_problem) == 2 * 48 and set(per_problem["model"]) == {"candidate", "baseline"}
    assert 0.0 <= better["timing"]["overhead_share"] < 1.0

    registry = str(tmp_path / "registry")
    decision = promote(
        PromoteConfig(model=models["trained"], evaluation=str(out), registry=registry, margin=0.05)
    )
    assert decision["promoted"] and "lower 95% bound" in decision["reason"]
    assert current_version(registry, "policy")["version"] == decision["version"]
    version = Path(registry, "models", "policy", "versions", decision["version"])
    assert is_complete(version / "evidence") and is_complete(version / "model")
    assert json.loads((version / "evidence" / "decision.json").read_text())["promoted"] is True

    worse = _evaluate(models, "untrained", "trained", tmp_path / "eval_untrained")
    assert worse["difference"]["high"][-1] < 0
    rejected = promote(PromoteConfig(model=models["untrained"], evaluation=str(tmp_path / "eval_untrained"),
                                     registry=registry, margin=0.05))  # fmt: skip
    assert not rejected["promoted"]
    assert current_version(registry, "policy")["version"] == decision["version"]  # pointer unchanged
    assert Path(registry, "models", "policy", "versions", rejected["version"], "evidence", "decision.json").is_file()

    # Lineage (issue 15, item 5): an evaluation against a baseline that is not what the registry
    # serves now (trained is current; this one compared with untrained) cannot promote.
    stale = promote(PromoteConfig(model=models["trained"], evaluation=str(out), registry=registry, margin=0.05))
    assert not stale["promoted"] and "not the registry's current model" in stale["reason"]
    # The evaluation of one model cannot promote another, whatever its numbers say.
    with pytest.raises(CalgrpoError, match="evaluation is of another model"):
        promote(PromoteConfig(model=models["untrained"], evaluation=str(out), registry=str(tmp_path / "r2")))
    assert current_version(str(tmp_path / "r2"), "policy") is None


def test_promotion_needs_a_complete_evaluation(models, tmp_path) -> None:
    out = tmp_path / "half"
    evaluate(EvaluateConfig(problems=models["problems"], model=models["trained"], output=str(out),
                            rollout=_episodes(1), resamples=100))  # fmt: skip
    (out / "manifest.json").unlink()  # a writer that died before the manifest
    with pytest.raises(CalgrpoError, match="not a complete evaluation"):
        promote(PromoteConfig(model=models["trained"], evaluation=str(out), registry=str(tmp_path / "r"), first=True))


def test_promotion_without_baseline_needs_first(models, tmp_path, capsys) -> None:
    out = tmp_path / "alone"
    evaluate(EvaluateConfig(problems=models["problems"], model=models["trained"], output=str(out),
                            rollout=_episodes(2), resamples=200))  # fmt: skip
    # Not a terminal: progress is a JSON line per attempt round on stderr (a pod's log shows it).
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith('{"progress"')]
    assert lines and lines[0]["done"] == 1 and all(line["total"] == 3 for line in lines)  # ends early when all solved
    registry = str(tmp_path / "registry")
    refused = promote(PromoteConfig(model=models["trained"], evaluation=str(out), registry=registry))
    assert not refused["promoted"] and "no baseline" in refused["reason"]
    accepted = promote(
        PromoteConfig(model=models["trained"], evaluation=str(out), registry=registry, first=True)
    )
    assert accepted["promoted"] and current_version(registry, "policy")["version"] == accepted["version"]
    # A registry pointer resolves to the promoted version's model folder; other URIs pass through.
    pointer = f"{registry}/models/policy/current.json"
    assert resolve_pointer(pointer) == current_version(registry, "policy")["model"]
    assert Path(resolve_pointer(pointer), "config.json").is_file()
    assert resolve_pointer("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    with pytest.raises(CalgrpoError, match="nothing promoted yet"):
        resolve_pointer(f"{registry}/models/other/current.json")


@pytest.fixture(scope="module")
def lone_evaluation(models, tmp_path_factory) -> str:
    """An evaluation of the trained model without a baseline (promotable only with --first)."""
    out = tmp_path_factory.mktemp("lone") / "evaluation"
    evaluate(EvaluateConfig(problems=models["problems"], model=models["trained"], output=str(out),
                            rollout=_episodes(1), resamples=200))  # fmt: skip
    return str(out)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_racing_promotions_move_the_pointer_once_and_record_the_truth(
    models, lone_evaluation, tmp_path, where, request, monkeypatch
) -> None:
    """Eight promotions race into an empty registry, each allowed to be the first: the pointer is a
    compare-and-swap, so exactly one moves it; every candidate is a version of its own (none
    replaced), and each decision says what happened to it."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from calgrpo.storage import folders
    from calgrpo.storage.core import is_s3, join
    from calgrpo.storage.folders import fetch_folder

    registry = request.getfixturevalue("s3_env") + "/registry" if where == "s3" else str(tmp_path / "registry")
    # Every promotion has read the (empty) pointer before any moves it: the tightest race there is.
    all_read, publish = threading.Barrier(8), folders.publish_folder

    def publish_after_all_read(local, uri):
        if uri.endswith("/model"):
            all_read.wait(timeout=120)
        return publish(local, uri)

    monkeypatch.setattr(folders, "publish_folder", publish_after_all_read)
    config = PromoteConfig(model=models["trained"], evaluation=lone_evaluation, registry=registry, first=True)
    with ThreadPoolExecutor(8) as pool:
        decisions = list(pool.map(lambda _: promote(config), range(8)))
    monkeypatch.setattr(folders, "publish_folder", publish)
    winners = [d for d in decisions if d["promoted"]]
    assert len(winners) == 1, [d["reason"] for d in decisions]
    assert all("another promotion moved the pointer" in d["reason"] for d in decisions if not d["promoted"])
    pointer = current_version(registry, "policy")
    assert pointer["version"] == winners[0]["version"] and pointer["previous"] is None
    assert len({d["version"] for d in decisions}) == 8
    for decision in decisions:  # each version is whole, with its own decision
        version = join(registry, "models", "policy", "versions", decision["version"], "evidence")
        local = fetch_folder(version, tmp_path / "check" / decision["version"]) if is_s3(version) else Path(version)
        assert is_complete(local) and json.loads((local / "decision.json").read_text()) == decision
    # --first does not replace a current model.
    later = promote(config)
    assert not later["promoted"] and "no baseline" in later["reason"]


def test_a_failed_pointer_write_is_recorded_as_not_promoted(models, lone_evaluation, tmp_path, monkeypatch) -> None:
    from calgrpo.storage import core

    def refuse(*args, **kwargs):
        raise core.StorageError("write to current.json failed (AccessDenied)")

    monkeypatch.setattr(core, "compare_and_swap", refuse)
    registry = tmp_path / "registry"
    with pytest.raises(core.StorageError, match="AccessDenied"):
        promote(PromoteConfig(model=models["trained"], evaluation=lone_evaluation, registry=str(registry), first=True))
    (version,) = (registry / "models" / "policy" / "versions").iterdir()
    decision = json.loads((version / "evidence" / "decision.json").read_text())
    assert decision["promoted"] is False and "pointer write failed" in decision["reason"]
    assert current_version(str(registry), "policy") is None


def test_feedback_against_resampling_and_the_transcripts(models, tmp_path) -> None:
    """pass@k from independent first attempts next to V@k, paired; every attempt kept as text."""
    import numpy as np

    out = tmp_path / "feedback"
    metrics = evaluate(EvaluateConfig(problems=models["problems"], model=models["trained"], output=str(out),
                                      rollout=_episodes(4), independent_samples=4, resamples=200))  # fmt: skip
    candidate = metrics["candidate"]
    assert candidate["independent_samples"] == 4 and len(candidate["pass@k"]["mean"]) == 3
    # With the episodes' own first attempts as the independent ones, V@1 and pass@1 are one number.
    assert candidate["feedback_gain"]["mean"][0] == pytest.approx(0.0, abs=1e-12)
    gain = np.array(candidate["v@k"]["mean"]) - np.array(candidate["pass@k"]["mean"])
    np.testing.assert_allclose(candidate["feedback_gain"]["mean"], gain, atol=1e-12)
    assert candidate["feedback_gain"]["mean"][-1] > 0  # higher/lower feedback beats guessing again
    transcripts = pd.read_parquet(out / "transcripts.parquet")
    assert set(transcripts["verdict"]) <= {"correct", "higher", "lower", "invalid"}
    assert len(transcripts) == pytest.approx(candidate["attempts_mean"] * 48 * 4)  # every attempt made
    episodes = transcripts.groupby(["problem_id", "sample"]).size()
    assert len(episodes) == 48 * 4
    report = (out / "report.md").read_text()
    assert "| V@k - pass@k |" in report and "## Transcripts" in report and "Feedback: " in report

    # Fewer episodes than K: more independent first attempts are sampled for pass@K.
    few = evaluate(EvaluateConfig(problems=models["problems"], model=models["trained"], output=str(tmp_path / "few"),
                                  rollout=_episodes(1), resamples=200))  # fmt: skip
    assert few["candidate"]["independent_samples"] == 3 and len(few["candidate"]["pass@k"]["mean"]) == 3
    with pytest.raises(Exception, match="independent_samples must be 0 or >= K"):
        EvaluateConfig(problems="p", model="m", output="o", rollout=_episodes(1), independent_samples=2)
