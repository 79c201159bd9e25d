"""What a training run computes, and the pieces of a round that `learn` and the pipeline share.

:class:`RunConfig` holds every setting that changes the numbers of a run: the model, the problems,
the rounds, the rollout (K, G, sampling) and the optimisation. ``calgrpo learn`` (:class:`LearnConfig`,
in one process) and the train pipeline (:class:`PipelineConfig`, one KFP task per stage) both extend
it, so one YAML file drives either, with one name and one default per setting. The functions below
are the only place a round's problems, its seeds and the initial model are decided: both entry
points call them, so R pipeline rounds are the same computation as R rounds of ``learn``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from calgrpo.errors import ConfigError, check_ranges
from calgrpo.models.config import TinyModelConfig
from calgrpo.rollout.config import RolloutConfig
from calgrpo.trackers import DEFAULT_REPORT_TO, check_report_to
from calgrpo.train.config import TrainConfig

if TYPE_CHECKING:
    from calgrpo.tasks import Problem, SyntheticTask

SYNTHETIC_EVAL = "eval.parquet"
"""The evaluation split's file in a problems folder (ingest's and the generated one alike)."""


@dataclass(frozen=True)
class RunConfig:
    """The settings of a training run that change its numbers (shared by learn and the pipeline)."""

    model: str = "tiny:llama"
    """Policy to start from: a hub id (``ID@REVISION`` pins a revision), a local folder, an s3://
    prefix, or tiny:llama / tiny:qwen2 (a tiny model built from --tiny.* with a tokenizer trained on
    the task's texts)."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the tiny model when --model is tiny:*."""
    task: str = "guess"
    """Synthetic task whose problems are generated afresh every round, when no --dataset is given
    (``guess``, ``codebreak``; docs/tasks.md)."""
    task_options: dict[str, str] = field(default_factory=dict)
    """The synthetic task's options, e.g. ``--task-options num_values 16 hint_prob 0.5`` (in a config
    file a mapping); each task documents its own, an unknown one is refused with the list."""
    dataset: str | None = None
    """A dataset to ingest instead (local file or s3://; normalised and validated by ``calgrpo
    ingest``): each round draws --prompts-per-round of its train split, evaluation uses its eval
    split."""
    dataset_format: str = "jsonl"
    """--format of the dataset for ingest (``jsonl``, ``gsm8k``, ``mbpp``, ...)."""
    eval_fraction: float = 0.25
    """Share of the dataset held out for evaluation."""
    rounds: int = 8
    """Rollout -> verify -> train rounds."""
    prompts_per_round: int = 16
    """Problems per rollout batch (P)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Attempts K, group size G and sampling (the attempt length defaults to the task's budget)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation on each rollout batch."""
    eval_problems: int = 256
    """Evaluation problems generated for a synthetic task (fixed for the run)."""
    eval_samples: int = 4
    """Episodes per evaluation problem."""
    reuse_cache: bool = True
    """Keep the KV cache across attempts (False re-encodes the history every attempt)."""
    seed: int = 0
    """Base seed of every random stream in the run."""
    report_to: tuple[str, ...] = DEFAULT_REPORT_TO
    """Trackers of the run's metrics: ``tensorboard`` (event files next to the outputs), ``mlflow``,
    ``wandb`` (optional extras), several at once, or ``none`` (calgrpo.trackers)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "report_to", check_report_to(self.report_to))
        positive = ("rounds", "prompts_per_round", "eval_problems", "eval_samples")
        rules = {name: (getattr(self, name) >= 1, ">= 1") for name in positive}
        rules["eval_fraction"] = (0 < self.eval_fraction < 1, "in (0, 1)")
        check_ranges("run", self, rules)
        if self.rollout.group_size < 2:
            raise ConfigError(
                f"--rollout.group-size must be >= 2 for leave-one-out, got {self.rollout.group_size}"
            )
        if self.train.temperature != self.rollout.sampling.temperature:
            raise ConfigError(
                f"--train.temperature {self.train.temperature} must equal --rollout.sampling.temperature "
                f"{self.rollout.sampling.temperature}: tokens are scored as they were sampled"
            )
        # As strings, whatever built the config: a file, flags and the pipeline's JSON give one config.
        options = {str(key): _option_text(value) for key, value in self.task_options.items()}
        object.__setattr__(self, "task_options", options)
        if self.dataset is None:
            self.synthetic_task()  # an unknown task or option fails here, before any work
        elif self.task_options:
            raise ConfigError("--task-options apply to a synthetic task; a --dataset brings its own problems")

    def synthetic_task(self) -> SyntheticTask:
        from calgrpo.tasks import synthetic_task

        return synthetic_task(self.task, self.task_options)


def _option_text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def rollout_seed(seed: int, round_index: int, shard_index: int = 0, num_shards: int = 1) -> int:
    """Seed of round ``round_index``'s sampling (of one shard of it: with one shard, the round's)."""
    from calgrpo.seeding import derive_seed

    if num_shards == 1:
        return derive_seed(seed, "rollout", round_index)
    return derive_seed(seed, "rollout", round_index, shard_index, num_shards)


def minibatch_seed(seed: int, round_index: int) -> int:
    """Seed of round ``round_index``'s minibatch order."""
    from calgrpo.seeding import derive_seed

    return derive_seed(seed, "minibatches", round_index)


