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


def load_problems(uri: str | Path) -> list[Problem]:
    """Problems from anywhere a command takes them: a problems.parquet or an ingest output folder,
    locally or on s3:// (a folder's files checked against its manifest), ``FOLDER#SPLIT`` for one
    split of an ingest output (``runs/data#train``)."""
    import tempfile

    from calgrpo.storage.core import is_s3
    from calgrpo.storage.folders import fetch_folder, local_copy

    base, _, split = str(uri).partition("#")
    with tempfile.TemporaryDirectory(prefix="calgrpo-problems-") as scratch:
        if is_s3(base):
            if split or not base.endswith(".parquet"):
                path = fetch_folder(base, Path(scratch, "problems"))
            else:
                path = local_copy(base, scratch)
        else:
            path = Path(base)
        if split:
            if not path.is_dir():
                raise InvalidInputError(f"{uri}: #SPLIT names a split of an ingest output folder, and {base} "
                                        "is not a folder")  # fmt: skip
            if not (path / f"{split}.parquet").is_file():
                splits = sorted(p.stem for p in path.glob("*.parquet") if p.stem in ("train", "eval", "test"))
                raise InvalidInputError(f"{uri}: {base} has no split {split!r} (splits: {splits or 'none'})")
            path = path / f"{split}.parquet"
        return read_problems(path)


def read_problems(path: str | Path) -> list[Problem]:
    """Problems from a problems.parquet file, or from an ingest output folder (its problems.parquet;
    name a split's file, e.g. FOLDER/train.parquet, for one split)."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        if not (path / "problems.parquet").is_file():
            raise InvalidInputError(f"{path} is a folder without problems.parquet: give a problems file, or "
                                    f"{path}#train / #eval for a split of an ingest output")  # fmt: skip
        path = path / "problems.parquet"
    if not path.is_file():
        raise InvalidInputError(f"no such problems file: {path}")
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # noqa: BLE001 (pyarrow raises several types for a non-parquet file)
        raise InvalidInputError(f"{path} is not a parquet file ({type(error).__name__})") from None
    missing = [c for c in ("id", "task", "prompt", "answer") if c not in frame.columns]
    if missing:
        raise InvalidInputError(f"{path} is not a problems file: missing columns {missing}")
    if frame["id"].duplicated().any():
        raise InvalidInputError(
            f"{path} has duplicate problem ids, e.g. {frame['id'][frame['id'].duplicated()].iloc[0]!r}"
        )
    problems = []
    for number, row in enumerate(frame.to_dict(orient="records"), start=1):
        try:
            problems.append(Problem.from_row(row))
        except (TypeError, ValueError) as error:  # a file from elsewhere: its meta is not trusted
            raise InvalidInputError(f"{path} row {number} ({str(row.get('id'))[:40]!r}): {error}") from None
    return problems
