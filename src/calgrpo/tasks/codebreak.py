"""The codebreak task: a second synthetic task, and the worked example of docs/development.md.

A hidden code of ``length`` digits, each in 0..digits-1. An attempt names ``length`` digits; the
feedback says how many are in the right place ("2 right"). With K attempts a policy that uses the
counts (change one digit at a time and keep what raised the count) beats one that guesses afresh:
the credit for the failed attempts that located digits is what CAL-GRPO assigns and naive
weighting does not.

Everything about the task is here: options, generator, prompt, verifier, feedback and the ingest
check of its problems. Registering the class is the one step that plugs it in.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from calgrpo.errors import ConfigError
from calgrpo.tasks.base import FeedbackMode, Problem, SyntheticTask, Verdict, register_task

_DIGIT = re.compile(r"[0-9]")  # not \d: that would take other scripts' digits too
MAX_EXAMINED_CHARS = 256
"""Completion characters searched for the digits: a policy gains nothing from a longer text."""


@dataclass(frozen=True)
class CodebreakOptions:
    """The codebreak task's settings (``task_options`` of a run)."""

    length: int = 3
    """Digits in the code (1 to 6)."""
    digits: int = 4
    """Each digit is in 0..digits-1 (2 to 10)."""

    def __post_init__(self) -> None:
        if not 1 <= self.length <= 6:
            raise ConfigError(f"codebreak task: length must be in 1..6, got {self.length}")
        if not 2 <= self.digits <= 10:
            raise ConfigError(f"codebreak task: digits must be in 2..10, got {self.digits}")


def named_code(completion: str, length: int) -> str | None:
    """The first ``length`` digits of the completion's start, or None when it names fewer."""
    found = _DIGIT.findall(completion[:MAX_EXAMINED_CHARS])
    return "".join(found[:length]) if len(found) >= length else None


@register_task
class CodebreakTask(SyntheticTask):
    """Find a hidden code of digits; feedback counts the digits in the right place."""

    name = "codebreak"
    default_max_new_tokens = 8  # up to 6 digits and the end token, with room for one stray token
    Options = CodebreakOptions

    def generate(self, num_problems: int, seed: int, id_prefix: str = "codebreak") -> list[Problem]:
        rng = random.Random(seed)
        length, digits = self.options.length, self.options.digits
        return [
            Problem(
                id=f"{id_prefix}-{i:06d}",
                task=self.name,
                prompt=f"code of {length} digits 0 to {digits - 1}",
                answer="".join(str(rng.randrange(digits)) for _ in range(length)),
                meta={"length": length, "digits": digits},
            )
            for i in range(num_problems)
        ]

    def verify(self, problem: Problem, completion: str) -> Verdict:
        code = named_code(completion, len(problem.answer))
        if code is None:
            return Verdict(False, "invalid")
        if code == problem.answer:
            return Verdict(True, "correct")
        right = sum(a == b for a, b in zip(code, problem.answer, strict=True))
        return Verdict(False, "partial", f"{right} right")

    def feedback(self, problem: Problem, verdict: Verdict, mode: FeedbackMode = "detailed") -> str:
        if verdict.detail == "invalid":
            return f"wrong . say {len(problem.answer)} digits"
        return verdict.message if mode == "detailed" and verdict.message else "wrong"

    def sample_texts(self, problems: list[Problem]) -> list[str]:
        length, digits = self.options.length, self.options.digits
        texts = [self.format_prompt(p) for p in problems]
        texts += [f"{n} right" for n in range(length)] + ["wrong", f"wrong . say {length} digits"]
        return texts + [" ".join(str(d) for d in range(digits))]  # every digit is one token

    checks = {"answer_ok": ("ok",)}

    @classmethod
    def check_rows(cls, rows: list[dict[str, Any]], *, check_canonical: bool, workers: int | None) -> None:
        # A code the verifier can never match (a wrong length, a digit out of range) is a problem
        # nobody solves: refused at ingest, not discovered as a zero reward.
        for row in rows:
            meta, answer = row.get("meta") or {}, str(row.get("answer") or "")
            try:
                CodebreakOptions(length=int(meta.get("length", 0)), digits=int(meta.get("digits", 0)))
                well_formed = len(answer) == int(meta["length"]) and all(
                    c in "0123456789" and int(c) < int(meta["digits"]) for c in answer
                )
            except (ConfigError, KeyError, TypeError, ValueError):
                well_formed = False
            bad = "answer is not a code of meta.length digits, each < meta.digits"
            row["answer_ok"] = "ok" if well_formed else bad
