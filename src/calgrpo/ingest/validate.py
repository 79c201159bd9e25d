"""Validation of normalised problems with Great Expectations (an ephemeral context, suites in code).

Every problem faces the common suite (required columns non-null, unique ids, known task, prompt
length bounds, a visible character in the prompt); each task type adds its own (GSM8K answers carry
``#### <number>`` and that number is finite and at most 64 characters long, math answers parse, code
tests compile and have the right shape, canonical solutions pass their own tests).
The report names each failing expectation with up to five offending rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

REQUIRED = ("id", "task", "prompt", "answer", "tests", "meta")
VISIBLE_CHARACTER = r"[^\s\u00ad\u180e\u200b-\u200f\u2060-\u2064\ufeff]"
"""Matches any character but whitespace, soft hyphens, zero-width spaces, joiners, marks and BOMs."""


@dataclass
class ValidationReport:
    """Outcome of all suites; ``bad_rows`` maps a row position to the reasons it failed."""

    success: bool
    rows: int
    failures: list[dict[str, Any]] = field(default_factory=list)
    bad_rows: dict[int, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"success": self.success, "rows": self.rows, "failed_rows": len(self.bad_rows),
                "failures": self.failures}  # fmt: skip

    def to_text(self) -> str:
        if self.success:
            return f"validation passed: {self.rows} rows, every expectation met\n"
        lines = [
            f"validation FAILED: {len(self.bad_rows)} of {self.rows} rows break "
            f"{len(self.failures)} expectations"
        ]
        for failure in self.failures:
            lines.append(f"- {failure['suite']}: {failure['expectation']} on column '{failure['column']}'"
                         f" ({failure['unexpected_count']} rows)")  # fmt: skip
            for example in failure["examples"]:
                lines.append(f"    row {example['row']} (id {example['id']!r}): {example['value']!r}")
        return "\n".join(lines) + "\n"


def _suites(max_prompt_chars: int, tasks: list[str]):
    import great_expectations as gx

    e = gx.expectations
    common = [e.ExpectColumnToExist(column=c) for c in REQUIRED]
    common += [e.ExpectColumnValuesToNotBeNull(column=c) for c in ("id", "task", "prompt", "answer")]
    common += [
        e.ExpectColumnValuesToBeUnique(column="id"),
        e.ExpectColumnValuesToBeInSet(column="task", value_set=tasks),
        e.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=1, max_value=max_prompt_chars),
        # A prompt of only whitespace (or invisible characters) passes the length bound but asks nothing.
        e.ExpectColumnValuesToMatchRegex(column="prompt", regex=VISIBLE_CHARACTER),
    ]
    from calgrpo.tasks import TASKS

    # Each task names the check columns its rows must pass and the values that pass (Task.checks).
    per_task = {
        name: [e.ExpectColumnValuesToBeInSet(column=column, value_set=list(passing))
               for column, passing in TASKS.get(name).checks.items()]
        for name in tasks
    }  # fmt: skip
    return common, {name: expectations for name, expectations in per_task.items() if expectations}


def validate(frame, max_prompt_chars: int = 20000) -> ValidationReport:
    """Run the suites over ``frame`` (the normalised rows plus the derived check columns)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import logging

    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # it logs every context at INFO
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from calgrpo.tasks import TASKS

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas("problems")
        .add_dataframe_asset("rows")
        .add_batch_definition_whole_dataframe("all")
    )
    common, per_task = _suites(max_prompt_chars, TASKS.names())
    report = ValidationReport(success=True, rows=len(frame))
    # Expectations see the frame as plain strings/objects; meta stays a dict column.
    plan = [("common", frame, common)]
    for task, expectations in per_task.items():
        subset = frame[frame["task"] == task] if "task" in frame else frame.iloc[0:0]
        if len(subset):
            plan.append((task, subset, expectations))
    for name, subset, expectations in plan:
        suite = context.suites.add(
            gx.ExpectationSuite(name=name, expectations=[x.copy() for x in expectations])
        )
        batch = batch_definition.get_batch(batch_parameters={"dataframe": subset})
        result = batch.validate(suite, result_format="COMPLETE")
        for item in result.results:
            if item.success:
                continue
            report.success = False
            column = item.expectation_config.kwargs.get("column", "")
            indices = list(item.result.get("unexpected_index_list") or [])
            values = list(item.result.get("unexpected_list") or [])
            if item.expectation_config.type == "expect_column_to_exist":
                indices, values = [], []
            reason = f"{item.expectation_config.type}({column})"
            for index in indices:
                report.bad_rows.setdefault(int(frame.index.get_loc(index)), []).append(reason)
            examples = [
                {"row": int(frame.index.get_loc(i)), "id": str(frame.at[i, "id"]) if "id" in frame else "",
                 "value": str(v)[:160]}
                for i, v in list(zip(indices, values, strict=False))[:5]
            ]  # fmt: skip
            report.failures.append(
                {"suite": name, "expectation": item.expectation_config.type, "column": column,
                 "unexpected_count": int(item.result.get("unexpected_count") or 0) or len(indices),
                 "examples": examples}
            )  # fmt: skip
    return report
