"""The verify stage: authoritative verdicts for every attempt (``calgrpo verify``).

Runs the same task verifiers as the rollout loop (code in the sandbox, math in killable workers),
over a whole attempts file, and writes ``verdicts.parquet`` (or ``.jsonl``) plus a summary.
Training with ``--verdicts`` takes its rewards from here rather than from the rollout's own rows.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calgrpo.errors import ConfigError, InvalidInputError
from calgrpo.rollout.records import TABLE_FORMATS, AttemptRecord
from calgrpo.sandbox.config import SandboxConfig

if TYPE_CHECKING:  # the CLI imports this module to parse; the tasks are imported when it runs
    from calgrpo.tasks import Problem, Task


@dataclass(frozen=True)
class VerifyStageConfig:
    """Authoritative verdicts for every attempt: code in the sandbox, math with killable workers.

    ATTEMPTS is the rollout's attempts.parquet or any table (parquet or JSONL) with the columns
    problem_id, sample, attempt, completion, so completions generated elsewhere can be verified.
    Writes one verdict per attempt to OUTPUT in the format its extension names (.parquet or .jsonl)
    with the isolation level, duration and timeout/crash flags, and a summary (pass rate per task,
    timeouts, crashes) to stdout and to OUTPUT's name + .summary.json.
    """

    problems: str
    """The problems the attempts answer: a problems.parquet or an ingest output folder (FOLDER#SPLIT
    for one split), local or s3://."""
    attempts: Path
    """attempts.parquet from the rollout, or a problem_id/sample/attempt/completion table."""
    output: Path
    """Where to write the verdicts (.parquet or .jsonl)."""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """Limits and isolation for code."""
    workers: int | None = None
    """Parallel verifications (default: CPU count)."""
    math_timeout_s: float = 5.0
    """Hard time limit of one math check."""

    def __post_init__(self) -> None:
        if Path(self.output).suffix not in TABLE_FORMATS:
            raise ConfigError(f"--output {self.output}: the verdicts are written as .parquet or .jsonl")


def verify_stage(config: VerifyStageConfig) -> dict[str, Any]:
    """Verify every attempt, write the verdicts and the summary; returns the summary."""
    from calgrpo.configs import write_config
    from calgrpo.io import load_problems
    from calgrpo.rollout.records import read_completions
    from calgrpo.tasks import build_tasks

    problems = load_problems(config.problems)
    records = read_completions(config.attempts)
    tasks = build_tasks({p.task for p in problems}, sandbox=config.sandbox, workers=config.workers,
                        math_timeout_s=config.math_timeout_s)  # fmt: skip
    try:
        rows, summary = run_verify(problems, records, tasks, show_progress=True)
    finally:
        for task in tasks.values():
            task.close()
    write_verdicts(rows, config.output)
    write_summary(summary, Path(config.output).with_name(Path(config.output).stem + ".summary.json"))
    write_config(config, Path(config.output).with_name(Path(config.output).stem + ".config.json"))
    return summary


@dataclass(frozen=True)
class VerdictRow:
    """One row of ``verdicts.parquet``."""

    problem_id: str
    sample: int
    attempt: int
    task: str
    reward: float
    verdict: str
    message: str
    isolation: str
    duration_s: float
    timed_out: bool
    crashed: bool


VERDICT_COLUMNS = [f.name for f in fields(VerdictRow)]
WEAK_ISOLATION = ("unshare+setuid", "rlimits")


PROGRESS_CHUNK = 256
"""Attempts verified between progress reports at least (a batch per tenth of the work beyond that)."""


