"""Per-row facts the expectations test: each task module computes its own (``Task.check_rows``:
does the answer parse, do the tests compile, does the canonical solution pass its own tests), here
they are gathered; Great Expectations judges them (validate.py).
"""

from __future__ import annotations

from typing import Any

CHECK_COLUMNS = ("answer_ok", "gold_bounded", "tests_compile", "tests_shape", "canonical")
"""The facts' columns: "ok", "n/a" where a check does not apply, or the reason a row fails."""


def add_row_checks(rows: list[dict[str, Any]], check_canonical: bool, workers: int | None) -> None:
    """Add the check columns in place (every row gets every column), each task checking its rows."""
    from calgrpo.tasks import TASKS

    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        row.update(dict.fromkeys(CHECK_COLUMNS, "n/a"))
        # The task column is still the dataset's (any JSON value): only a registered name is checked.
        name = row["task"] if isinstance(row["task"], str) and row["task"] in TASKS else None
        if name is not None:
            by_task.setdefault(name, []).append(row)
    for name, task_rows in sorted(by_task.items()):  # an unknown task is the validation's finding
        TASKS.get(name).check_rows(task_rows, check_canonical=check_canonical, workers=workers)
