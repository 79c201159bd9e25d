"""Problems, verdicts and the task registry (docs/tasks.md, docs/development.md).

A task type is one module that bundles what is specific to a kind of problem: how its prompt is
shown to the model, how an attempt is verified, the feedback after a failed attempt, the ingest
formats that normalise a public dataset into its problems (``register_format``) and ingest's
per-row checks of them (:meth:`Task.check_rows`); a synthetic task also generates its problems from
its options (:class:`SyntheticTask`). Rollout, training, ingest and evaluation only talk to this
interface, so a new task plugs in by registering itself, and importing ``calgrpo.tasks`` registers
every built-in one.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from calgrpo.errors import ConfigError
from calgrpo.registry import Registry

FeedbackMode = Literal["binary", "detailed"]


@dataclass(frozen=True)
class Problem:
    """One row of ``problems.parquet`` (DESIGN section 3)."""

    id: str
    """Stable identifier, unique within a dataset."""
    task: str
    """Task-registry key, e.g. ``guess``."""
    prompt: str
    """What the user asks; shown through the task's ``format_prompt``."""
    answer: str
    """Gold answer (never shown to the model)."""
    tests: str = ""
    """Hidden test code for code tasks; empty otherwise."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Task parameters and metadata (JSON-serialisable)."""

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "prompt": self.prompt,
            "answer": self.answer,
            "tests": self.tests,
            "meta": json.dumps(self.meta, sort_keys=True),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Problem:
        meta = row.get("meta") or "{}"
        meta = json.loads(meta) if isinstance(meta, str) else meta
        if not isinstance(meta, dict):
            raise ValueError(f"meta must be a JSON object, got {type(meta).__name__}")
        return cls(
            id=str(row["id"]),
            task=str(row["task"]),
            prompt=str(row["prompt"]),
            answer=str(row["answer"]),
            tests=str(row.get("tests") or ""),
            meta=dict(meta),
        )


@dataclass(frozen=True)
class Verdict:
    """The verifier's decision on one attempt."""

    correct: bool
    """True only for a verified success."""
    detail: str = ""
    """Machine-readable reason (``higher``, ``wrong_answer``, ``timeout``, ...), used for feedback."""
    message: str = ""
    """Human-readable specifics safe to show the model (never the gold answer or hidden tests)."""
    isolation: str = ""
    """Sandbox isolation level used, for code; empty when no code ran."""
    duration_s: float = 0.0
    """Time the verification took."""
    timed_out: bool = False
    """The verification hit its time limit."""
    crashed: bool = False
    """The program (or the checker) died instead of answering."""
    gave_up: bool = False
    """The answer was the problem's give-up answer: the episode ends here, unsolved (detail ``gave_up``)."""


class Task(ABC):
    """A task type: prompt formatting, verification, feedback text."""

    name: ClassVar[str]
    default_max_new_tokens: ClassVar[int] = 256
    """Attempt length budget when the user does not set one."""

    def format_prompt(self, problem: Problem) -> str:
        """The first user message."""
        return problem.prompt

    @abstractmethod
    def verify(self, problem: Problem, completion: str) -> Verdict:
        """Decide whether ``completion`` solves ``problem``. Must not raise on any completion."""

    def give_up_answer(self, problem: Problem) -> str | None:
        """The answer that ends ``problem``'s episode unsolved (None: the model cannot give up). The
        problem says whether it allows giving up (its meta), so any instance of the task agrees."""
        return None

    def verify_many(self, problems: list[Problem], completions: list[str]) -> list[Verdict]:
        """Verify a batch (pairs in order); tasks with slow verifiers override this to run in parallel."""
        return [self.verify(p, c) for p, c in zip(problems, completions, strict=True)]

    def close(self) -> None:  # noqa: B027 (an optional hook, deliberately not abstract)
        """Release worker processes or pools the task holds (no-op by default)."""

    @abstractmethod
    def feedback(self, problem: Problem, verdict: Verdict, mode: FeedbackMode = "detailed") -> str:
        """The user message after a failed attempt. Never reveals the gold answer or hidden tests."""

    def sample_texts(self, problems: list[Problem]) -> list[str]:
        """Texts the model will see for these problems (to train a tiny tokenizer in memory)."""
        texts = [self.format_prompt(p) for p in problems]
        return texts + [self.feedback(p, Verdict(False, "")) for p in problems[:1]]

    checks: ClassVar[dict[str, tuple[str, ...]]] = {}
    """Ingest: the check columns :meth:`check_rows` fills, each with the values that pass it."""

    @classmethod  # noqa: B027 (optional: most tasks have nothing to check)
    def check_rows(cls, rows: list[dict[str, Any]], *, check_canonical: bool, workers: int | None) -> None:
        """Ingest's checks of this task's normalised rows, in place: set any of the columns
        ``answer_ok``, ``gold_bounded``, ``tests_compile``, ``tests_shape``, ``canonical`` to "ok" or
        the reason a row fails (they start as "n/a"; Great Expectations holds them to ``checks``)."""


