"""Training that outgrows one pod: a Kubeflow Trainer ``TrainJob`` (runtime ``torch-distributed``).

The train component renders a TrainJob whose nodes run ``torchrun -m calgrpo.cli train`` (the runtime
sets torchrun's ``PET_*`` variables: node count, rank, master address), forwards the task's GPU
resources, tolerations, node selector and environment to it, creates it, follows it until it
completes, fails the task with the job's own reason when it fails, and deletes it either way.
Inputs and outputs travel through S3, since the job's pods share no disk with the task's pod.

Written against Kubeflow Trainer's ``trainer.kubeflow.org/v1alpha1`` TrainJob with per-pod
``runtimePatches``; ``infra/trainer/trainjob.schema.json`` describes the subset rendered here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from calgrpo.errors import CalgrpoError, ConfigError

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
PATCH_MANAGER = "calgrpo.dev/train-component"
NODE_JOB = "node"  # the replicated job (and container) of the torch-distributed runtime
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


class TrainJobFailed(CalgrpoError):
    """The TrainJob ended in a Failed condition (or did not finish in time)."""


@dataclass(frozen=True)
class TrainJobRequest:
    """What the train task asks of the cluster."""

    name: str
    """RFC 1035 label (lowercase, starts with a letter, at most 63 characters)."""
    namespace: str
    image: str
    command: list[str]
    num_nodes: int = 1
    procs_per_node: int = 1
    """Processes (GPUs) per node."""
    resources: dict[str, Any] = field(default_factory=dict)
    """``{"limits": {...}, "requests": {...}}`` per node, as the task itself requested."""
    env: list[dict[str, Any]] = field(default_factory=list)
    """Core EnvVar objects (``value`` or ``valueFrom.secretKeyRef``)."""
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    runtime: str = "torch-distributed"
    active_deadline_s: int | None = None

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ConfigError(f"TrainJob name {self.name!r} is not an RFC 1035 label (<= 63 chars, a-z0-9-)")
        if self.num_nodes < 1 or self.procs_per_node < 1:
            raise ConfigError(
                f"TrainJob needs >= 1 node and process, got {self.num_nodes} x {self.procs_per_node}"
            )
        if self.active_deadline_s is not None and self.active_deadline_s < 1:
            raise ConfigError(f"active_deadline_s must be >= 1, got {self.active_deadline_s}")


def render_trainjob(request: TrainJobRequest) -> dict[str, Any]:
    """The TrainJob manifest for ``request``."""
    trainer: dict[str, Any] = {
        "image": request.image,
        "command": list(request.command),
        "numNodes": request.num_nodes,
        "numProcPerNode": request.procs_per_node,
    }
    if request.resources:
        trainer["resourcesPerNode"] = request.resources
    if request.env:
        trainer["env"] = request.env
    spec: dict[str, Any] = {"runtimeRef": {"name": request.runtime}, "trainer": trainer}
    if request.active_deadline_s is not None:
        spec["activeDeadlineSeconds"] = request.active_deadline_s
    pod_spec: dict[str, Any] = {}
    if request.node_selector:
        pod_spec["nodeSelector"] = request.node_selector
    if request.tolerations:
        pod_spec["tolerations"] = request.tolerations
    if pod_spec:
        job = {"name": NODE_JOB, "template": {"spec": {"template": {"spec": pod_spec}}}}
        spec["runtimePatches"] = [
            {
                "manager": PATCH_MANAGER,
                "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job]}}},
            }
        ]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {
            "name": request.name,
            "namespace": request.namespace,
            "labels": {"app.kubernetes.io/managed-by": "calgrpo"},
        },
        "spec": spec,
    }


def validate_trainjob(manifest: dict[str, Any], schema: dict[str, Any]) -> None:
    """Check ``manifest`` against a JSON schema (e.g. infra/trainer/trainjob.schema.json)."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(manifest), key=lambda e: list(e.path))
    if errors:
        where = "/".join(map(str, errors[0].path)) or "(root)"
        raise ConfigError(f"TrainJob manifest invalid at {where}: {errors[0].message}")


def job_state(status: dict[str, Any] | None) -> tuple[str, str]:
    """``("complete" | "failed" | "suspended" | "running", why)`` from a TrainJob's status."""
    conditions = {c.get("type"): c for c in (status or {}).get("conditions", [])}
    for kind in ("Failed", "Complete", "Suspended"):
        condition = conditions.get(kind)
        if condition and condition.get("status") == "True":
            reason = condition.get("reason", "")
            message = condition.get("message", "")
            return kind.lower(), f"{reason}: {message}".strip(": ")
    return "running", ""


