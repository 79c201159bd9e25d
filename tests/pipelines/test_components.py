"""Stage components: committed YAML matches the source, loads and nests, and the chain runs in kfp.local."""

# No `from __future__ import annotations`: KFP reads the pipeline signatures' real annotations.

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kfp import compiler, components, dsl, local

from calgrpo.pipelines.components import ALL
from calgrpo.pipelines.config import PipelineConfig, pipeline_config_json, read_pipeline_config
from calgrpo.rollout.config import RolloutConfig, SamplingParams
from calgrpo.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("CALGRPO_IMAGE_")}


def test_committed_component_yaml_matches_the_source(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "calgrpo.cli", "pipeline", "compile", "--components-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False, env=CLEAN_ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ALL:
        fresh = (tmp_path / name / "component.yaml").read_text()
        committed = ROOT / "components" / name / "component.yaml"
        assert committed.is_file(), f"run `calgrpo pipeline compile` and commit {committed}"
        assert committed.read_text() == fresh, f"{committed} is stale: run `calgrpo pipeline compile`"


def test_images_come_from_one_variable_and_are_pinned(tmp_path) -> None:
    env = {**CLEAN_ENV, "CALGRPO_IMAGE_REPO": "registry.example/ml", "CALGRPO_IMAGE_TAG": "1.2.3"}
    code = f"from calgrpo.pipelines.compile import compile_components; compile_components({str(tmp_path)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
    assert "image: registry.example/ml/gpu:1.2.3" in (tmp_path / "rollout" / "component.yaml").read_text()
    assert "image: registry.example/ml/cpu:1.2.3" in (tmp_path / "ingest" / "component.yaml").read_text()
    refused = subprocess.run([sys.executable, "-c", "import calgrpo.pipelines.images"], capture_output=True,
                             text=True, env={**CLEAN_ENV, "CALGRPO_IMAGE_TAG": "latest"}, timeout=120)  # fmt: skip
    assert refused.returncode != 0 and "latest is refused" in refused.stderr
    for name in ALL:
        assert ":latest" not in (ROOT / "components" / name / "component.yaml").read_text()


def test_loaded_components_nest_in_a_new_pipeline(tmp_path) -> None:
    ingest = components.load_component_from_file(str(ROOT / "components" / "ingest" / "component.yaml"))
    fetch = components.load_component_from_file(str(ROOT / "components" / "fetch_model" / "component.yaml"))
    rollout = components.load_component_from_file(str(ROOT / "components" / "rollout" / "component.yaml"))

    @dsl.pipeline(name="reuse")
    def reuse(source: str):
        problems = ingest(format="jsonl", source=source, eval_fraction=0.0, limit=0)
        model = fetch(model_uri="tiny:llama")
        rollout(config=pipeline_config_json(PipelineConfig()), round_index=0, problems=problems.outputs["problems"],
                model=model.outputs["model"])  # fmt: skip

    compiler.Compiler().compile(reuse, str(tmp_path / "reuse.yaml"))
    text = (tmp_path / "reuse.yaml").read_text()
    assert "comp-rollout" in text and "comp-ingest" in text


@pytest.mark.slow
def test_stage_chain_runs_in_kfp_local(tmp_path) -> None:
    """ingest -> fetch_model -> rollout -> verify -> train -> rollout -> evaluate -> promote, on CPU,
    the components wired by hand around one config (a dataset of 12 guess problems, 8 a round)."""
    from calgrpo.tasks import get_task

    problems = get_task("guess", num_values=8).generate(12, seed=3)
    source = tmp_path / "problems.jsonl"
    source.write_text("".join(json.dumps({**p.to_row(), "meta": p.meta}) + "\n" for p in problems))
    registry = tmp_path / "registry"
    config = PipelineConfig(dataset=str(source), prompts_per_round=8, registry=str(registry), model_name="guess",
                            margin=-1.0, eval_samples=2, train=TrainConfig(minibatches=2),
                            rollout=RolloutConfig(num_attempts=3, group_size=4,
                                                  sampling=SamplingParams(max_new_tokens=1)))  # fmt: skip
    settings = pipeline_config_json(config)

    @dsl.pipeline(name="one-round")
    def one_round(source: str):
        data = ALL["ingest"](format="jsonl", source=source, eval_fraction=0.25, limit=0)
        base = ALL["fetch_model"](model_uri="tiny:llama")
        attempts = ALL["rollout"](config=settings, round_index=0, problems=data.outputs["problems"],
                                  model=base.outputs["model"])  # fmt: skip
        verdicts = ALL["verify"](problems=attempts.outputs["attempts"], attempts=attempts.outputs["attempts"])
        trained = ALL["train"](config=settings, round_index=0, attempts=attempts.outputs["attempts"],
                               verdicts=verdicts.outputs["verdicts"], model=base.outputs["model"],
                               initial=base.outputs["model"])  # fmt: skip
        ALL["rollout"](config=settings, round_index=1, problems=data.outputs["problems"],
                       model=trained.outputs["new_model"])  # fmt: skip
        scored = ALL["evaluate_run"](config=settings, problems=data.outputs["problems"],
                                     model=trained.outputs["new_model"], initial=base.outputs["model"],
                                     baseline_uri="", train_state=trained.outputs["train_state"])  # fmt: skip
        ALL["round_table"](config=settings, train_state=trained.outputs["train_state"])
        ALL["promote"](config=settings, model=trained.outputs["new_model"], results=scored.outputs["results"])

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = one_round(source=str(source))
    assert run is not None
    pointer = json.loads((registry / "models" / "guess" / "current.json").read_text())
    version = registry / "models" / "guess" / "versions" / pointer["version"]
    assert (version / "model" / "config.json").is_file()
    assert json.loads((version / "evidence" / "decision.json").read_text())["promoted"] is True
    metrics = json.loads((version / "evidence" / "metrics.json").read_text())
    assert len(metrics["candidate"]["v@k"]["mean"]) == 3 and metrics.get("baseline")
    assert len(metrics["candidate"]["pass@k"]["mean"]) == 3  # the no-feedback comparison, in the pipeline too
    # The KFP UI's views: the report as an HTML artifact with the training curves, the headline and
    # the per-round table as Markdown.
    page = next((tmp_path / "root").rglob("evaluate-run/page")).read_text()
    assert "<h2>Training</h2>" in page and "<h1>Evaluation of guess (content " in page
    assert "| difference |" in next((tmp_path / "root").rglob("evaluate-run/report")).read_text()
    table = next((tmp_path / "root").rglob("round-table/table")).read_text()
    assert table.startswith("## Training by round (1 rounds)") and "| 1 |" in table
    # policy_version is the training step, as `calgrpo learn` records it: 0 before, 2 after one round
    # of 2 minibatches.
    import pandas as pd

    versions = {path.parent.parent.name: set(pd.read_parquet(path)["policy_version"])
                for path in (tmp_path / "root").rglob("attempts.parquet")}  # fmt: skip
    assert versions == {"rollout": {0}, "rollout-2": {2}}, versions
    # Each round drew 8 of the 9 training problems (a quarter of the 12 held out for evaluation).
    drawn = pd.read_parquet(next((tmp_path / "root").rglob("rollout/attempts/problems.parquet")))
    assert len(drawn) == 8 and not set(drawn["id"]) & set(pd.read_parquet(next(
        (tmp_path / "root").rglob("ingest/problems/eval.parquet")))["id"])  # fmt: skip


def test_the_documented_reuse_example_compiles(tmp_path, monkeypatch) -> None:
    """docs/pipelines.md's example, run as written (from the repository root, where its paths point)."""
    text = (ROOT / "docs" / "pipelines.md").read_text()
    code = text.split("<!-- reuse-example -->\n```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(code, "docs/pipelines.md", "exec"), namespace)
    compiler.Compiler().compile(namespace["score_my_model"], str(tmp_path / "score.yaml"))
    spec = yaml.safe_load((tmp_path / "score.yaml").read_text())
    assert set(spec["root"]["dag"]["tasks"]) == {"ingest", "fetch-model", "rollout", "verify"}
    settings = spec["root"]["dag"]["tasks"]["rollout"]["inputs"]["parameters"]["config"]["runtimeValue"]
    assert read_pipeline_config(settings["constant"]).rollout.num_attempts == 3


def test_the_verify_component_takes_a_four_column_table_from_another_pipeline(tmp_path) -> None:
    """A Dataset folder holding any one .parquet/.jsonl table of problem_id, sample, attempt, completion."""
    import pandas as pd
    from kfp.dsl import Dataset, Metrics

    from calgrpo.io import write_problems
    from calgrpo.tasks import Problem
    from calgrpo.verify import read_verdicts

    (tmp_path / "problems").mkdir()
    write_problems([Problem(id="g1", task="gsm8k", prompt="2+2?", answer="#### 4")],
                   tmp_path / "problems" / "problems.parquet")  # fmt: skip
    (tmp_path / "elsewhere").mkdir()
    pd.DataFrame({"problem_id": ["g1", "g1"], "sample": [0, 1], "attempt": [1, 1], "completion": ["#### 4", "5"]}
                 ).to_json(tmp_path / "elsewhere" / "completions.jsonl", orient="records", lines=True)  # fmt: skip
    summary = Metrics(uri=str(tmp_path / "summary"))
    ALL["verify"].python_func(problems=Dataset(uri=str(tmp_path / "problems")),
                              attempts=Dataset(uri=str(tmp_path / "elsewhere")),
                              verdicts=Dataset(uri=str(tmp_path / "verdicts")), summary=summary)  # fmt: skip
    assert [r.reward for r in read_verdicts(tmp_path / "verdicts" / "verdicts.parquet")] == [1.0, 0.0]
    assert summary.metadata["verify/gsm8k/pass_rate"] == 0.5
