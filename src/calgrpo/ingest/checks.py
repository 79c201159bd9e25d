"""Per-row facts the expectations test: does the answer parse (and, for GSM8K, is its number one
the verifier accepts), do the tests compile, does the canonical solution pass its own tests.
Computed here, judged by Great Expectations (validate.py).
"""

from __future__ import annotations

import ast
from typing import Any

from calgrpo.tasks.gsm8k import MAX_NUMBER_CHARS, extract_gold, gold_text, looks_like_number

GOLD_UNBOUNDED = f"gold answer is not a finite number of at most {MAX_NUMBER_CHARS} characters"


def gsm8k_checks(answer: str | None) -> dict[str, str]:
    """``answer_ok`` ("#### <number>" present) and ``gold_bounded`` (that number is one the verifier
    accepts) as "ok" or a reason; two facts so the report names which one failed."""
    if not answer or "####" not in answer or not looks_like_number(gold_text(answer)):
        return {"answer_ok": "no '#### <number>' in the answer", "gold_bounded": "n/a"}
    # The verifier answers bad_gold on every attempt at an unbounded gold: a problem nobody can solve.
    bounded = extract_gold(answer) is not None
    return {"answer_ok": "ok", "gold_bounded": "ok" if bounded else GOLD_UNBOUNDED}


def math_answer_parses(answer: str) -> bool:
    """math-verify finds an expression in the gold answer (runs in a killable worker)."""
    from math_verify import parse

    if not answer or not answer.strip():
        return False
    text = answer if ("$" in answer or "\\boxed" in answer) else f"${answer}$"
    return bool(parse(text))


def code_checks(row: dict[str, Any]) -> dict[str, str]:
    """``tests_compile`` and ``tests_shape`` ("check" defined / asserts present) as "ok" or a reason."""
    fmt = (row.get("meta") or {}).get("format", "humaneval")
    try:
        tree = ast.parse(row.get("tests") or "")
    except SyntaxError as exc:
        return {"tests_compile": f"SyntaxError line {exc.lineno}: {exc.msg}", "tests_shape": "n/a"}
    if fmt == "humaneval":
        has = any(isinstance(node, ast.FunctionDef) and node.name == "check" for node in ast.walk(tree))
        shape = "ok" if has else "tests do not define check(candidate)"
        if not (row.get("meta") or {}).get("entry_point"):
            shape = "meta.entry_point missing"
    elif fmt == "mbpp":
        shape = (
            "ok"
            if any(isinstance(node, ast.Assert) for node in ast.walk(tree))
            else "tests contain no assert"
        )
        if shape == "ok" and not _solution_names(row):
            shape = "tests call no function of the solution (every program would pass)"
    else:
        shape = f"unknown code format {fmt!r}"
    return {"tests_compile": "ok", "tests_shape": shape}


def _solution_names(row: dict[str, Any]) -> list[str]:
    """Names an MBPP test needs from the solution, found statically: the dataset's setup code is not
    run on the host (see entry_points.py for how verification picks them)."""
    from calgrpo.sandbox.entry_points import bound_names, required_names

    meta = row.get("meta") or {}
    setup = "\n".join([*(meta.get("test_imports") or []), meta.get("test_setup_code") or ""])
    try:
        setup_names = bound_names(ast.parse(setup))
    except SyntaxError:
        setup_names = set()
    return required_names(row.get("tests") or "", dict.fromkeys(setup_names))


def add_row_checks(rows: list[dict[str, Any]], check_canonical: bool, workers: int | None) -> None:
    """Add the derived columns in place (each row gets every column; "n/a" where it does not apply)."""
    from calgrpo.tasks.base import Problem
    from calgrpo.tasks.code import CodeTask
    from calgrpo.tasks.math import warm_up_math_verify
    from calgrpo.workers import TimeoutPool

    for row in rows:
        row.update({"answer_ok": "n/a", "gold_bounded": "n/a", "tests_compile": "n/a", "tests_shape": "n/a",
                    "canonical": "n/a"})  # fmt: skip
        if row["task"] == "gsm8k":
            row.update(gsm8k_checks(row["answer"]))
        elif row["task"] == "code":
            row.update(code_checks(row))
    math_rows = [row for row in rows if row["task"] == "math"]
    if math_rows:
        pool = TimeoutPool(math_answer_parses, workers or 2, timeout_s=10.0, warmup=warm_up_math_verify)
        try:
            outcomes = pool.map([row["answer"] or "" for row in math_rows])
        finally:
            pool.close()
        for row, outcome in zip(math_rows, outcomes, strict=True):
            row["answer_ok"] = "ok" if outcome.value else "math-verify cannot parse the answer"
    canonical = [r for r in rows if r["task"] == "code" and r["answer"] and r["tests_compile"] == "ok"
                 and r["tests_shape"] == "ok" and check_canonical]  # fmt: skip
    if canonical:
        task = CodeTask(workers=workers)
        problems = [Problem(id=r.get("id") or "", task="code", prompt=r["prompt"], answer=r["answer"],
                            tests=r["tests"], meta=r["meta"]) for r in canonical]  # fmt: skip
        # The dataset's tests are not trusted yet: they run in the jail with the solution.
        try:
            passed = task.self_test_many(problems)
        finally:
            task.close()
        for row, ok in zip(canonical, passed, strict=True):
            row["canonical"] = "ok" if ok else "canonical solution fails its tests (run in the sandbox)"
