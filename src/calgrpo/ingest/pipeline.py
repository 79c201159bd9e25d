"""``calgrpo ingest``: read -> normalise -> dedupe -> ids -> validate -> split -> publish.

Outputs (one published folder, manifest last): ``problems.parquet`` (with a ``split`` column), and
``train.parquet``/``eval.parquet`` when splitting; ``validation.json`` and ``validation.txt``;
``dataset_card.json`` (counts per task and split, content hash, provenance); ``quarantine.parquet``
with the rejected rows and their reasons under ``--drop-invalid``. Counts add up: read = published
+ quarantined + duplicates dropped.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from calgrpo.errors import CalgrpoError, ConfigError, check_ranges
from calgrpo.ingest.validate import ValidationReport

Format = Literal["gsm8k", "math", "humaneval", "mbpp", "jsonl", "parquet"]


class ValidationFailed(CalgrpoError):
    """The input broke expectations; nothing was published."""

    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(report.to_text())


@dataclass(frozen=True)
class IngestConfig:
    """Bring a dataset in: normalise, validate, publish."""

    format: Format
    """Input format: gsm8k, math, humaneval, mbpp, or jsonl/parquet already in the problem schema."""
    input: str
    """Source: local path, s3://bucket/key, or hf://datasets/<org>/<name>/<file>."""
    output: str
    """Destination folder: local path or s3://bucket/prefix (published with a manifest, last)."""
    eval_fraction: float = 0.0
    """Share of problems (by id hash, deterministic) put in the eval split; 0 keeps one split."""
    limit: int | None = None
    """Read only the first N records."""
    drop_invalid: bool = False
    """Publish the valid rows and quarantine the rest (with reasons) instead of failing."""
    max_prompt_chars: int = 20000
    """Longest prompt accepted."""
    check_canonical: bool = True
    """Run code problems' canonical solutions against their own tests in the sandbox."""
    workers: int | None = None
    """Parallel checks (math parsing, sandboxed solutions); default: CPU count."""
    report: Path | None = None
    """Also write the validation report (text) here, pass or fail (useful when nothing is published)."""

    def __post_init__(self) -> None:
        check_ranges(
            "ingest",
            self,
            {
                "eval_fraction": (0.0 <= self.eval_fraction < 1.0, "in [0, 1)"),
                "max_prompt_chars": (self.max_prompt_chars >= 1, ">= 1"),
                "limit": (self.limit is None or self.limit >= 1, ">= 1"),
            },
        )
        if self.format not in ("gsm8k", "math", "humaneval", "mbpp", "jsonl", "parquet"):
            raise ConfigError(f"ingest: unknown --format {self.format!r}")


def _fraction(problem_id: str) -> float:
    digest = hashlib.sha256(problem_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def content_hash(rows: list[dict[str, Any]]) -> str:
    """sha256 over the published problems in id order (independent of the parquet writer)."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r["id"]):
        fields = [row[name] for name in ("id", "task", "prompt", "answer", "tests", "meta")]
        digest.update(json.dumps(fields, sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def ingest(config: IngestConfig) -> dict[str, Any]:
    """Run the whole ingestion; returns the dataset card. Raises ValidationFailed on bad input."""
    import pandas as pd

    from calgrpo.configs import to_json
    from calgrpo.ingest.checks import add_row_checks
    from calgrpo.ingest.normalize import content_id, normalize, normalized_prompt
    from calgrpo.ingest.readers import read_records
    from calgrpo.ingest.validate import validate
    from calgrpo.storage import publish_folder

    started = time.perf_counter()
    records = read_records(config.input)
    if config.limit:
        records = records[: config.limit]
    rows = normalize(records, config.format)
    seen: set[tuple[str, str]] = set()
    unique_rows, duplicates = [], 0
    for row in rows:
        # Same task, prompt and gold answer = a duplicate. A prompt repeated with another answer is a
        # different problem (synthetic tasks such as guess show the same text for different hidden z).
        key = (str(row["task"]), normalized_prompt(row["prompt"] or ""), str(row["answer"]).strip())
        if key in seen and row["prompt"]:
            duplicates += 1
            continue
        seen.add(key)
        row.setdefault("id", content_id(str(row["task"]), row["prompt"] or "", row["answer"] or ""))
        unique_rows.append(row)
    add_row_checks(unique_rows, config.check_canonical, config.workers)
    frame = pd.DataFrame(unique_rows)
    report = validate(frame, config.max_prompt_chars)
    if config.report:
        Path(config.report).parent.mkdir(parents=True, exist_ok=True)
        Path(config.report).write_text(report.to_text())
    if not report.success and not config.drop_invalid:
        raise ValidationFailed(report)
    bad = report.bad_rows
    good_rows = [row for i, row in enumerate(unique_rows) if i not in bad]
    quarantined = [{**row, "reasons": bad[i]} for i, row in enumerate(unique_rows) if i in bad]
    for row in good_rows:
        row["split"] = (
            "eval"
            if _fraction(row["id"]) < config.eval_fraction
            else ("train" if config.eval_fraction else "all")
        )
    card = {
        "input": config.input,
        "format": config.format,
        "records_read": len(records),
        "duplicates_dropped": duplicates,
        "quarantined": len(quarantined),
        "published": len(good_rows),
        "per_task": dict(Counter(r["task"] for r in good_rows)),
        "per_split": dict(Counter(r["split"] for r in good_rows)),
        "content_hash": content_hash(good_rows),
        "validation": "passed" if report.success else "failed rows quarantined",
        "elapsed_s": None,
        "config": to_json(config),  # the resolved config, next to what it produced
    }
    if card["published"] + card["quarantined"] + card["duplicates_dropped"] != card["records_read"]:
        raise CalgrpoError(f"ingest lost rows: {card}")  # a bug, never expected
    with tempfile.TemporaryDirectory(prefix="calgrpo-ingest-out-") as folder:
        out = Path(folder)
        _write_problems(good_rows, out / "problems.parquet")
        if config.eval_fraction:
            for split in ("train", "eval"):
                _write_problems([r for r in good_rows if r["split"] == split], out / f"{split}.parquet")
        if quarantined:
            pd.DataFrame(
                [{**_problem_columns(r), "reasons": json.dumps(r["reasons"])} for r in quarantined]
            ).to_parquet(out / "quarantine.parquet", index=False)
        (out / "validation.json").write_text(json.dumps(report.to_json(), indent=1))
        (out / "validation.txt").write_text(report.to_text())
        card["elapsed_s"] = round(time.perf_counter() - started, 3)
        (out / "dataset_card.json").write_text(json.dumps(card, indent=1, sort_keys=True))
        publish_folder(out, config.output)
    return card


def _problem_columns(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "task": row["task"], "prompt": row["prompt"], "answer": row["answer"],
            "tests": row["tests"], "meta": json.dumps(row["meta"], sort_keys=True)}  # fmt: skip


def _write_problems(rows: list[dict[str, Any]], path: Path) -> None:
    import pandas as pd

    columns = ["id", "task", "prompt", "answer", "tests", "meta", "split"]
    frame = pd.DataFrame([{**_problem_columns(r), "split": r["split"]} for r in rows], columns=columns)
    frame.to_parquet(path, index=False)
