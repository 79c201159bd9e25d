"""The compiled train/evaluate pipelines carry every Kubernetes setting where KFP expects it."""

# No `from __future__ import annotations`: KFP reads the pipeline signatures' real annotations.
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from calgrpo.pipelines.compile import compile_pipelines
from calgrpo.pipelines.config import PipelineConfig, read_pipeline_config
from calgrpo.rollout.config import RolloutConfig, SamplingParams
from calgrpo.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


CONFIG = PipelineConfig(rounds=2, train=TrainConfig(learning_rate=2e-6, warmup_steps=7, kl_coef=0.01),
                        rollout=RolloutConfig(num_attempts=3, feedback_mode="binary"))  # fmt: skip


@pytest.fixture(scope="module")
def train_yaml(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipelines")
    compile_pipelines(folder, CONFIG)
    spec, platform = list(yaml.safe_load_all((folder / "train.yaml").read_text()))
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _leaves(config, prefix=""):
    """Every (dotted name, value) of a config dataclass, nested ones walked into."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", value


def test_the_config_parameter_carries_every_setting_to_every_stage(train_yaml) -> None:
    spec, _ = train_yaml
    default = spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    carried = read_pipeline_config(default)  # validated by the same dataclasses the components use
    assert carried == CONFIG
    names = dict(_leaves(carried))
    for section, cls in (("train.", TrainConfig), ("rollout.", RolloutConfig), ("rollout.sampling.", SamplingParams)):
        for field in dataclasses.fields(cls):
            if field.name != "sampling":  # a nested config (train.cost) shows as its leaves
                name = f"{section}{field.name}"
                assert name in names or any(n.startswith(f"{name}.") for n in names), field.name
    assert names["train.warmup_steps"] == 7 and names["rollout.feedback_mode"] == "binary"
    assert names["train.cost.per_attempt"] == 0.0 and names["report_to"] == ("tensorboard",)
    # Every computing stage reads the config: nothing is passed as a loose setting any more.
    tasks = spec["root"]["dag"]["tasks"]
    inner = spec["components"]["comp-for-loop-2"]["dag"]["tasks"]
    for task in (tasks["prepare-problems"], tasks["initial-model"], tasks["train-2"], tasks["evaluate-run"],
                 tasks["promote"], inner["rollout-2"]):  # fmt: skip
        config = task["inputs"]["parameters"]["config"]
        assert config in ({"componentInputParameter": "config"},
                          {"componentInputParameter": "pipelinechannel--config"})  # fmt: skip
    loose = {"learning_rate", "num_attempts", "group_size", "method", "temperature", "seed", "max_new_tokens"}
    assert not loose & set(spec["root"]["inputDefinitions"]["parameters"])


def test_rounds_are_unrolled_with_a_rollout_fan_out(train_yaml) -> None:
    spec, _ = train_yaml
    tasks = spec["root"]["dag"]["tasks"]
    for name in ("prepare-problems", "initial-model", "plan-shards", "for-loop-1", "for-loop-2", "merge-attempts",
                 "merge-attempts-2", "verify", "verify-2", "train", "train-2", "evaluate-run", "promote"):  # fmt: skip
        assert name in tasks, name
    # The rounds compiled in are checked against the config's at run time.
    assert tasks["prepare-problems"]["inputs"]["parameters"]["rounds"] == {"runtimeValue": {"constant": 2}}
    # Round 2's shards roll out the model round 1 trained, one task per item of plan-shards' list.
    loop = tasks["for-loop-2"]
    assert loop["inputs"]["artifacts"]["pipelinechannel--train-new_model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "new_model", "producerTask": "train"}  # fmt: skip
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--plan-shards-Output"
    # Round 2's training continues round 1's training state (AdamW moments, warm-up, step); round 1
    # starts fresh; both have the initial model as the KL anchor.
    assert tasks["train-2"]["inputs"]["artifacts"]["state"]["taskOutputArtifact"] == {
        "outputArtifactKey": "train_state", "producerTask": "train"}  # fmt: skip
    assert "state" not in tasks["train"]["inputs"]["artifacts"]
    assert tasks["train-2"]["inputs"]["artifacts"]["initial"]["taskOutputArtifact"]["producerTask"] == "initial-model"
    inner = spec["components"]["comp-for-loop-2"]["dag"]["tasks"]["rollout-2"]["inputs"]["parameters"]
    assert inner["shard_index"] == {"componentInputParameter": "pipelinechannel--plan-shards-Output-loop-item"}
    assert inner["round_index"] == {"runtimeValue": {"constant": 1}}
    # The accelerator request inside the loop reads gpu_type/gpu_count, so the loop must receive them.
    loop_inputs = spec["components"]["comp-for-loop-2"]["inputDefinitions"]["parameters"]
    assert {"pipelinechannel--gpu_type", "pipelinechannel--gpu_count"} <= set(loop_inputs)
    merge = tasks["merge-attempts-2"]["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]
    assert merge == {"outputArtifactKey": "pipelinechannel--rollout-2-attempts", "producerTask": "for-loop-2"}
    for name in ("attempts", "problems"):  # the merged folder holds the round's problems too
        assert tasks["verify-2"]["inputs"]["artifacts"][name]["taskOutputArtifact"]["producerTask"] == (
            "merge-attempts-2")  # fmt: skip
    assert spec["root"]["inputDefinitions"]["parameters"]["gpu_type"]["defaultValue"] == "nvidia.com/gpu"


def test_models_are_resolved_uncached_and_the_evaluation_is_the_output(train_yaml) -> None:
    spec, executors = train_yaml
    tasks = spec["root"]["dag"]["tasks"]

    def inputs(task: str) -> dict:
        return tasks[task]["inputs"]["parameters"]

    # The initial model: a registry pointer is resolved to its version before the cached fetch.
    assert inputs("initial-model")["model_uri"]["taskOutputParameter"]["producerTask"] == "resolve-run-model"
    assert inputs("resolve-run-model")["which"] == {"runtimeValue": {"constant": "model"}}
    # The baseline: the config's, else the registry's current model (else the initial model).
    assert inputs("evaluate-run")["baseline_uri"]["taskOutputParameter"]["producerTask"] == "resolve-run-model-2"
    assert inputs("resolve-run-model-2")["which"] == {"runtimeValue": {"constant": "baseline"}}
    for task in ("resolve-run-model", "resolve-run-model-2"):
        assert tasks[task]["cachingOptions"].get("enableCache") in (None, False)
    assert tasks["initial-model"]["cachingOptions"]["enableCache"] is True
    assert "secretAsEnv" in executors["exec-resolve-run-model-2"]  # reads the registry on S3
    output = spec["root"]["dag"]["outputs"]["artifacts"]["Output"]["artifactSelectors"][0]
    assert output == {"outputArtifactKey": "results", "producerSubtask": "evaluate-run"}


def _output_types(spec: dict, component: str) -> dict[str, str]:
    artifacts = spec["components"][component]["outputDefinitions"]["artifacts"]
    return {name: entry["artifactType"]["schemaTitle"] for name, entry in artifacts.items()}


def test_the_kfp_ui_gets_the_report_the_headline_and_the_round_table(train_yaml) -> None:
    """Issue 18: each evaluation's self-contained report as HTML and its headline as Markdown; the
    train pipeline's per-round table (from the last round's training state) as Markdown."""
    spec, _ = train_yaml
    tasks = spec["root"]["dag"]["tasks"]
    assert _output_types(spec, "comp-evaluate-run") == {"results": "system.Dataset", "report": "system.Markdown",
                                                        "page": "system.HTML", "metrics": "system.Metrics"}  # fmt: skip
    assert _output_types(spec, "comp-round-table") == {"table": "system.Markdown"}
    last_round = f"train-{CONFIG.rounds}"
    for task in ("round-table", "evaluate-run"):
        state = tasks[task]["inputs"]["artifacts"]["train_state"]["taskOutputArtifact"]
        assert state == {"outputArtifactKey": "train_state", "producerTask": last_round}
    evaluate_spec = next(yaml.safe_load_all((ROOT / "pipelines" / "evaluate.yaml").read_text()))
    assert _output_types(evaluate_spec, "comp-evaluate")["page"] == "system.HTML"


def test_gpu_stages_get_accelerator_toleration_shm_and_timeout(train_yaml) -> None:
    spec, executors = train_yaml
    tasks = spec["root"]["dag"]["tasks"]
    loop_tasks = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
    for task, executor in (
        ("rollout", "exec-rollout"),
        ("train", "exec-train"),
        ("evaluate-run", "exec-evaluate-run"),
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
    secret = executors["exec-prepare-problems"]["secretAsEnv"][0]
    assert secret["secretNameParameter"] == {"componentInputParameter": "s3_secret"}
    assert {e["envVar"] for e in secret["keyToEnv"]} == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
    }
    assert tasks["prepare-problems"]["cachingOptions"]["enableCache"] is True
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
    from calgrpo.errors import ConfigError

    with pytest.raises(ConfigError, match="rounds must be >= 1"):
        PipelineConfig(rounds=0)


def _run_local(*args: str) -> dict:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "-m", "calgrpo.cli", "pipeline", "run-local", *args],
        capture_output=True, text=True, timeout=600, check=False, env={**env, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


RUN_YAML = """\
task_options: {num_values: 8}
rounds: 2
prompts_per_round: 8
rollout: {num_attempts: 3, group_size: 4}
train: {learning_rate: 3.0e-3, ppo_epochs: 2, minibatches: 2, warmup_steps: 2}
eval_problems: 8
eval_samples: 2
margin: -1.0
"""


@pytest.mark.slow
def test_the_pipeline_trains_bitwise_like_learn_on_the_same_config_file(tmp_path) -> None:
    """`pipeline run-local --config run.yaml` and `learn --config run.yaml`: the same final weights,
    bit for bit, and the same training metrics every round; then the promoted model is evaluated by
    the evaluate pipeline through its registry pointer on the embedded S3."""
    import json

    from safetensors.torch import load_file

    (tmp_path / "run.yaml").write_text(RUN_YAML)
    trained = _run_local("--config", str(tmp_path / "run.yaml"), "--root", str(tmp_path / "kfp"))
    learned = subprocess.run(
        [sys.executable, "-m", "calgrpo.cli", "learn", "--config", str(tmp_path / "run.yaml"), "--output",
         str(tmp_path / "learn"), "--threads", "1"],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert learned.returncode == 0, learned.stderr[-3000:]
    run = next((tmp_path / "kfp" / "artifacts").glob("calgrpo-train-*"))
    pipeline_weights = load_file(run / "train-2" / "new_model" / "model.safetensors")
    learn_weights = load_file(tmp_path / "learn" / "model" / "model.safetensors")
    assert pipeline_weights.keys() == learn_weights.keys()
    assert all(torch.equal(pipeline_weights[k], learn_weights[k]) for k in learn_weights)
    learn_rounds = [row for row in map(json.loads, (tmp_path / "learn" / "metrics.jsonl").read_text().splitlines())
                    if "train/loss" in row]  # fmt: skip
    pipeline_rounds = [json.loads((run / task / "train_state" / "state.json").read_text())["metrics"]
                       for task in ("train", "train-2")]  # fmt: skip
    assert len(learn_rounds) == len(pipeline_rounds) == 2
    for ours, theirs in zip(pipeline_rounds, learn_rounds, strict=True):
        for key, value in ours.items():
            if not key.endswith("_per_s"):  # throughput is a measurement, not a result
                assert theirs[key] == value, key
    # The resolved config is saved next to the outputs, the same settings in both.
    saved = json.loads((tmp_path / "learn" / "config.json").read_text())
    assert saved["train"]["warmup_steps"] == 2 and saved["rollout"]["sampling"]["max_new_tokens"] is None
    # Promoted (margin -1: any result) into the registry on the embedded S3; one line per task.
    assert trained["promoted"] is True and trained["embedded_s3"].startswith("http://127.0.0.1:")
    assert trained["current"]["model"].startswith("s3://calgrpo/registry/models/policy/versions/")
    assert len(trained["v@k"]) == len(trained["baseline_v@k"]) == 3
    assert Path(trained["log"]).is_file() and "Executing task" in Path(trained["log"]).read_text()

    # The registry pointer resolves to the promoted version; the embedded S3 serves it again.
    scored = _run_local("--config", str(tmp_path / "run.yaml"), "--root", str(tmp_path / "kfp"), "--pipeline",
                        "evaluate", "--model", "s3://calgrpo/registry/models/policy/current.json",
                        "--baseline", str(run / "train-2" / "new_model"))  # fmt: skip
    assert scored["pipeline"] == "evaluate" and scored["current"] is None
    assert len(scored["v@k"]) == len(scored["baseline_v@k"]) == 3
    difference = scored["difference_v@3"]
    # The same model on both sides, the same seeds: a difference of exactly zero.
    assert difference["low"] == difference["mean"] == difference["high"] == 0.0


@pytest.mark.slow
def test_run_local_fans_a_round_out_over_shards_and_merges_them_in_order(tmp_path) -> None:
    (tmp_path / "run.yaml").write_text(RUN_YAML)
    result = _run_local("--config", str(tmp_path / "run.yaml"), "--root", str(tmp_path), "--rounds", "1",
                        "--rollout-shards", "2", "--registry", "")  # fmt: skip
    assert result["registry"] is None and result["promoted"] is False
    run = next((tmp_path / "artifacts").glob("calgrpo-train-*"))
    shards = sorted(run.glob("for-loop-*/rollout/attempts/shard.json"))
    assert len(shards) == 2
    merged = pd.read_parquet(next(run.glob("merge-attempts*/attempts/attempts.parquet")))
    parts = [pd.read_parquet(path.parent / "attempts.parquet") for path in shards]
    assert sorted(merged["problem_id"].unique()) == sorted(set().union(*(set(p["problem_id"]) for p in parts)))
    assert len(merged) == sum(len(p) for p in parts)
    problems = pd.read_parquet(next(run.glob("merge-attempts*/attempts/problems.parquet")))
    assert set(problems["id"]) == set(merged["problem_id"]) and len(problems) == 8


def test_multi_node_training_compiles_to_a_trainjob_launcher(tmp_path) -> None:
    compile_pipelines(tmp_path, CONFIG, train_nodes=4)
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
        compile_pipelines(tmp_path, CONFIG, train_nodes=0)
