"""GSM8K: grade-school word problems with a numeric answer after ``####``.

The prediction's final answer is taken from, in order: the last ``#### x``; the last ``\\boxed{x}``;
the last "answer is x" / "answer: x" / "A: x"; otherwise the last number in the text. Numbers may
carry commas, a currency sign, a percent sign, units or a trailing period; fractions ``a/b`` are
evaluated. Comparison is numeric with a relative tolerance of 1e-6.
"""

from __future__ import annotations

import re
from fractions import Fraction

from calgrpo.tasks.base import FeedbackMode, Problem, Task, Verdict, register_task

_NUMBER = r"-?\$?\s*\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?"
_MARKERS = [
    re.compile(r"####\s*(" + _NUMBER + ")"),
    re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*(" + _NUMBER + ")"),
    re.compile(r"answer\s*(?:is|:|=)\s*:?\s*(" + _NUMBER + ")", re.IGNORECASE),
    re.compile(r"(?:^|\n)\s*A:\s*(" + _NUMBER + ")"),
]
_ANY_NUMBER = re.compile(_NUMBER)


def parse_number(text: str) -> float | None:
    """``"$1,234.50"`` -> 1234.5, ``"3/4"`` -> 0.75, ``"12."`` -> 12.0; None if no number."""
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        if "/" in cleaned:
            numerator, denominator = cleaned.split("/", 1)
            return float(Fraction(numerator) / Fraction(denominator))
        return float(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def extract_gold(answer: str) -> float | None:
    """The number after the last ``####`` of a GSM8K answer (or the whole answer if it is a number)."""
    tail = answer.rsplit("####", 1)[-1].strip()
    return parse_number(tail)


def extract_prediction(completion: str) -> float | None:
    """The model's final answer (see the module docstring for the order of preference)."""
    for marker in _MARKERS:
        matches = marker.findall(completion)
        if matches:
            return parse_number(matches[-1])
    numbers = _ANY_NUMBER.findall(completion)
    return parse_number(numbers[-1]) if numbers else None


def numbers_match(predicted: float, gold: float) -> bool:
    return abs(predicted - gold) <= 1e-6 * max(1.0, abs(gold))


def _show(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


@register_task
class GSM8KTask(Task):
    """Grade-school math: free-form reasoning, final numeric answer."""

    name = "gsm8k"
    default_max_new_tokens = 512
    instruction = "Solve the problem step by step. End with the final answer as '#### <number>'."

    def format_prompt(self, problem: Problem) -> str:
        return f"{problem.prompt}\n\n{self.instruction}"

    def verify(self, problem: Problem, completion: str) -> Verdict:
        gold = extract_gold(problem.answer)
        if gold is None:
            return Verdict(False, "bad_gold", "the problem's gold answer has no number")
        predicted = extract_prediction(completion)
        if predicted is None:
            return Verdict(False, "no_answer", "no final answer found")
        if numbers_match(predicted, gold):
            return Verdict(True, "correct")
        return Verdict(False, "wrong_answer", f"your answer {_show(predicted)} is incorrect")

    def feedback(self, problem: Problem, verdict: Verdict, mode: FeedbackMode = "detailed") -> str:
        if mode == "binary":
            return "Incorrect. Try again."
        if verdict.detail == "no_answer":
            return "No final answer found. End your answer with '#### <number>'."
        return f"Incorrect: {verdict.message}. Try again."
