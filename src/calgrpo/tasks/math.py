"""MATH-style problems checked with math-verify (gold first), in worker processes with a hard timeout.

math-verify guards its sympy work with ``signal.alarm``, which can still hang or be unavailable off
the main thread; so every check runs in a pool process that is killed if it overruns.
"""

from __future__ import annotations

import os
from typing import Any

from calgrpo.errors import ConfigError
from calgrpo.ingest.normalize import last_boxed, register_format
from calgrpo.tasks.base import FeedbackMode, Problem, Task, Verdict, register_task
from calgrpo.workers import TimeoutPool


def math_check(pair: tuple[str, str]) -> tuple[bool, str]:
    """(gold, completion) -> (equivalent, the prediction as parsed). Runs in a worker process."""
    from math_verify import parse, verify

    gold, completion = pair
    if "$" not in gold and "\\boxed" not in gold:
        gold = f"${gold}$"  # bare LaTeX gold answers parse reliably once delimited
    gold_parsed = parse(gold)  # math-verify's own alarms stay on; the pool's hard kill backs them up
    predicted = parse(completion)
    shown = str(predicted[-1]) if predicted else ""
    return bool(predicted) and bool(verify(gold_parsed, predicted)), shown


def warm_up_math_verify() -> None:
    """Import math-verify and run one check, so its lazy imports (sympy, the LaTeX parser) happen
    at worker start-up rather than inside the first item's time limit."""
    math_check(("1", "$1$"))


@register_task
class MathTask(Task):
    """Competition math with LaTeX answers, checked by symbolic equivalence."""

    name = "math"
    default_max_new_tokens = 1024
    instruction = "Solve the problem. Put the final answer in \\boxed{}."

    def __init__(self, workers: int | None = None, timeout_s: float = 5.0):
        if timeout_s <= 0:
            raise ConfigError(f"math task: timeout_s must be > 0, got {timeout_s}")
        self.num_workers = workers or os.cpu_count() or 1
        self.timeout_s = timeout_s
        self._pool: TimeoutPool | None = None

    def format_prompt(self, problem: Problem) -> str:
        return f"{problem.prompt}\n\n{self.instruction}"

    def verify(self, problem: Problem, completion: str) -> Verdict:
        return self.verify_many([problem], [completion])[0]

    def verify_many(self, problems: list[Problem], completions: list[str]) -> list[Verdict]:
        if self._pool is None:
            self._pool = TimeoutPool(math_check, self.num_workers, self.timeout_s, warmup=warm_up_math_verify)
        outcomes = self._pool.map([(p.answer, c) for p, c in zip(problems, completions, strict=True)])
        verdicts = []
        for outcome in outcomes:
            if outcome.timed_out:
                verdicts.append(
                    Verdict(
                        False,
                        "timeout",
                        "the answer could not be checked in time",
                        duration_s=outcome.duration_s,
                        timed_out=True,
                    )
                )
            elif outcome.error is not None:
                verdicts.append(
                    Verdict(
                        False,
                        "error",
                        "the answer could not be parsed",
                        duration_s=outcome.duration_s,
                        crashed=outcome.error == "worker died",
                    )
                )
            else:
                correct, shown = outcome.value
                if correct:
                    verdicts.append(Verdict(True, "correct", duration_s=outcome.duration_s))
                elif not shown:
                    verdicts.append(
                        Verdict(False, "no_answer", "no final answer found", duration_s=outcome.duration_s)
                    )
                else:
                    verdicts.append(
                        Verdict(
                            False,
                            "wrong_answer",
                            f"your answer {shown[:200]} is incorrect",
                            duration_s=outcome.duration_s,
                        )
                    )
        return verdicts

    def feedback(self, problem: Problem, verdict: Verdict, mode: FeedbackMode = "detailed") -> str:
        if mode == "binary":
            return "Incorrect. Try again."
        if verdict.detail == "no_answer":
            return "No final answer found. Put it in \\boxed{}."
        return f"Incorrect: {verdict.message}. Try again."

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    checks = {"answer_ok": ("ok",)}

    @classmethod
    def check_rows(cls, rows: list[dict[str, Any]], *, check_canonical: bool, workers: int | None) -> None:
        pool = TimeoutPool(math_answer_parses, workers or 2, timeout_s=10.0, warmup=warm_up_math_verify)
        try:
            outcomes = pool.map([row["answer"] or "" for row in rows])
        finally:
            pool.close()
        for row, outcome in zip(rows, outcomes, strict=True):
            row["answer_ok"] = "ok" if outcome.value else "math-verify cannot parse the answer"


def math_answer_parses(answer: str) -> bool:
    """math-verify finds an expression in the gold answer (runs in a killable worker)."""
    from math_verify import parse

    if not answer or not answer.strip():
        return False
    text = answer if ("$" in answer or "\\boxed" in answer) else f"${answer}$"
    return bool(parse(text))


@register_format("math", ("problem",))
def math_format(raw: dict) -> dict:
    """MATH's problem/solution records (the answer: the given one, else the solution's last \\boxed{})."""
    answer = raw.get("answer") or last_boxed(str(raw.get("solution") or "")) or ""
    meta = {k: raw[k] for k in ("level", "type", "subject") if raw.get(k) is not None}
    return {"task": "math", "prompt": raw["problem"], "answer": answer, "tests": "", "meta": meta}
