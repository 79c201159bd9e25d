"""The compiled train/evaluate pipelines carry every Kubernetes setting where KFP expects it."""

# No `from __future__ import annotations`: KFP reads the pipeline signatures' real annotations.
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from calgrpo.pipelines.compile import compile_pipelines

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def train_yaml(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipelines")
    compile_pipelines(folder, rounds=2)
    spec, platform = list(yaml.safe_load_all((folder / "train.yaml").read_text()))
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_rounds_are_unrolled_with_a_rollout_fan_out_and_promotion_is_conditional(train_yaml) -> None:
    spec, _ = train_yaml
    tasks = spec["root"]["dag"]["tasks"]
    for name in ("ingest", "fetch-model", "plan-shards", "for-loop-1", "for-loop-2", "merge-attempts",
                 "merge-attempts-2", "verify", "verify-2", "train", "train-2", "evaluate"):  # fmt: skip
        assert name in tasks, name
    # Round 2's shards roll out the model round 1 trained, one task per item of plan-shards' list.
    loop = tasks["for-loop-2"]
    assert loop["inputs"]["artifacts"]["pipelinechannel--train-new_model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "new_model", "producerTask": "train"}  # fmt: skip
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--plan-shards-Output"
    # Round 2's training continues round 1's training state (AdamW moments, warm-up, step); round 1
    # starts fresh.
    assert tasks["train-2"]["inputs"]["artifacts"]["state"]["taskOutputArtifact"] == {
        "outputArtifactKey": "train_state", "producerTask": "train"}  # fmt: skip
    assert "state" not in tasks["train"]["inputs"]["artifacts"]
    inner = spec["components"]["comp-for-loop-2"]["dag"]["tasks"]["rollout-2"]["inputs"]["parameters"]
    assert inner["shard_index"] == {"componentInputParameter": "pipelinechannel--plan-shards-Output-loop-item"}
    assert inner["num_shards"] == {"componentInputParameter": "pipelinechannel--rollout_shards"}
    # The accelerator request inside the loop reads gpu_type/gpu_count, so the loop must receive them.
    loop_inputs = spec["components"]["comp-for-loop-2"]["inputDefinitions"]["parameters"]
    assert {"pipelinechannel--gpu_type", "pipelinechannel--gpu_count"} <= set(loop_inputs)
    merge = tasks["merge-attempts-2"]["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]
    assert merge == {"outputArtifactKey": "pipelinechannel--rollout-2-attempts", "producerTask": "for-loop-2"}
    assert tasks["verify-2"]["inputs"]["artifacts"]["attempts"]["taskOutputArtifact"]["producerTask"] == (
        "merge-attempts-2")  # fmt: skip
    condition = next(task for name, task in tasks.items() if name.startswith("condition-"))
    assert (
        condition["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--registry'] != ''"
    )
    body = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert "promote" in body
    assert spec["root"]["inputDefinitions"]["parameters"]["gpu_type"]["defaultValue"] == "nvidia.com/gpu"


def test_models_are_resolved_uncached_and_the_evaluation_is_the_output(train_yaml) -> None:
    spec, executors = train_yaml
    tasks = spec["root"]["dag"]["tasks"]

    def inputs(task: str) -> dict:
        return tasks[task]["inputs"]["parameters"]

    # The initial model: a registry pointer is resolved to its version before the cached fetch.
    assert inputs("fetch-model")["model_uri"]["taskOutputParameter"]["producerTask"] == "resolve-model"
    assert inputs("resolve-model")["uri"] == {"componentInputParameter": "model_uri"}
    # The baseline: baseline_uri, else the registry's current model.
    assert inputs("evaluate")["baseline_uri"]["taskOutputParameter"]["producerTask"] == "resolve-model-2"
    assert {name: value["componentInputParameter"] for name, value in inputs("resolve-model-2").items()} == {
        "uri": "baseline_uri", "registry": "registry", "name": "model_name"}  # fmt: skip
    for task in ("resolve-model", "resolve-model-2"):
        assert tasks[task]["cachingOptions"].get("enableCache") in (None, False)
    assert tasks["fetch-model"]["cachingOptions"]["enableCache"] is True
    assert "secretAsEnv" in executors["exec-resolve-model-2"]  # reads the registry on S3
    output = spec["root"]["dag"]["outputs"]["artifacts"]["Output"]["artifactSelectors"][0]
    assert output == {"outputArtifactKey": "results", "producerSubtask": "evaluate"}


def test_gpu_stages_get_accelerator_toleration_shm_and_timeout(train_yaml) -> None:
    spec, executors = train_yaml
    tasks = spec["root"]["dag"]["tasks"]
    loop_tasks = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
    for task, executor in (
        ("rollout", "exec-rollout"),
        ("train", "exec-train"),
        ("evaluate", "exec-evaluate"),
    ):
        resources = spec["deploymentSpec"]["executors"][executor]["container"]["resources"]
        assert "gpu_type" in str(resources["accelerator"]["resourceType"])
        assert resources["cpuRequest"] == 4.0
        platform = executors[executor]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in platform[
            "tolerations"
        ]
        assert {"medium": "Memory", "mountPath": "/dev/shm", "volumeName": "dshm"} in platform[
            "emptyDirMounts"
        ]
        selector = platform["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"]
        assert selector in ("gpu_node_selector", "pipelinechannel--gpu_node_selector")  # inside the fan-out
        assert int(platform["activeDeadlineSeconds"]) >= 3600
        assert {**tasks, **loop_tasks}[task].get("cachingOptions", {}).get("enableCache") in (None, False)


def test_secrets_retries_caching_and_security_context(train_yaml) -> None:
    spec, executors = train_yaml
    tasks = spec["root"]["dag"]["tasks"]
    secret = executors["exec-ingest"]["secretAsEnv"][0]
    assert secret["secretNameParameter"] == {"componentInputParameter": "s3_secret"}
    assert {e["envVar"] for e in secret["keyToEnv"]} == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
    }
    assert tasks["ingest"]["cachingOptions"]["enableCache"] is True
    rollout = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]["rollout"]
    assert rollout["retryPolicy"]["maxRetryCount"] == 2
    assert rollout["retryPolicy"]["backoffFactor"] == 2.0
    verify = executors["exec-verify"]
    assert verify["securityContext"] == {"runAsUser": "65534", "runAsGroup": "65534", "runAsNonRoot": True}
    assert "secretAsEnv" not in verify  # untrusted code never sits next to credentials


def test_committed_pipeline_yaml_matches_the_source(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALGRPO_IMAGE_")}
    code = f"from calgrpo.pipelines.compile import compile_pipelines; compile_pipelines({str(tmp_path)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
    for name in ("train.yaml", "evaluate.yaml"):
        committed = ROOT / "pipelines" / name
        assert committed.is_file() and committed.read_text() == (tmp_path / name).read_text(), (
            f"{committed} is stale: run `calgrpo pipeline compile`"
        )


def test_rounds_must_be_positive() -> None:
    from calgrpo.pipelines.definitions import build_train_pipeline

    with pytest.raises(ValueError, match="rounds must be >= 1"):
        build_train_pipeline(0)


def _run_local(*args: str) -> dict:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "-m", "calgrpo.cli", "pipeline", "run-local", *args],
        capture_output=True, text=True, timeout=600, check=False, env={**env, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_run_local_trains_evaluates_and_promotes_then_evaluates_the_promoted_model(tmp_path) -> None:
    """Both pipelines end to end on the embedded defaults; the second reads what the first promoted."""
    small = ("--root", str(tmp_path), "--problems", "32", "--eval-samples", "2")
    # As on a cluster: no baseline given, so the registry's current model (none yet) -> promoted first.
    trained = _run_local(*small, "--rounds", "1", "--group-size", "4", "--minibatches", "2", "--rollout-shards", "2",
                         "--baseline-uri", "")  # fmt: skip
    assert trained["embedded_s3"].startswith("http://127.0.0.1:")
    assert trained["promoted"] is True and "baseline_v@k" not in trained
    assert trained["current"]["model"].startswith("s3://calgrpo/registry/models/policy/versions/")
    assert len(trained["v@k"]) == 4 and all(0.0 <= v <= 1.0 for v in trained["v@k"])
    assert Path(trained["report"]).is_file() and (Path(trained["report"]).parent / "metrics.json").is_file()
    assert (tmp_path / "s3").is_dir() and (tmp_path / "artifacts").is_dir()
    # The round's two rollout shards were merged in shard order into the attempts verify and train read.
    run = next((tmp_path / "artifacts").glob("calgrpo-train-*"))
    shards = sorted(run.glob("for-loop-*/rollout/attempts/shard.json"))
    assert len(shards) == 2
    merged = pd.read_parquet(next(run.glob("merge-attempts*/attempts/attempts.parquet")))
    parts = [pd.read_parquet(path.parent / "attempts.parquet") for path in shards]
    assert sorted(merged["problem_id"].unique()) == sorted(set().union(*(set(p["problem_id"]) for p in parts)))
    assert len(merged) == sum(len(p) for p in parts)

    # The registry pointer resolves to the promoted version; the embedded S3 serves it again.
    scored = _run_local(*small, "--pipeline", "evaluate",
                        "--model-uri", "s3://calgrpo/registry/models/policy/current.json",
                        "--baseline-uri", str(tmp_path / "initial-llama"))  # fmt: skip
    assert scored["pipeline"] == "evaluate" and scored["current"] is None
    assert scored["embedded_s3"].startswith("http://127.0.0.1:")
    assert len(scored["v@k"]) == len(scored["baseline_v@k"]) == 4
    difference = scored["difference_v@4"]
    assert difference["low"] <= difference["mean"] <= difference["high"]
    # The evaluate pipeline scores the whole dataset (the train pipeline only its eval split).
    rows = pd.read_parquet(Path(scored["report"]).parent / "per_problem.parquet")
    problems = pd.read_parquet(next((tmp_path / "artifacts").glob("calgrpo-evaluate-*/ingest/problems"))
                               / "problems.parquet")  # fmt: skip
    assert set(rows["problem_id"]) == set(problems["id"]) and len(problems) > 8


def test_multi_node_training_compiles_to_a_trainjob_launcher(tmp_path) -> None:
    compile_pipelines(tmp_path, rounds=2, train_nodes=4)
    spec, platform = list(yaml.safe_load_all((tmp_path / "train.yaml").read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    assert {"train-on-trainjob", "train-on-trainjob-2"} <= set(tasks) and "train" not in tasks
    launcher = tasks["train-on-trainjob-2"]["inputs"]["parameters"]
    assert launcher["num_nodes"] == {"runtimeValue": {"constant": 4}}
    assert launcher["procs_per_node"] == {"componentInputParameter": "gpu_count"}
    assert launcher["staging"] == {"componentInputParameter": "staging"}
    passthroughs = spec["components"]["comp-train-on-trainjob"]["taskConfigPassthroughs"]
    assert {p["field"] for p in passthroughs} == {"RESOURCES", "KUBERNETES_TOLERATIONS", "KUBERNETES_NODE_SELECTOR", "ENV"}
    assert [p for p in passthroughs if p.get("applyToTask")] == [{"field": "ENV", "applyToTask": True}]
    # What the TrainJob's nodes will get is set on the launcher task like on any GPU stage.
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-on-trainjob"]
    assert executor["tolerations"][0]["key"] == "nvidia.com/gpu" and "secretAsEnv" in executor
    trainer_image = spec["root"]["inputDefinitions"]["parameters"]["trainer_image"]["defaultValue"]
    assert trainer_image.split(":")[0].endswith("/gpu")
    with pytest.raises(ValueError, match="train_nodes"):
        compile_pipelines(tmp_path, rounds=1, train_nodes=0)
