"""Reading raw records from local files, s3:// objects or ``hf://datasets/...`` paths.

JSONL is read strictly: bytes must be UTF-8 and every non-empty line a JSON object, and an error
names the line. Parquet is read with pyarrow. Hub paths go through huggingface_hub's filesystem
(``hf://datasets/<org>/<name>/<file>``); tests use local and S3 copies.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from calgrpo.errors import InvalidInputError
from calgrpo.storage.core import download_file, is_s3


def fetch_local(uri: str, workdir: Path) -> Path:
    """A local path holding the bytes of ``uri`` (downloaded for s3:// and hf:// sources)."""
    if is_s3(uri):
        target = workdir / Path(uri).name
        download_file(uri, target)
        return target
    if uri.startswith("hf://"):
        try:
            from huggingface_hub import HfFileSystem
        except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
            raise InvalidInputError(
                "hf:// sources need huggingface_hub (pip install huggingface_hub)"
            ) from None
        target = workdir / Path(uri).name
        HfFileSystem().get_file(uri, str(target))
        return target
    path = Path(uri).expanduser()
    if not path.is_file():
        raise InvalidInputError(f"input {uri} does not exist or is not a file")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line a JSON object; blank lines skipped; errors name the line number."""
    raw = path.read_bytes()
    if not raw.strip():
        raise InvalidInputError(f"{path.name} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidInputError(
            f"{path.name} line {line}: bytes that are not UTF-8 (offset {exc.start})"
        ) from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"{path.name} line {number}: not valid JSON ({exc.msg}); truncated?"
            ) from None
        if not isinstance(record, dict):
            raise InvalidInputError(
                f"{path.name} line {number}: expected a JSON object, got {type(record).__name__}"
            )
        records.append(record)
    return records


def read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise InvalidInputError(
            f"{path.name} is not a readable parquet file ({type(exc).__name__})"
        ) from None
    if table.num_rows == 0:
        raise InvalidInputError(f"{path.name} has no rows")
    return table.to_pylist()


def read_records(uri: str) -> list[dict[str, Any]]:
    """Raw records of a .jsonl/.json-lines or .parquet source (chosen by extension)."""
    with tempfile.TemporaryDirectory(prefix="calgrpo-ingest-") as folder:
        path = fetch_local(uri, Path(folder))
        if path.suffix == ".parquet":
            return read_parquet(path)
        if path.suffix in (".jsonl", ".json", ".ndjson"):
            return read_jsonl(path)
        raise InvalidInputError(
            f"input {uri}: expected a .jsonl or .parquet file, got {path.suffix or 'no extension'}"
        )
