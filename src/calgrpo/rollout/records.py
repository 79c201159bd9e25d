"""The attempt row (DESIGN section 3) and its parquet file, ``attempts.parquet``.

One row per generated attempt. A trajectory's full token sequence is the concatenation, over its
attempts in order, of ``context_token_ids`` then ``completion_token_ids``; so the trainer rebuilds
exactly what the policy saw without the tokenizer or chat template.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from calgrpo.errors import InvalidInputError


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt of one trajectory."""

    problem_id: str
    sample: int
    """Trajectory index within the problem's group, 0..G-1."""
    attempt: int
    """1-based attempt number."""
    context_token_ids: list[int]
    """Tokens added to the conversation before this attempt: the prompt turn for attempt 1, the end
    of the previous turn plus the feedback turn afterwards (each ends with the generation prompt)."""
    completion_token_ids: list[int]
    """The attempt's sampled tokens (trained on)."""
    completion_logprobs: list[float]
    """Behaviour log-prob of each completion token."""
    completion: str
    """Decoded completion, special tokens removed."""
    reward: float
    """Verdict as a reward: 1.0 verified correct, else 0.0."""
    verdict: str
    """The verifier's detail (``correct``, ``higher``, ``invalid``, ...)."""
    feedback: str
    """Feedback shown before the next attempt ("" when correct or at the last attempt)."""
    finish_reason: str
    """``stop`` (stop token sampled) or ``length`` (max_new_tokens reached)."""
    policy_version: int
    """Training step of the policy that generated it."""


ATTEMPT_COLUMNS = [f.name for f in fields(AttemptRecord)]


def write_attempts(records: list[AttemptRecord], path: str | Path) -> None:
    """Write ``records`` to a parquet file (directories created)."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([asdict(r) for r in records], columns=ATTEMPT_COLUMNS)
    frame.to_parquet(path, index=False)


def read_attempts(path: str | Path) -> list[AttemptRecord]:
    """Read ``attempts.parquet`` back into records, checking the schema."""
    import pandas as pd

    frame = pd.read_parquet(path)
    missing = [c for c in ATTEMPT_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidInputError(f"{path} is not an attempts file: missing columns {missing}")
    records = []
    for row in frame.to_dict(orient="records"):
        row["context_token_ids"] = [int(t) for t in row["context_token_ids"]]
        row["completion_token_ids"] = [int(t) for t in row["completion_token_ids"]]
        row["completion_logprobs"] = [float(x) for x in row["completion_logprobs"]]
        records.append(AttemptRecord(**{c: row[c] for c in ATTEMPT_COLUMNS}))
    return records


# What a verifier needs of an attempt; completions generated elsewhere (another engine, another
# pipeline) can be verified from a table of just these columns.
COMPLETION_COLUMNS = ("problem_id", "sample", "attempt", "completion")
TABLE_FORMATS = (".parquet", ".jsonl")


def read_completions(path: str | Path) -> list[AttemptRecord]:
    """Attempts to verify: a full attempts file or a table of :data:`COMPLETION_COLUMNS` (parquet or
    JSONL, by extension). Columns a minimal table lacks are left empty; they are not verified."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder; give the attempts file in it (attempts.parquet)")
    if path.suffix not in TABLE_FORMATS:
        raise InvalidInputError(f"{path}: unknown table format {path.suffix!r}; use .parquet or .jsonl")
    try:
        jsonl = path.suffix == ".jsonl"
        frame = pd.read_json(path, lines=True, dtype=False) if jsonl else pd.read_parquet(path)
    except (ValueError, OSError) as error:
        raise InvalidInputError(f"{path} is not a readable {path.suffix} table: {error}") from None
    missing = [c for c in COMPLETION_COLUMNS if c not in frame.columns]
    if missing:
        needed = list(COMPLETION_COLUMNS)
        raise InvalidInputError(f"{path}: missing columns {missing}; an attempts table needs {needed}")
    if set(ATTEMPT_COLUMNS) <= set(frame.columns):
        return read_attempts(path) if path.suffix == ".parquet" else _minimal(frame, path)
    return _minimal(frame, path)


def _minimal(frame, path: Path) -> list[AttemptRecord]:
    records, seen = [], set()
    for number, row in enumerate(frame[list(COMPLETION_COLUMNS)].to_dict(orient="records"), start=1):
        problem_id, sample, attempt, completion = (row[c] for c in COMPLETION_COLUMNS)
        texts = isinstance(problem_id, str) and isinstance(completion, str)
        if not (texts and _whole(sample) and _whole(attempt) and sample >= 0 and attempt >= 1):
            raise InvalidInputError(
                f"{path} row {number}: problem_id and completion must be strings, sample >= 0 and "
                "attempt >= 1 whole numbers"
            )
        key = (problem_id, int(sample), int(attempt))
        if key in seen:
            raise InvalidInputError(f"{path} row {number}: attempt {key} appears twice")
        seen.add(key)
        records.append(AttemptRecord(problem_id, key[1], key[2], [], [], [], completion, 0.0, "", "", "", -1))
    return records


def _whole(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()


SHARD_FILE = "shard.json"


def write_attempt_shard(records: list[AttemptRecord], folder: str | Path, shard: int, num_shards: int):
    """A rollout shard's folder: attempts.parquet and which shard it is (for an ordered merge)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_attempts(records, folder / "attempts.parquet")
    (folder / SHARD_FILE).write_text(json.dumps({"shard_index": shard, "num_shards": num_shards}))


def merge_attempt_shards(folders: list[str | Path]) -> list[AttemptRecord]:
    """Every shard's records in shard order, whatever order ``folders`` come in. A missing, repeated
    or foreign shard is refused: training on part of a round would bias it silently."""
    found: dict[int, Path] = {}
    counts = set()
    for folder in map(Path, folders):
        if not (folder / SHARD_FILE).is_file():
            raise InvalidInputError(f"{folder} has no {SHARD_FILE}: not a rollout shard")
        shard = json.loads((folder / SHARD_FILE).read_text())
        index = shard["shard_index"]
        if index in found:
            raise InvalidInputError(f"shard {index} appears twice: {found[index]} and {folder}")
        found[index] = folder
        counts.add(shard["num_shards"])
    expected = list(range(next(iter(counts)))) if len(counts) == 1 else None
    if sorted(found) != expected:
        raise InvalidInputError(
            f"incomplete or mixed shards: indices {sorted(found)}, shard counts {sorted(counts)}"
        )
    return [record for index in sorted(found) for record in read_attempts(found[index] / "attempts.parquet")]
