"""Subcommands for infrastructure: the embedded S3 server, publishing folders, pipelines."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calgrpo.errors import CalgrpoError, ConfigError
from calgrpo.pipelines.config import PipelineConfig
from calgrpo.pipelines.local import RunLocalConfig, as_pipeline_config

log = logging.getLogger("calgrpo")


@dataclass(frozen=True)
class S3ServeCommand:
    """Run the embedded S3 server (SeaweedFS) on loopback until interrupted.

    Prints the environment (AWS_ENDPOINT_URL and generated credentials) that points boto3 and
    calgrpo at it, as shell exports on stdout (or JSON with --json). Exits 1, naming the server's
    log, if the server dies.
    """

    dir: Path = Path("runs/s3")
    """Data directory (kept across restarts; credentials are new each time)."""
    bucket: str = "calgrpo"
    """Bucket created on start; the only one the credentials may use."""
    json: bool = False
    """Print the environment as JSON instead of shell exports."""


@dataclass(frozen=True)
class S3PublishCommand:
    """Publish a local folder (a model, a dataset) at a local path or s3:// URI, manifest written last."""

    source: Path
    """Local folder to publish."""
    destination: str
    """Target folder: local path or s3://bucket/prefix."""


def run_s3_serve(config: S3ServeCommand) -> int:
    import signal
    import threading

    from calgrpo.storage.embedded import EmbeddedS3

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with EmbeddedS3(config.dir, bucket=config.bucket) as server:
        env = server.env()
        if config.json:
            print(
                json.dumps({**env, "bucket": config.bucket, "startup_s": round(server.startup_s, 3)}),
                flush=True,
            )
        else:
            print("".join(f"export {k}={v}\n" for k, v in env.items()), end="", flush=True)
        log.info("embedded S3 serving s3://%s at %s; Ctrl-C stops it", config.bucket, server.endpoint)
        while not stop.wait(0.5):
            server.check()  # weed died: StorageError naming its log, exit 1
    return 0


def run_s3_publish(config: S3PublishCommand) -> int:
    from calgrpo.storage import publish_folder

    if not config.source.is_dir():
        raise ConfigError(f"source {config.source} is not a folder")
    manifest = publish_folder(config.source, config.destination)
    print(json.dumps({"published": config.destination, "files": len(manifest["files"])}))
    return 0


@dataclass(frozen=True, kw_only=True)
class PipelineCompileCommand(PipelineConfig):
    """Compile the stage components (for kfp.components.load_component_from_file) and the pipelines.

    The train pipeline's ``config`` parameter defaults to this command's settings (--config FILE and
    the same flags as ``calgrpo learn``); its rounds are unrolled. Image names come from
    CALGRPO_IMAGE_REPO and CALGRPO_IMAGE_TAG at compile time.
    """

    components_dir: Path = Path("components")
    """Where component YAMLs go: <dir>/<stage>/component.yaml."""
    pipelines_dir: Path = Path("pipelines")
    """Where the pipeline YAMLs go: train.yaml and evaluate.yaml."""
    train_nodes: int = 1
    """Nodes each round's training spans; > 1 runs it as a Kubeflow Trainer TrainJob (compile time)."""


def _require_kfp() -> None:
    try:
        import kfp  # noqa: F401
        from kfp import kubernetes  # noqa: F401
    except ImportError:  # a missing install is a runtime failure (exit 1), not a usage error
        raise CalgrpoError(
            "pipeline commands need kfp and kfp-kubernetes: pip install 'calgrpo[pipelines]'"
        ) from None


def run_pipeline_compile(config: PipelineCompileCommand) -> int:
    _require_kfp()
    from calgrpo.pipelines.compile import compile_components, compile_pipelines

    if config.train_nodes < 1:
        raise ConfigError(f"--train-nodes must be >= 1, got {config.train_nodes}")
    components = compile_components(config.components_dir)
    pipelines = compile_pipelines(config.pipelines_dir, as_pipeline_config(config), config.train_nodes)
    print(json.dumps({"components": [str(p) for p in components], "pipelines": [str(p) for p in pipelines]}))
    return 0


def run_pipeline_local(config: RunLocalConfig) -> int:
    _require_kfp()
    from calgrpo.pipelines.local import run_local

    result = run_local(config)
    print(json.dumps(result))
    for line in describe_run(result):
        print(line, file=sys.stderr)
    return 0


