"""The Kubeflow Trainer TrainJob the train component creates: rendered offline against the schema in
infra/, and the wait/fail/cleanup logic against fake status sequences."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from calgrpo.errors import ConfigError
from calgrpo.train.trainjob import (
    TrainJobFailed,
    TrainJobRequest,
    job_state,
    render_trainjob,
    run_trainjob,
    validate_trainjob,
    wait_for_trainjob,
)

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "infra" / "trainer" / "trainjob.schema.json").read_text()
)


def _request(**overrides) -> TrainJobRequest:
    fields = dict(
        name="calgrpo-train-r3-1a2b3c4d",
        namespace="kubeflow-user",
        image="registry.example/calgrpo/gpu:0.1.0",
        command=["torchrun", "-m", "calgrpo.cli", "train", "--attempts", "s3://b/a.parquet"],
        num_nodes=2,
        procs_per_node=8,
        resources={"limits": {"nvidia.com/gpu": 8, "memory": "800Gi"}, "requests": {"cpu": "64"}},
        env=[
            {
                "name": "AWS_ACCESS_KEY_ID",
                "valueFrom": {"secretKeyRef": {"name": "calgrpo-s3", "key": "AWS_ACCESS_KEY_ID"}},
            },
            {"name": "NCCL_DEBUG", "value": "WARN"},
        ],
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        active_deadline_s=7200,
    )
    return TrainJobRequest(**{**fields, **overrides})


def test_rendered_trainjob_carries_the_task_settings_and_validates() -> None:
    manifest = render_trainjob(_request())
    validate_trainjob(manifest, SCHEMA)
    trainer = manifest["spec"]["trainer"]
    assert manifest["spec"]["runtimeRef"] == {"name": "torch-distributed"}
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 8
    assert trainer["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "calgrpo-s3"
    (patch,) = manifest["spec"]["runtimePatches"]
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = job["template"]["spec"]["template"]["spec"]
    assert job["name"] == "node" and pod["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"
    }
    assert pod["tolerations"][0]["operator"] == "Exists"
    # Without scheduling constraints there is nothing to patch.
    bare = render_trainjob(_request(node_selector={}, tolerations=[], active_deadline_s=None))
    assert "runtimePatches" not in bare["spec"] and "activeDeadlineSeconds" not in bare["spec"]
    validate_trainjob(bare, SCHEMA)


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda m: m["spec"]["trainer"].update(numNode=2), "spec/trainer"),  # a typo is not dropped silently
        (lambda m: m["spec"]["trainer"].update(numNodes=0), "spec/trainer/numNodes"),
        (lambda m: m["spec"]["trainer"]["resourcesPerNode"]["limits"].update(memory="lots"), "memory"),
        (lambda m: m["spec"]["trainer"]["env"][1].update(valueFrom={"secretKeyRef": {"key": "k"}}), "env/1"),
        (lambda m: m["spec"].pop("runtimeRef"), "(root)|spec"),
    ],
)
def test_schema_rejects_what_the_api_server_would_not_take(mutate, where) -> None:
    manifest = copy.deepcopy(render_trainjob(_request()))
    mutate(manifest)
    with pytest.raises(ConfigError, match=where):
        validate_trainjob(manifest, SCHEMA)


def test_requests_refuse_bad_names_and_sizes() -> None:
    with pytest.raises(ConfigError, match="RFC 1035"):
        _request(name="Calgrpo_Train")
    with pytest.raises(ConfigError, match="RFC 1035"):
        _request(name="x" * 64)
    with pytest.raises(ConfigError, match="node and process"):
        _request(num_nodes=0)


def _condition(kind: str, status: str = "True", reason: str = "", message: str = "") -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": "t"}


def test_job_state_reads_conditions() -> None:
    assert job_state(None) == ("running", "")
    assert job_state({"conditions": [_condition("Suspended", "False")]}) == ("running", "")
    assert job_state({"conditions": [_condition("Complete", reason="JobsCompleted")]})[0] == "complete"
    state, why = job_state(
        {
            "conditions": [
                _condition("Complete", "False"),
                _condition("Failed", reason="DeadlineExceeded", message="2h"),
            ]
        }
    )
    assert state == "failed" and why == "DeadlineExceeded: 2h"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _statuses(*sequence):
    items = iter(sequence)
    return lambda: next(items)


def test_wait_returns_on_completion_and_polls_in_between() -> None:
    clock, states = FakeClock(), []
    why = wait_for_trainjob(
        _statuses(None, {"conditions": []}, {"conditions": [_condition("Complete", reason="JobsCompleted")]}),
        poll_s=5,
        on_poll=states.append,
        sleep=clock.sleep,
        clock=lambda: clock.now,
    )
    assert (
        states == ["running", "running", "complete"] and clock.now == 10 and why.startswith("JobsCompleted")
    )


def test_wait_fails_with_the_jobs_reason_or_on_timeout() -> None:
    clock = FakeClock()
    failing = _statuses(
        {}, {"conditions": [_condition("Failed", reason="BackoffLimitExceeded", message="node 1 OOM")]}
    )
    with pytest.raises(TrainJobFailed, match="BackoffLimitExceeded: node 1 OOM"):
        wait_for_trainjob(failing, poll_s=1, sleep=clock.sleep, clock=lambda: clock.now)
    clock = FakeClock()
    with pytest.raises(TrainJobFailed, match="still running after 30 s"):
        wait_for_trainjob(lambda: {}, poll_s=10, timeout_s=30, sleep=clock.sleep, clock=lambda: clock.now)
    assert clock.now == 30


class FakeJobs:
    """The cluster side of run_trainjob: statuses in order, two log lines per poll, calls recorded."""

    def __init__(self, statuses: list[dict]) -> None:
        self.statuses = iter(statuses)
        self.calls: list[str] = []
        self.polls = 0

    def create(self, manifest: dict) -> None:
        self.calls.append(f"create {manifest['metadata']['name']}")

    def status(self, namespace: str, name: str) -> dict:
        self.polls += 1
        return next(self.statuses)

    def new_logs(self, namespace: str, name: str, seen: dict) -> list[str]:
        return [f"poll {self.polls} rank {rank}" for rank in (0, 1)]

    def delete(self, namespace: str, name: str) -> None:
        self.calls.append(f"delete {name}")


def test_run_creates_streams_logs_and_always_deletes() -> None:
    done = FakeJobs([{}, {"conditions": [_condition("Complete", reason="JobsCompleted")]}])
    lines: list[str] = []
    run_trainjob(_request(), done, poll_s=0, log=lines.append)
    assert done.calls == ["create calgrpo-train-r3-1a2b3c4d", "delete calgrpo-train-r3-1a2b3c4d"]
    assert lines == ["poll 1 rank 0", "poll 1 rank 1", "poll 2 rank 0", "poll 2 rank 1"]
    failed = FakeJobs([{"conditions": [_condition("Failed", reason="NCCLTimeout", message="rank 3")]}])
    with pytest.raises(TrainJobFailed, match="NCCLTimeout"):
        run_trainjob(_request(), failed, poll_s=0, log=lambda _: None)
    assert failed.calls[-1] == "delete calgrpo-train-r3-1a2b3c4d"  # cleaned up on failure too
