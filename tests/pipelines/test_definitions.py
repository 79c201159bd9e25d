"""The compiled train/evaluate pipelines carry every Kubernetes setting where KFP expects it."""

# No `from __future__ import annotations`: KFP reads the pipeline signatures' real annotations.
import os
import subprocess
import sys
from pathlib import Path

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


def test_rounds_are_unrolled_and_promotion_is_conditional(train_yaml) -> None:
    spec, _ = train_yaml
    tasks = spec["root"]["dag"]["tasks"]
    for name in (
        "ingest",
        "fetch-model",
        "rollout",
        "rollout-2",
        "verify",
        "verify-2",
        "train",
        "train-2",
        "evaluate",
    ):
        assert name in tasks, name
    assert tasks["rollout-2"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "train"
    condition = tasks["condition-1"]
    assert (
        condition["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--registry'] != ''"
    )
    assert "promote" in spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert spec["root"]["inputDefinitions"]["parameters"]["gpu_type"]["defaultValue"] == "nvidia.com/gpu"


def test_gpu_stages_get_accelerator_toleration_shm_and_timeout(train_yaml) -> None:
    spec, executors = train_yaml
    tasks = spec["root"]["dag"]["tasks"]
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
        assert int(platform["activeDeadlineSeconds"]) >= 3600
        assert tasks[task].get("cachingOptions", {}).get("enableCache") in (None, False)


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
    assert tasks["rollout"]["retryPolicy"]["maxRetryCount"] == 2
    assert tasks["rollout"]["retryPolicy"]["backoffFactor"] == 2.0
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


@pytest.mark.slow
def test_run_local_trains_evaluates_and_promotes_into_the_embedded_s3(tmp_path) -> None:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "-m", "calgrpo.cli", "pipeline", "run-local", "--root", str(tmp_path), "--rounds", "1",
         "--group-size", "4"],
        capture_output=True, text=True, timeout=600, check=False, env={**env, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["embedded_s3"].startswith("http://127.0.0.1:")
    assert summary["current"]["model"].startswith("s3://calgrpo/registry/models/policy/versions/")
    assert (tmp_path / "s3").is_dir() and (tmp_path / "artifacts").is_dir()
