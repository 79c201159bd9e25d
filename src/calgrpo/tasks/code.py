"""Code problems in HumanEval and MBPP formats, verified in the sandbox.

HumanEval: ``prompt`` is a signature with a docstring, ``tests`` defines ``check(candidate)``,
``meta.entry_point`` names the function; the program is prompt + completion (a fenced code block
in the completion replaces the raw text). MBPP: ``tests`` is a block of asserts calling the
function by name, ``meta.test_imports`` and ``meta.test_setup_code`` are trusted setup; the program
is the completion's code alone.
"""

from __future__ import annotations

import ast
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from calgrpo.errors import ConfigError
from calgrpo.ingest.normalize import register_format
from calgrpo.sandbox.config import SandboxConfig
from calgrpo.sandbox.judge import JudgePool
from calgrpo.tasks.base import FeedbackMode, Problem, Task, Verdict, register_task

_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)
FORMATS = ("humaneval", "mbpp")


def extract_code(completion: str) -> tuple[str, bool]:
    """(code, fenced): the last fenced block if any, else the completion as it is."""
    blocks = _FENCE.findall(completion)
    if blocks:
        return blocks[-1], True
    return completion, False


def build_program(problem: Problem, completion: str) -> str:
    code, fenced = extract_code(completion)
    if problem.meta.get("format", "humaneval") == "humaneval":
        return f"{problem.prompt}\n\n{code}" if fenced else problem.prompt + code
    return code


def test_setup(problem: Problem) -> str:
    if problem.meta.get("format", "humaneval") == "humaneval":
        # Trusted: it may define helpers the tests use. A prompt that ends in a bare signature
        # (no docstring) is not valid on its own; give the stub a body.
        for candidate in (problem.prompt, problem.prompt + "    pass\n"):
            try:
                compile(candidate, "<prompt>", "exec")
                return candidate
            except SyntaxError:
                continue
        return ""
    imports = "\n".join(problem.meta.get("test_imports") or [])
    return f"{imports}\n{problem.meta.get('test_setup_code') or ''}"


SELF_TEST = "calgrpo_self_test"
SELF_TEST_CHECK = "def check(candidate):\n    assert candidate() is True\n"


def self_test_program(problem: Problem) -> str:
    """The problem's canonical solution *and its own tests* as one untrusted program.

    At ingest the dataset's test code is not trusted yet (a hostile dataset can put anything
    there), so it runs in the jail with the solution; the host only asks whether it finished.
    """
    if problem.meta.get("format", "humaneval") == "humaneval":
        program = build_program(problem, problem.answer)
        call = f"globals()['check'](globals()[{problem.meta.get('entry_point')!r}])"
    else:
        program = f"{test_setup(problem)}\n{problem.answer}"
        call = "pass"
    return (
        f"{program}\n\n\ndef {SELF_TEST}():\n"
        f"    exec(compile({problem.tests!r}, '<tests>', 'exec'), globals())\n    {call}\n    return True\n"
    )


