"""Per-format mapping of raw records to the problem schema (id, task, prompt, answer, tests, meta).

The formats of public datasets are registered by their task's module (``register_format``):
``gsm8k`` (tasks/gsm8k.py), ``math`` (tasks/math.py), ``humaneval`` and ``mbpp`` (tasks/code.py).
``jsonl`` and ``parquet`` are records already in the problem schema (task/prompt/answer, optional
id/tests/meta), of any task.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from calgrpo.errors import InvalidInputError
from calgrpo.registry import Registry

Normalizer = Callable[[dict[str, Any]], dict[str, Any]]
FORMATS: Registry[tuple[tuple[str, ...], Normalizer]] = Registry("input format")
"""Format name -> (required raw fields, normaliser)."""


def register_format(name: str, required: tuple[str, ...]):
    def add(fn: Normalizer) -> Normalizer:
        FORMATS.add(name, (required, fn))
        return fn

    return add


def normalized_prompt(prompt: str) -> str:
    """What counts as "the same problem": case and whitespace ignored."""
    return " ".join(str(prompt).lower().split())


def content_id(task: str, prompt: str, answer: str = "") -> str:
    """A stable id from the task, the normalised prompt and the gold answer."""
    key = normalized_prompt(prompt) + "\x00" + str(answer).strip()
    return f"{task}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (balanced braces), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[begin:i]
            depth -= 1
    return None


def _schema(raw: dict) -> dict:
    meta = raw.get("meta") or {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta) if meta.strip() else {}
        except ValueError:
            meta = None  # refused below, with the record's number
    row = {"task": raw["task"], "prompt": raw["prompt"], "answer": raw["answer"]}
    row.update({"tests": raw.get("tests") or "", "meta": meta})
    if raw.get("id") is not None:
        row["id"] = str(raw["id"])
    return row


register_format("jsonl", ("task", "prompt", "answer"))(_schema)
FORMATS.add("parquet", (("task", "prompt", "answer"), _schema))


def normalize(records: list[dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    """Map raw records to problem rows (ids not yet assigned unless the source gave them).

    Raises InvalidInputError naming the missing fields when a record does not have the format's
    required fields (the usual sign of a wrong ``--format``).
    """
    import calgrpo.tasks  # noqa: F401 (the task modules register their formats)

    required, fn = FORMATS.get(fmt)
    rows = []
    for number, raw in enumerate(records, start=1):
        missing = [field for field in required if field not in raw]
        if missing:
            raise InvalidInputError(
                f"record {number} lacks {missing} required by --format {fmt} (it has {sorted(raw)[:8]}); "
                f"is the format right? choices: {', '.join(FORMATS.names())}"
            )
        row = fn(raw)
        if not isinstance(row.get("meta"), dict):
            # Task checks and verifiers read meta's keys: anything but an object is refused here.
            given = raw.get("meta")
            raise InvalidInputError(f"record {number}: meta must be a JSON object (or a string holding one), "
                                    f"got {type(given).__name__} {str(given)[:80]!r}")  # fmt: skip
        row["prompt"] = None if row["prompt"] is None else str(row["prompt"])
        row["answer"] = None if row["answer"] is None else str(row["answer"])
        rows.append(row)
    return rows
