"""problems.parquet: read and write the problem schema (DESIGN section 3)."""

from __future__ import annotations

from pathlib import Path

from calgrpo.errors import InvalidInputError
from calgrpo.tasks.base import Problem

PROBLEM_COLUMNS = ["id", "task", "prompt", "answer", "tests", "meta"]


def write_problems(problems: list[Problem], path: str | Path) -> None:
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([p.to_row() for p in problems], columns=PROBLEM_COLUMNS).to_parquet(path, index=False)


def read_problems(path: str | Path) -> list[Problem]:
    import pandas as pd

    frame = pd.read_parquet(path)
    missing = [c for c in ("id", "task", "prompt", "answer") if c not in frame.columns]
    if missing:
        raise InvalidInputError(f"{path} is not a problems file: missing columns {missing}")
    if frame["id"].duplicated().any():
        raise InvalidInputError(
            f"{path} has duplicate problem ids, e.g. {frame['id'][frame['id'].duplicated()].iloc[0]!r}"
        )
    return [Problem.from_row(row) for row in frame.to_dict(orient="records")]