def prepare_problems(config: RunConfig, folder: str | Path) -> Path:
    """The run's problems folder: the ingested dataset (train.parquet, eval.parquet, a validation
    report), or for a synthetic task its fixed evaluation set (eval.parquet; the rounds' problems
    are generated as they come). Returns ``folder``."""
    from calgrpo.io import write_problems
    from calgrpo.seeding import derive_seed

    folder = Path(folder)
    if config.dataset is not None:
        from calgrpo.ingest.pipeline import IngestConfig, ingest

        ingest(IngestConfig(format=config.dataset_format, input=config.dataset, output=str(folder),
                            eval_fraction=config.eval_fraction))  # fmt: skip
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    task = config.synthetic_task()
    evaluation = task.generate(config.eval_problems, derive_seed(config.seed, "eval"), id_prefix="eval")
    write_problems(evaluation, folder / SYNTHETIC_EVAL)
    return folder


def round_problems(config: RunConfig, folder: str | Path, round_index: int) -> list[Problem]:
    """Round ``round_index``'s problems: drawn from the dataset in ``folder`` (its train split, or
    all of it when it has no splits), or, when ``folder`` holds no dataset (:func:`prepare_problems`
    for a synthetic task), generated from the synthetic task."""
    from calgrpo.io import read_problems
    from calgrpo.rollout.loop import problems_for_round
    from calgrpo.seeding import derive_seed

    dataset = dataset_file(folder)
    if dataset is None:
        seed = derive_seed(config.seed, "problems", round_index)
        return config.synthetic_task().generate(config.prompts_per_round, seed, id_prefix=f"r{round_index}")
    return problems_for_round(read_problems(dataset), config.prompts_per_round, config.seed, round_index)


def dataset_file(folder: str | Path) -> Path | None:
    """The training problems of an ingest output: train.parquet, else problems.parquet (None: neither)."""
    found = [Path(folder, name) for name in ("train.parquet", "problems.parquet")]
    return next((path for path in found if path.is_file()), None)


def eval_problems(folder: str | Path) -> list[Problem]:
    from calgrpo.io import read_problems

    return read_problems(Path(folder, SYNTHETIC_EVAL))


def initial_model(config: RunConfig, problems_folder: str | Path, folder: str | Path) -> str:
    """The run's starting policy as a model URI: ``config.model`` itself, or for tiny:* a tiny model
    built into ``folder`` with a tokenizer trained on the run's texts (the same seed, the same model)."""
    import dataclasses

    from calgrpo.models.tiny import save_tiny_policy
    from calgrpo.seeding import derive_seed
    from calgrpo.tasks import get_task

    if not config.model.startswith("tiny:"):
        return config.model
    architecture = config.model.removeprefix("tiny:")
    if architecture not in ("llama", "qwen2"):
        raise ConfigError(f"--model {config.model}: tiny models are tiny:llama or tiny:qwen2")
    if config.dataset is None:
        task = config.synthetic_task()
        texts = task.sample_texts(task.generate(512, derive_seed(config.seed, "vocab")))
    else:
        from calgrpo.io import read_problems

        dataset = dataset_file(problems_folder) or Path(problems_folder, "train.parquet")
        problems = read_problems(dataset)[:512]
        texts = []
        for name in sorted({p.task for p in problems}):
            texts += get_task(name).sample_texts([p for p in problems if p.task == name])
    tiny = dataclasses.replace(config.tiny, architecture=architecture)
    return str(save_tiny_policy(tiny, texts, folder))