def verify_attempts(
    problems: list[Problem], records: list[AttemptRecord], tasks: dict[str, Task], show_progress: bool = False
) -> list[VerdictRow]:
    """Verdicts for every record, in order; each task type's attempts are verified in parallel, in
    batches of a tenth of the work (at least PROGRESS_CHUNK) so that progress can be reported."""
    from calgrpo.progress import progress
    from calgrpo.tasks import verify_batch

    by_id = {p.id: p for p in problems}
    missing = sorted({r.problem_id for r in records} - by_id.keys())
    if missing:
        raise InvalidInputError(f"attempts refer to problems not in the problems file, e.g. {missing[:3]}")
    chosen = [by_id[r.problem_id] for r in records]
    size = max(PROGRESS_CHUNK, -(-len(records) // 10))
    starts = range(0, len(records), size)
    verdicts = []
    for start in progress(starts, desc=f"verify ({len(records)} attempts)", enabled=show_progress):
        batch = records[start : start + size]
        verdicts += verify_batch(tasks, chosen[start : start + size], [r.completion for r in batch])
    return [
        VerdictRow(
            problem_id=r.problem_id,
            sample=r.sample,
            attempt=r.attempt,
            task=p.task,
            reward=1.0 if v.correct else 0.0,
            verdict=v.detail,
            message=v.message,
            isolation=v.isolation,
            duration_s=v.duration_s,
            timed_out=v.timed_out,
            crashed=v.crashed,
        )
        for r, p, v in zip(records, chosen, verdicts, strict=True)
    ]


def summarize(rows: list[VerdictRow], elapsed_s: float) -> dict[str, Any]:
    """Pass rate, timeouts and crashes per task; isolation levels used; throughput."""
    per_task: dict[str, dict[str, float]] = {}
    grouped: dict[str, list[VerdictRow]] = defaultdict(list)
    for row in rows:
        grouped[row.task].append(row)
    for task, group in sorted(grouped.items()):
        per_task[task] = {
            "verdicts": len(group),
            "pass_rate": sum(r.reward for r in group) / len(group),
            "timeouts": sum(r.timed_out for r in group),
            "crashes": sum(r.crashed for r in group),
        }
    summary = {
        "verdicts": len(rows),
        "per_task": per_task,
        "isolation": dict(Counter(r.isolation for r in rows if r.isolation)),
        "verdict_details": dict(Counter(r.verdict for r in rows)),
        "elapsed_s": round(elapsed_s, 3),
        "verdicts_per_s": round(len(rows) / elapsed_s, 2) if elapsed_s > 0 else None,
    }
    weak = sorted({r.isolation for r in rows if r.isolation in WEAK_ISOLATION})
    if weak:
        count = sum(r.isolation in WEAK_ISOLATION for r in rows)
        summary["isolation_warning"] = (
            f"{count} programs ran without the full bubblewrap jail (isolation {', '.join(weak)}): "
            "see docs/verification.md for what these levels do not defend"
        )
    return summary


def write_verdicts(rows: list[VerdictRow], path: str | Path) -> None:
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([asdict(r) for r in rows], columns=VERDICT_COLUMNS)
    if path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)


def read_verdicts(path: str | Path) -> list[VerdictRow]:
    import pandas as pd

    path = Path(path)
    frame = pd.read_json(path, lines=True) if path.suffix == ".jsonl" else pd.read_parquet(path)
    missing = [c for c in VERDICT_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidInputError(f"{path} is not a verdicts file: missing columns {missing}")
    return [VerdictRow(**{c: row[c] for c in VERDICT_COLUMNS}) for row in frame.to_dict(orient="records")]


def apply_verdicts(records: list[AttemptRecord], rows: list[VerdictRow]) -> list[AttemptRecord]:
    """Records with rewards from the authoritative verdicts.

    A trajectory that the verdicts mark solved at attempt k loses its attempts after k (an episode
    stops at its first success); one they mark unsolved keeps its attempts, without a success.
    """
    import dataclasses

    by_key = {(r.problem_id, r.sample, r.attempt): r for r in rows}
    missing = [
        (r.problem_id, r.sample, r.attempt)
        for r in records
        if (r.problem_id, r.sample, r.attempt) not in by_key
    ]
    if missing:
        raise InvalidInputError(f"no verdict for {len(missing)} attempts, e.g. {missing[0]}")
    solved_at: dict[tuple[str, int], int] = {}
    for r in records:
        if by_key[(r.problem_id, r.sample, r.attempt)].reward > 0:
            key = (r.problem_id, r.sample)
            solved_at[key] = min(solved_at.get(key, r.attempt), r.attempt)
    updated = []
    for r in records:
        if r.attempt > solved_at.get((r.problem_id, r.sample), r.attempt):
            continue
        verdict = by_key[(r.problem_id, r.sample, r.attempt)]
        updated.append(dataclasses.replace(r, reward=verdict.reward, verdict=verdict.verdict))
    return updated


def run_verify(
    problems: list[Problem], records: list[AttemptRecord], tasks: dict[str, Task], show_progress: bool = False
) -> tuple[list[VerdictRow], dict]:
    """Verify and summarise; the summary also goes to the caller for printing."""
    started = time.perf_counter()
    rows = verify_attempts(problems, records, tasks, show_progress)
    return rows, summarize(rows, time.perf_counter() - started)


def write_summary(summary: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(summary, indent=2, sort_keys=True))
