"""Verifying programs through the verify stage's library function, as the pipeline does."""

from __future__ import annotations

import time

from calgrpo.rollout.records import AttemptRecord
from calgrpo.sandbox.config import SandboxConfig
from calgrpo.sandbox.uids import UID_RANGE, processes_of
from calgrpo.tasks import Problem, build_tasks
from calgrpo.verify import VerdictRow, run_verify

FAST = SandboxConfig(
    timeout_s=3.0, cpu_s=3, memory_mb=512, file_size_mb=2, processes=16, output_bytes=2048, host_grace_s=2.0
)
PROMPT = 'def solve(x):\n    """Return twice x."""\n'
DOUBLE = Problem(
    id="double", task="code", prompt=PROMPT, answer="",
    tests="def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-3) == -6\n",
    meta={"format": "humaneval", "entry_point": "solve"},
)  # fmt: skip


def attempt(problem_id: str, sample: int, completion: str) -> AttemptRecord:
    return AttemptRecord(problem_id, sample, 1, [1], [2], [-0.5], completion, 0.0, "", "", "stop", 0)


def verify_programs(
    problem: Problem, completions: list[str], sandbox: SandboxConfig = FAST, workers: int = 2
) -> tuple[list[VerdictRow], dict, float]:
    """(verdict rows, summary, wall seconds) of ``completions`` for ``problem`` via run_verify."""
    tasks = build_tasks({problem.task}, sandbox=sandbox, workers=workers)
    records = [attempt(problem.id, i, completion) for i, completion in enumerate(completions)]
    started = time.monotonic()
    try:
        rows, summary = run_verify([problem], records, tasks)
    finally:
        for task in tasks.values():
            task.close()
    return rows, summary, time.monotonic() - started


def stage_budget(count: int, workers: int, sandbox: SandboxConfig = FAST) -> float:
    """The most a batch may take: ceil(count / workers) rounds of timeout + grace, plus start-up."""
    rounds = -(-count // workers)
    return rounds * (sandbox.timeout_s + sandbox.host_grace_s) + 5.0


def no_program_left(sandbox: SandboxConfig = FAST) -> bool:
    return processes_of(range(sandbox.uid_base, sandbox.uid_base + UID_RANGE)) == []
