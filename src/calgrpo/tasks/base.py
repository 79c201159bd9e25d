"""Problems, verdicts and the task registry (docs/tasks.md).

A task type bundles what is specific to a kind of problem: how its prompt is shown to the model,
how an attempt is verified, and what feedback the model sees after a failed attempt. Rollout,
training and evaluation only talk to this interface, so new tasks plug in by registration.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

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
        return cls(
            id=str(row["id"]),
            task=str(row["task"]),
            prompt=str(row["prompt"]),
            answer=str(row["answer"]),
            tests=str(row.get("tests") or ""),
            meta=json.loads(meta) if isinstance(meta, str) else dict(meta),
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


TASKS: Registry[type[Task]] = Registry("task type")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator adding a task type under its ``name``."""
    TASKS.add(cls.name, cls)
    return cls


def get_task(name: str, **params: Any) -> Task:
    """Instantiate the task type registered as ``name`` with ``params``."""
    return TASKS.get(name)(**params)


def verify_batch(tasks: dict[str, Task], problems: list[Problem], completions: list[str]) -> list[Verdict]:
    """Verify pairs in order, one ``verify_many`` call per task type (so slow verifiers run in parallel)."""
    verdicts: list[Verdict | None] = [None] * len(problems)
    by_task: dict[str, list[int]] = {}
    for index, problem in enumerate(problems):
        by_task.setdefault(problem.task, []).append(index)
    for name, indices in by_task.items():
        results = tasks[name].verify_many([problems[i] for i in indices], [completions[i] for i in indices])
        for i, verdict in zip(indices, results, strict=True):
            verdicts[i] = verdict
    return verdicts  # type: ignore[return-value]
