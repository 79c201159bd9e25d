"""Metrics to the trackers people watch: TensorBoard (the default), MLflow, Weights & Biases.

``learn``, the train stage and ``evaluate`` log through :func:`open_trackers` under one set of names
(``train/loss``, ``rollout/v@k``, ``eval/v@3``, ``time/rollout_s``; docs/metrics.md), so a learn run
and a pipeline run look the same in any of them. The x-axis is the training round. A tracker is a
registry entry (``TRACKERS``): a factory from :class:`TrackerSpec` to an object with ``log`` and
``close``. Where each one writes:

- ``tensorboard``: event files in ``FOLDER/tensorboard`` (``tensorboard --logdir FOLDER``);
- ``mlflow``: the run in ``MLFLOW_TRACKING_URI`` when set, else a local file store in
  ``FOLDER/mlruns`` (``mlflow ui --backend-store-uri FOLDER/mlruns``); experiment
  ``MLFLOW_EXPERIMENT_NAME`` or ``calgrpo``. MLflow refuses ``@`` in names: ``eval/v@3`` is logged
  as ``eval/v_at_3`` there;
- ``wandb``: ``wandb.init`` with the project ``WANDB_PROJECT`` or ``calgrpo``, files under
  ``FOLDER/wandb``; ``WANDB_MODE=offline`` works without network (``wandb sync`` uploads later).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from calgrpo.errors import ConfigError
from calgrpo.registry import Registry

DEFAULT_REPORT_TO: tuple[str, ...] = ("tensorboard",)


@dataclass(frozen=True)
class TrackerSpec:
    """What a tracker is opened with."""

    folder: Path
    """The run's output folder; local trackers write below it."""
    run_name: str
    """A readable name for the run (the output folder's name, a round)."""
    params: dict[str, Any]
    """The resolved config (nested JSON values), logged once as the run's parameters."""


class Tracker(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


TRACKERS: Registry[Callable[[TrackerSpec], Tracker]] = Registry("tracker")


def check_report_to(names: Iterable[str]) -> tuple[str, ...]:
    """The tracker names, checked against the registry (``none`` alone: no tracker)."""
    names = tuple(names)
    if names == ("none",):
        return ()
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"--report-to: unknown tracker {name!r}; known: {', '.join(TRACKERS)}, none")
    if len(set(names)) != len(names):
        raise ConfigError(f"--report-to names a tracker twice: {' '.join(names)}")
    return names


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"method": "cal"}}`` -> ``{"train.method": "cal"}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of ``metrics`` (flags, strings and NaN are not curves)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


class Trackers:
    """The trackers of one run; ``log`` sends finite scalars to each. A context manager."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log(self, metrics: dict[str, Any], step: int) -> None:
        values = scalars(metrics)
        if values:
            for tracker in self.trackers:
                tracker.log(values, step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_trackers(
    report_to: Iterable[str], folder: str | Path, run_name: str, params: dict[str, Any]
) -> Trackers:
    """Open every tracker named in ``report_to`` for one run writing below ``folder``."""
    spec = TrackerSpec(folder=Path(folder), run_name=run_name, params=params)
    opened: list[Tracker] = []
    try:
        for name in check_report_to(report_to):
            opened.append(TRACKERS.get(name)(spec))
    except BaseException:
        Trackers(opened).close()
        raise
    return Trackers(opened)


def _missing(package: str, extra: str) -> ConfigError:
    return ConfigError(
        f"--report-to {extra} needs the {package!r} package: pip install 'calgrpo[{extra}]' "
        "(or drop it from --report-to)"
    )


@TRACKERS.register("tensorboard")
class TensorBoardTracker:
    """Scalars as TensorBoard event files; the config as a text summary."""

    def __init__(self, spec: TrackerSpec):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard", "tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(spec.folder / "tensorboard"))
        config = json.dumps(spec.params, indent=1, sort_keys=True, default=str)
        # Markdown in TensorBoard's text tab: indented, so it shows as a code block.
        self.writer.add_text("config", "\n".join("    " + line for line in config.splitlines()), 0)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a killed run keeps its curves up to the last round

    def close(self) -> None:
        self.writer.close()


MLFLOW_PARAM_CHARS = 6000
"""MLflow's longest parameter value; longer ones (a long prompt template) are cut."""


def mlflow_name(name: str) -> str:
    """A metric or parameter name MLflow accepts (it refuses ``@``)."""
    return name.replace("@", "_at_")


@TRACKERS.register("mlflow")
class MlflowTracker:
    """One MLflow run: the flattened config as parameters, the scalars as metrics."""

    def __init__(self, spec: TrackerSpec):
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow", "mlflow") from None
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # MLflow 3 keeps its file store in maintenance mode behind this switch; a local folder
            # next to the outputs needs no server and no database, which is what a laptop run wants.
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
            uri = (spec.folder / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "calgrpo")
        experiment = self.client.get_experiment_by_name(experiment_name)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(experiment_name)
        )
        self.run_id = self.client.create_run(experiment_id, run_name=spec.run_name).info.run_id
        params = [
            Param(mlflow_name(key), str(value)[:MLFLOW_PARAM_CHARS])
            for key, value in sorted(flatten(spec.params).items())
        ]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per call
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(mlflow_name(key), value, now, step) for key, value in metrics.items()]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


@TRACKERS.register("wandb")
class WandbTracker:
    """One Weights & Biases run (``WANDB_MODE=offline`` for no network)."""

    def __init__(self, spec: TrackerSpec):
        try:
            import wandb
        except ImportError:
            raise _missing("wandb", "wandb") from None
        (spec.folder / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "calgrpo"),
            name=spec.run_name,
            dir=str(spec.folder),
            config=spec.params,
            reinit="create_new",  # several runs in one process (a test, a benchmark) stay apart
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


ROUND_MARKER = "calgrpo round: "
"""Prefix of the line a pipeline's train task prints with its round's numbers (run-local shows them)."""


def round_line(metrics: dict[str, Any], rounds: int, num_attempts: int) -> str:
    """One console line per training round, like TRL's logging steps."""

    def number(key: str, spec: str) -> str:
        value = metrics.get(key)
        return "-" if value is None else format(value, spec)

    return (
        f"round {metrics['round']}/{rounds}  V@{num_attempts} {number('rollout/v@k', '.3f')}  "
        f"loss {number('train/loss', '+.4f')}  kl {number('train/kl', '.4f')}  "
        f"entropy {number('train/entropy', '.3f')}  clip {number('train/clip_fraction', '.3f')}  "
        f"{number('train/tokens_per_s', '.0f')} tok/s"
    )