def wait_for_trainjob(
    fetch_status: Callable[[], dict[str, Any] | None],
    *,
    poll_s: float = 10.0,
    timeout_s: float = 24 * 3600,
    on_poll: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Poll until the job completes (returns why) or fails (raises :class:`TrainJobFailed` with the
    job's reason and message); a job still running after ``timeout_s`` fails too."""
    deadline = clock() + timeout_s
    while True:
        state, why = job_state(fetch_status())
        if on_poll is not None:
            on_poll(state)
        if state == "complete":
            return why
        if state == "failed":
            raise TrainJobFailed(f"TrainJob failed: {why or 'no reason given'}")
        if clock() >= deadline:
            raise TrainJobFailed(f"TrainJob still {state} after {timeout_s:.0f} s; giving up")
        sleep(poll_s)


class KubernetesTrainJobs:
    """TrainJobs through the ``kubernetes`` client (in-cluster config, else the local kubeconfig)."""

    def __init__(self) -> None:
        try:
            from kubernetes import client, config
        except ImportError as error:
            raise ConfigError(
                "multi-node training needs the kubernetes client (pip install kubernetes)"
            ) from error
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self.custom = client.CustomObjectsApi()
        self.core = client.CoreV1Api()

    def create(self, manifest: dict[str, Any]) -> None:
        namespace = manifest["metadata"]["namespace"]
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)

    def status(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status")

    def delete(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def new_logs(self, namespace: str, name: str, seen: dict[str, int]) -> list[str]:
        """Log lines of the job's pods not returned before (``seen``: lines per pod so far)."""
        pods = self.core.list_namespaced_pod(
            namespace, label_selector=f"jobset.sigs.k8s.io/jobset-name={name}"
        )
        lines = []
        for pod in pods.items:
            try:
                text = self.core.read_namespaced_pod_log(pod.metadata.name, namespace)
            except Exception:  # noqa: BLE001 (a pod still starting has no log yet)
                continue
            pod_lines = text.splitlines()
            lines += [f"[{pod.metadata.name}] {line}" for line in pod_lines[seen.get(pod.metadata.name, 0) :]]
            seen[pod.metadata.name] = len(pod_lines)
        return lines


def run_trainjob(
    request: TrainJobRequest,
    jobs,
    *,
    poll_s: float = 10.0,
    timeout_s: float = 24 * 3600,
    log: Callable[[str], None] = print,
) -> str:
    """Create the job, stream its logs, wait for it, and delete it whatever happened."""
    manifest = render_trainjob(request)
    jobs.create(manifest)
    seen: dict[str, int] = {}

    def follow(_state: str) -> None:
        for line in jobs.new_logs(request.namespace, request.name, seen):
            log(line)

    try:
        return wait_for_trainjob(
            lambda: jobs.status(request.namespace, request.name),
            poll_s=poll_s,
            timeout_s=timeout_s,
            on_poll=follow,
        )
    finally:
        jobs.delete(request.namespace, request.name)


def train_on_cluster(
    config,
    *,
    staging: str,
    request: TrainJobRequest,
    jobs,
    launcher: tuple[str, ...] = ("torchrun",),
    node_output: str = "/tmp/calgrpo-train-output",  # noqa: S108 (inside the job's own pods)
    poll_s: float = 10.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The train stage (``config``, a TrainStageConfig with local inputs) as a TrainJob; returns the
    round's metrics.

    The inputs (attempts, verdicts, the model folder, the previous round's state, the KL reference)
    are staged under ``staging`` (an s3:// prefix the job's pods can read) and so is the config,
    rewritten to name them; every rank runs ``python -m calgrpo.train.stage <staged config>``, rank
    0 publishes the output there, and it is fetched into ``config.output``. ``request.command`` is replaced.
    """
    import dataclasses
    import json
    import tempfile
    from pathlib import Path

    from calgrpo.configs import write_config
    from calgrpo.storage.core import join, upload_file
    from calgrpo.storage.folders import fetch_folder, publish_folder

    inputs = join(staging, "inputs")
    upload_file(config.attempts, join(inputs, "attempts.parquet"))
    if config.verdicts is not None:
        upload_file(config.verdicts, join(inputs, "verdicts.parquet"))
    publish_folder(config.model, join(inputs, "model"))
    if config.resume_from is not None:
        publish_folder(config.resume_from, join(inputs, "state"))
    if config.reference is not None:
        publish_folder(config.reference, join(inputs, "reference"))
    staged = dataclasses.replace(
        config, attempts=join(inputs, "attempts.parquet"), model=join(inputs, "model"),
        verdicts=join(inputs, "verdicts.parquet") if config.verdicts is not None else None,
        resume_from=join(inputs, "state") if config.resume_from is not None else None,
        reference=join(inputs, "reference") if config.reference is not None else None,
        output=Path(node_output), publish=join(staging, "output"),
    )  # fmt: skip
    config_uri = join(staging, "train_config.json")
    with tempfile.TemporaryDirectory(prefix="calgrpo-trainjob-") as folder:
        write_config(staged, Path(folder, "train_config.json"))
        upload_file(Path(folder, "train_config.json"), config_uri)  # with its sha256, checked on read
    command = [*launcher, "-m", "calgrpo.train.stage", config_uri]
    run_trainjob(dataclasses.replace(request, command=command), jobs, poll_s=poll_s, log=log)
    fetch_folder(join(staging, "output"), config.output)
    return json.loads(Path(config.output, "state.json").read_text())["metrics"]
