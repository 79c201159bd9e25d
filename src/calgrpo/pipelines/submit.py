"""Submitting and scheduling pipelines on a Kubeflow Pipelines host (``calgrpo pipeline submit|schedule``).

Parameters are given as ``k=v`` and typed from the compiled pipeline's own input definitions, so a
typo or a wrong type fails here with the valid names, not in the cluster. KFP's cron has six fields,
seconds first (``S M H DoM Mon DoW``); expressions are checked before anything is sent.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from calgrpo.errors import CalgrpoError, ConfigError

CRON_FORMAT = "6 fields, seconds first: 'S M H DoM Mon DoW', e.g. '0 0 2 * * *' = every day at 02:00:00"
_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 6))  # fmt: skip
_NAMES = {
    "month": {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())},
    "day of week": {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())},
}


# The ServiceAccount of infra/base/serviceaccount.yaml, allowed to create and watch TrainJobs.
SERVICE_ACCOUNT = "calgrpo-pipeline"

def validate_cron(expression: str) -> None:
    """Raise ConfigError naming the bad field unless ``expression`` is a valid 6-field KFP cron."""
    fields = expression.split()
    if len(fields) != 6:
        raise ConfigError(f"cron {expression!r} has {len(fields)} fields; KFP cron has {CRON_FORMAT}")
    for text, (name, low, high) in zip(fields, _FIELDS, strict=True):
        if text == "?" and name in ("day of month", "day of week"):
            continue
        for item in text.split(","):
            if not _cron_item_ok(item.upper(), low, high, _NAMES.get(name, {})):
                raise ConfigError(
                    f"cron {expression!r}: {name} field {text!r} is not valid ({low}-{high}); {CRON_FORMAT}"
                )


def _cron_item_ok(item: str, low: int, high: int, names: dict[str, int]) -> bool:
    match = re.fullmatch(r"(\*|[0-9A-Z]+(?:-[0-9A-Z]+)?)(?:/([0-9]+))?", item)
    if not match:
        return False
    span, step = match.group(1), match.group(2)
    if step is not None and int(step) < 1:
        return False
    if span == "*":
        return True

    def value(token: str) -> int | None:
        if token.isdigit():
            return int(token)
        return names.get(token)

    bounds = [value(token) for token in span.split("-")]
    return all(b is not None and low <= b <= high for b in bounds) and (
        len(bounds) == 1 or bounds[0] <= bounds[1]
    )


def _json_of_type(raw: str, kind: type) -> Any:
    value = json.loads(raw)
    if not isinstance(value, kind):
        raise ValueError(raw)
    return value


def parse_params(pairs: list[str] | tuple[str, ...], package: Path) -> dict[str, Any]:
    """``["k=v", ...]`` -> typed arguments, checked against the pipeline's input definitions."""
    import yaml

    spec = next(yaml.safe_load_all(package.read_text()))
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    casts = {"NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "STRING": str,
             "BOOLEAN": lambda v: {"true": True, "false": False}[v.lower()],
             "STRUCT": lambda v: _json_of_type(v, dict),
             "LIST": lambda v: _json_of_type(v, list)}  # fmt: skip
    arguments: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise ConfigError(f"--param {pair!r}: expected NAME=VALUE")
        if name not in inputs:
            close = difflib.get_close_matches(name, list(inputs), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown pipeline parameter {name!r}; valid: {', '.join(sorted(inputs))}.{hint}"
            )
        kind = inputs[name]["parameterType"]
        try:
            arguments[name] = casts[kind](raw)
        except (ValueError, KeyError):
            names = {"STRUCT": "a JSON object", "LIST": "a JSON list"}
            expected = names.get(kind) or kind.lower().replace("_", " ")
            raise ConfigError(f"--param {name}={raw!r}: expected {expected}") from None
    missing = [n for n, d in inputs.items() if not d.get("isOptional") and n not in arguments]
    if missing:
        raise ConfigError(
            f"pipeline parameters without a default must be given: {', '.join(missing)} (--param NAME=VALUE)"
        )
    return arguments


def package_for(pipeline: str, workdir: Path, config=None, train_nodes: int = 1) -> Path:
    """A compiled pipeline: ``train`` or ``evaluate`` (compiled now, the train pipeline with
    ``config``'s rounds), or the path of a YAML file."""
    if pipeline in ("train", "evaluate"):
        from calgrpo.pipelines.compile import compile_pipelines

        compile_pipelines(workdir, config, train_nodes=train_nodes)
        return workdir / f"{pipeline}.yaml"
    path = Path(pipeline)
    if not path.is_file():
        raise ConfigError(f"pipeline {pipeline!r} is neither 'train', 'evaluate' nor a compiled YAML file")
    return path


def connect(host: str):
    """A kfp.Client for ``host``, after checking that the host answers (one-line error otherwise)."""
    import kfp

    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            json.loads(response.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CalgrpoError(f"cannot reach Kubeflow Pipelines at {host} ({reason}); check --host") from None
    return kfp.Client(host=host)


def run_arguments(pipeline: str, package: Path, params: list[str], config) -> dict[str, Any]:
    """The run's arguments: ``params`` (typed from the package) and, for a train pipeline, the
    config as its one ``config`` parameter (given as the command's settings, not as a --param)."""
    from calgrpo.pipelines.config import pipeline_config_json

    arguments = parse_params(params, package)
    if "config" in arguments:
        raise ConfigError("the run's config is not a --param: give it as --config FILE or as flags")
    if pipeline != "evaluate" and config is not None:
        arguments["config"] = pipeline_config_json(config)
    return arguments


def submit(
    host: str, pipeline: str, experiment: str, params: list[str], run_name: str | None, config=None,
    train_nodes: int = 1, service_account: str | None = SERVICE_ACCOUNT,
) -> dict:
    """Submit one run; ``config`` (a PipelineConfig, already validated) is the train pipeline's."""
    with tempfile.TemporaryDirectory() as folder:
        package = package_for(pipeline, Path(folder), config, train_nodes)
        arguments = run_arguments(pipeline, package, params, config)
        client = connect(host)
        with contextlib.redirect_stdout(sys.stderr):  # kfp prints links; stdout is for our JSON
            result = client.create_run_from_pipeline_package(
                str(package), arguments=arguments, run_name=run_name, experiment_name=experiment,
                service_account=service_account,
            )  # fmt: skip
    return {"run_id": result.run_id, "url": f"{host.rstrip('/')}/#/runs/details/{result.run_id}"}


def schedule(host: str, pipeline: str, experiment: str, cron: str, name: str, params: list[str], config=None,
             max_concurrency: int = 1, catchup: bool = False, train_nodes: int = 1,
             service_account: str | None = SERVICE_ACCOUNT) -> dict:  # fmt: skip
    validate_cron(cron)
    with tempfile.TemporaryDirectory() as folder:
        package = package_for(pipeline, Path(folder), config, train_nodes)
        arguments = run_arguments(pipeline, package, params, config)
        client = connect(host)
        with contextlib.redirect_stdout(sys.stderr):  # kfp prints links; stdout is for our JSON
            experiment_id = client.create_experiment(name=experiment).experiment_id
        recurring = client.create_recurring_run(
            experiment_id=experiment_id, job_name=name, cron_expression=cron, max_concurrency=max_concurrency,
            no_catchup=not catchup, params=arguments, pipeline_package_path=str(package),
            service_account=service_account,
        )  # fmt: skip
    return {"recurring_run_id": recurring.recurring_run_id, "cron": cron, "max_concurrency": max_concurrency}