def describe_run(result: dict[str, Any]) -> list[str]:
    """The human-readable lines of a run-local result (the JSON on stdout is for programs)."""
    def row(values: list[float]) -> str:
        return "  ".join(f"V@{k}={v:.3f}" for k, v in enumerate(values, start=1))

    lines = [f"{result['pipeline']} pipeline finished in {result['elapsed_s']:.0f} s"]
    if "baseline_v@k" in result:
        lines.append(f"  baseline: {row(result['baseline_v@k'])}")
    lines.append(f"  model:    {row(result['v@k'])}")
    if result.get("optimum_v@k"):
        lines.append(f"  optimum:  {row(result['optimum_v@k'])}  (the best any policy can do)")
    difference = next((v for k, v in result.items() if k.startswith("difference_")), None)
    if difference:
        name = next(k for k in result if k.startswith("difference_")).removeprefix("difference_")
        lines.append(f"  {name} difference {difference['mean']:+.3f}, 95% CI [{difference['low']:+.3f}, "
                     f"{difference['high']:+.3f}]")  # fmt: skip
    if result.get("registry"):
        current = result["current"]
        verdict = "promoted" if result["promoted"] else "not promoted"
        lines.append(f"  {verdict}; registry {result['registry']} current version: "
                     f"{current['version'] if current else '(none)'}")  # fmt: skip
    lines.append(f"  report: {result['report']}")
    return lines


@dataclass(frozen=True, kw_only=True)
class PipelineSubmitCommand(PipelineConfig):
    """Submit a run of the train pipeline (or the evaluate pipeline, or a compiled YAML) to a KFP host.

    The run's config is this command's settings (--config FILE and the same flags as ``calgrpo
    learn``), validated here before anything is compiled or sent.
    """

    host: str
    """KFP API endpoint, e.g. http://localhost:8080 after a port-forward of ml-pipeline-ui."""
    pipeline: str = "train"
    """``train``, ``evaluate`` (compiled now) or the path of a compiled pipeline YAML."""
    experiment: str = "calgrpo"
    """Experiment to file the run under (created if missing)."""
    param: tuple[str, ...] = ()
    """Where tasks run, as NAME=VALUE (gpu_type, gpu_count, gpu_node_selector, s3_secret, staging,
    trainer_image); for the evaluate pipeline, its parameters."""
    run_name: str | None = None
    """Display name of the run."""
    service_account: str = "calgrpo-pipeline"
    """Kubernetes ServiceAccount the run's pods use (infra/base creates calgrpo-pipeline; '' = KFP's
    default)."""
    train_nodes: int = 1
    """Nodes each round's training spans; > 1 runs it as a Kubeflow Trainer TrainJob (compile time)."""


@dataclass(frozen=True, kw_only=True)
class PipelineScheduleCommand(PipelineConfig):
    """Schedule recurring runs (e.g. weekly retraining) of the train pipeline on a KFP host, with
    this command's settings as the runs' config (validated here)."""

    host: str
    """KFP API endpoint."""
    cron: str
    """KFP cron, 6 fields with seconds first: 'S M H DoM Mon DoW' ('0 0 2 * * SUN' = Sundays 02:00)."""
    name: str = "calgrpo-retrain"
    """Name of the recurring run."""
    pipeline: str = "train"
    """``train``, ``evaluate`` or the path of a compiled pipeline YAML."""
    experiment: str = "calgrpo"
    """Experiment to file the runs under."""
    param: tuple[str, ...] = ()
    """Where tasks run, as NAME=VALUE (see ``pipeline submit``)."""
    max_concurrency: int = 1
    """Runs allowed at once (1: a slow run delays the next instead of overlapping it)."""
    catchup: bool = False
    """Backfill missed intervals after a pause (off: only the latest one runs)."""
    service_account: str = "calgrpo-pipeline"
    """Kubernetes ServiceAccount the run's pods use (infra/base creates calgrpo-pipeline; '' = KFP's
    default)."""
    train_nodes: int = 1
    """Nodes each round's training spans; > 1 runs it as a Kubeflow Trainer TrainJob (compile time)."""


def run_pipeline_submit(config: PipelineSubmitCommand) -> int:
    _require_kfp()
    from calgrpo.pipelines.submit import submit

    result = submit(
        config.host, config.pipeline, config.experiment, list(config.param), config.run_name,
        as_pipeline_config(config), config.train_nodes, config.service_account or None,
    )  # fmt: skip
    print(json.dumps(result))
    return 0


def run_pipeline_schedule(config: PipelineScheduleCommand) -> int:
    _require_kfp()
    from calgrpo.pipelines.submit import schedule

    result = schedule(
        config.host,
        config.pipeline,
        config.experiment,
        config.cron,
        config.name,
        list(config.param),
        as_pipeline_config(config),
        max_concurrency=config.max_concurrency,
        catchup=config.catchup,
        train_nodes=config.train_nodes,
        service_account=config.service_account or None,
    )
    print(json.dumps(result))
    return 0


INFRA_COMMANDS: dict[str, tuple[type, Callable[[Any], int]]] = {
    "pipeline-compile": (PipelineCompileCommand, run_pipeline_compile),
    "pipeline-run-local": (RunLocalConfig, run_pipeline_local),
    "pipeline-submit": (PipelineSubmitCommand, run_pipeline_submit),
    "pipeline-schedule": (PipelineScheduleCommand, run_pipeline_schedule),
    "s3-serve": (S3ServeCommand, run_s3_serve),
    "s3-publish": (S3PublishCommand, run_s3_publish),
}