class SyntheticTask(Task):
    """A task whose problems are generated: ``calgrpo learn`` and the train pipeline draw fresh ones
    every round when no dataset is given. ``Options`` is the frozen dataclass of its settings (the
    run config's ``task_options``); the constructor takes its fields as keyword arguments."""

    Options: ClassVar[type]

    def __init__(self, **options: Any):
        self.options = self.Options(**options)  # the options dataclass validates itself

    @abstractmethod
    def generate(self, num_problems: int, seed: int, id_prefix: str = "") -> list[Problem]:
        """``num_problems`` problems drawn from ``seed`` alone; ids ``{id_prefix}-{i:06d}``."""

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SyntheticTask:
        """The task with ``options`` given as strings (from a command line or a config file) or values:
        each converted to its field's type; an unknown name or a bad value fails naming it."""
        hints = typing.get_type_hints(cls.Options)
        names = [f.name for f in dataclasses.fields(cls.Options)]
        values = {}
        for name, value in options.items():
            if name not in names:
                known = ", ".join(names)
                raise ConfigError(f"task_options: {cls.name} has no option {name!r}; its options: {known}")
            values[name] = _typed(hints[name], value, f"task_options.{name}")
        return cls(**values)


def _typed(hint: Any, value: Any, where: str) -> Any:
    """``value`` (a string from a command line, or already a value) as a ``hint`` (int, float, str, bool)."""
    if hint is bool:
        if isinstance(value, bool) or str(value).lower() in ("true", "false"):
            return value if isinstance(value, bool) else str(value).lower() == "true"
    else:
        try:
            typed = hint(value)
            if hint is int and str(typed) != str(value).strip() and typed != value:
                raise ValueError
            return typed
        except (TypeError, ValueError):
            pass
    raise ConfigError(f"{where}: {value!r} is not of type {hint.__name__}")


TASKS: Registry[type[Task]] = Registry("task type")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator adding a task type under its ``name``."""
    TASKS.add(cls.name, cls)
    return cls


def get_task(name: str, **params: Any) -> Task:
    """Instantiate the task type registered as ``name`` with ``params``."""
    return TASKS.get(name)(**params)


def synthetic_task(name: str, options: Mapping[str, Any] | None = None) -> SyntheticTask:
    """The synthetic task ``name`` with ``options`` (see :meth:`SyntheticTask.from_options`)."""
    cls = TASKS.get(name)  # an unknown name fails with the list of known ones
    if not issubclass(cls, SyntheticTask):
        generated = ", ".join(n for n in TASKS.names() if issubclass(TASKS.get(n), SyntheticTask))
        raise ConfigError(f"task {name!r} has no problem generator: give a --dataset, or a synthetic task "
                          f"({generated})")  # fmt: skip
    return cls.from_options(options or {})


def verify_batch(tasks: dict[str, Task], problems: list[Problem], completions: list[str]) -> list[Verdict]:
    """Verify pairs in order, one ``verify_many`` call per task type (so slow verifiers run in parallel)."""
    verdicts: list[Verdict | None] = [None] * len(problems)
    by_task: dict[str, list[int]] = {}
    for index, problem in enumerate(problems):
        by_task.setdefault(problem.task, []).append(index)
    for name, indices in by_task.items():
        task = tasks[name]
        quitting = [i for i in indices if is_give_up(completions[i], task.give_up_answer(problems[i]))]
        for i in quitting:
            verdicts[i] = GAVE_UP
        indices = [i for i in indices if verdicts[i] is None]
        results = task.verify_many([problems[i] for i in indices], [completions[i] for i in indices])
        for i, verdict in zip(indices, results, strict=True):
            verdicts[i] = verdict
    return verdicts  # type: ignore[return-value]


GAVE_UP = Verdict(False, "gave_up", gave_up=True)
_GIVE_UP_CHARS = 64


def is_give_up(completion: str, answer: str | None) -> bool:
    """The completion is exactly the give-up answer: case, surrounding space and a final period or
    exclamation mark aside (a give-up inside a longer text is an ordinary, wrong answer)."""
    if answer is None or len(completion) > _GIVE_UP_CHARS:
        return False
    return completion.strip().rstrip(".!").strip().casefold() == answer.casefold()