@register_task
class CodeTask(Task):
    """Write a Python function; hidden tests decide."""

    name = "code"
    default_max_new_tokens = 1024

    def __init__(self, sandbox: SandboxConfig | None = None, workers: int | None = None):
        self.sandbox = sandbox or SandboxConfig()
        self.num_workers = workers or os.cpu_count() or 1
        if self.num_workers < 1:
            raise ConfigError(f"code task: workers must be >= 1, got {workers}")
        self.pool = JudgePool(self.num_workers, self.sandbox)

    def format_prompt(self, problem: Problem) -> str:
        if problem.meta.get("format", "humaneval") == "humaneval":
            instruction = "Complete this Python function. Answer with the full function in a ```python block."
            return f"{instruction}\n\n{problem.prompt}"
        return f"{problem.prompt}\n\nAnswer with Python code in a ```python block."

    def verify(self, problem: Problem, completion: str) -> Verdict:
        fmt = problem.meta.get("format", "humaneval")
        if fmt not in FORMATS:
            return Verdict(False, "bad_problem", f"unknown code format {fmt!r}")
        result = self.pool.run(
            build_program(problem, completion),
            problem.tests,
            setup=test_setup(problem),
            entry_point=problem.meta.get("entry_point") if fmt == "humaneval" else None,
        )
        return Verdict(
            correct=result.passed,
            detail=result.detail,
            message=result.message,
            isolation=result.isolation,
            duration_s=result.duration_s,
            timed_out=result.timed_out,
            crashed=result.crashed,
        )

    def verify_many(self, problems: list[Problem], completions: list[str]) -> list[Verdict]:
        with ThreadPoolExecutor(max_workers=self.num_workers) as executor:
            return list(executor.map(self.verify, problems, completions))

    def self_test_many(self, problems: list[Problem]) -> list[bool]:
        """Whether each problem's canonical solution passes its own tests, all of it in the jail."""

        def one(problem: Problem) -> bool:
            return self.pool.run(self_test_program(problem), SELF_TEST_CHECK, entry_point=SELF_TEST).passed

        with ThreadPoolExecutor(max_workers=self.num_workers) as executor:
            return list(executor.map(one, problems))

    def feedback(self, problem: Problem, verdict: Verdict, mode: FeedbackMode = "detailed") -> str:
        if mode == "binary":
            return "Incorrect. Try again."
        return f"Incorrect: {verdict.message[:300] or verdict.detail}. Try again."

    def close(self) -> None:
        self.pool.close()

    # "n/a" for canonical: a problem without a solution, or checks run without --check-canonical.
    checks = {"tests_compile": ("ok",), "tests_shape": ("ok",), "canonical": ("ok", "n/a")}

    @classmethod
    def check_rows(cls, rows: list[dict[str, Any]], *, check_canonical: bool, workers: int | None) -> None:
        for row in rows:
            row.update(code_checks(row))
        canonical = [
            r for r in rows if r["answer"] and r["tests_compile"] == "ok" and r["tests_shape"] == "ok"
        ]
        if not canonical or not check_canonical:
            return
        task = cls(workers=workers)
        problems = [Problem(id=r.get("id") or "", task="code", prompt=r["prompt"], answer=r["answer"],
                            tests=r["tests"], meta=r["meta"]) for r in canonical]  # fmt: skip
        # The dataset's tests are not trusted yet: they run in the jail with the solution.
        try:
            passed = task.self_test_many(problems)
        finally:
            task.close()
        for row, ok in zip(canonical, passed, strict=True):
            row["canonical"] = "ok" if ok else "canonical solution fails its tests (run in the sandbox)"


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


@register_format("humaneval", ("prompt", "test", "entry_point"))
def humaneval_format(raw: dict) -> dict:
    """HumanEval's task_id/prompt/canonical_solution/test/entry_point records."""
    meta = {"format": "humaneval", "entry_point": raw["entry_point"]}
    if raw.get("task_id") is not None:
        meta["source_id"] = str(raw["task_id"])
    return {"task": "code", "prompt": raw["prompt"], "answer": raw.get("canonical_solution") or "",
            "tests": raw["test"], "meta": meta}  # fmt: skip


@register_format("mbpp", ("text", "test_list"))
def mbpp_format(raw: dict) -> dict:
    """MBPP's task_id/text/code/test_list records (optional test_imports/test_setup_code)."""
    tests = list(raw["test_list"]) if isinstance(raw["test_list"], (list, tuple)) else [str(raw["test_list"])]
    prompt = f"{raw['text']}\nYour code should pass these tests:\n" + "\n".join(tests[:1])
    meta = {"format": "mbpp", "test_imports": list(raw.get("test_imports") or []),
            "test_setup_code": raw.get("test_setup_code") or ""}  # fmt: skip
    if raw.get("task_id") is not None:
        meta["source_id"] = str(raw["task_id"])
    return {"task": "code", "prompt": prompt, "answer": raw.get("code") or "", "tests": "\n".join(tests),
            "meta": meta}  # fmt: skip
