"""GSM8K: grade-school word problems with a numeric answer after ``####``.

The prediction's final answer is taken from, in order: the last ``#### x``; the last ``\\boxed{x}``;
the last "answer is x" / "answer: x" / "A: x"; otherwise the last number in the text. Numbers may
carry commas, a currency sign, a percent sign, units or a trailing period; fractions ``a/b`` are
evaluated. Numbers are exact ``Fraction``s and must be equal (``2.50`` equals ``5/2``). No
tolerance: every GSM8K gold is an integer, and a relative tolerance would accept gold + 1 as
correct once the gold passes 10^6, a reward the policy would learn to collect.

The policy is optimised against this verifier, so it must never raise and never take long:

- a number longer than ``MAX_NUMBER_CHARS`` (sign, digits, commas, point and fraction bar; no
  GSM8K answer comes close) is refused: as a prediction it is a wrong answer, as a gold it is
  ``bad_gold``; exponents, ``inf`` and ``nan`` are not numbers here;
- only the last ``MAX_EXAMINED_CHARS`` characters of a completion are searched, and every repeat in
  the patterns is bounded, so extraction is linear in that window whatever the text.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from calgrpo.ingest.normalize import register_format
from calgrpo.tasks.base import FeedbackMode, Problem, Task, Verdict, register_task

MAX_NUMBER_CHARS = 64
"""Longest number accepted (the longest GSM8K gold, ``109,200,000``, has 11 characters)."""
MAX_EXAMINED_CHARS = 32_768
"""Completion characters searched for the answer, from the end (512 tokens are far fewer)."""

_GAP = r"\s{0,8}"
# One more character than allowed in each run, so a longer run shows up as too long instead of being
# cut into a plausible prefix; the look-behind stops a match from starting inside a run of digits.
_RUN = MAX_NUMBER_CHARS
_NUMBER = (
    rf"-?\$?{_GAP}(?<![\d,])\d[\d,]{{0,{_RUN}}}(?:\.\d{{1,{_RUN}}})?"
    rf"(?:{_GAP}/{_GAP}\d{{1,{_RUN + 1}}}(?:\.\d{{1,{_RUN}}})?)?"
)
_MARKERS = [
    re.compile(rf"####{_GAP}({_NUMBER})"),
    re.compile(rf"\\boxed\{{{_GAP}(?:\\text\{{)?{_GAP}({_NUMBER})"),
    re.compile(rf"answer{_GAP}(?:is|:|=)[\s:]{{0,8}}({_NUMBER})", re.IGNORECASE),
    re.compile(rf"(?:^|\n){_GAP}A:{_GAP}({_NUMBER})"),
]
_ANY_NUMBER = re.compile(_NUMBER)
# What a number is once "$", whitespace and commas are gone: no exponent, no inf/nan, no underscores.
_PLAIN = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+(?:\.\d+)?)?")


def _clean(text: str) -> str:
    """Drop whitespace, ``$`` and a trailing period; commas stay (they count towards the length)."""
    return "".join(text.split()).replace("$", "").rstrip(".")


def number_too_long(text: str) -> bool:
    """The number in ``text`` has more than ``MAX_NUMBER_CHARS`` characters (see the module doc)."""
    return len(_clean(text)) > MAX_NUMBER_CHARS


def looks_like_number(text: str) -> bool:
    """``text`` has the shape of a number (any length), e.g. ``"$1,234.5"`` or ``"3/4"``."""
    return _PLAIN.fullmatch(_clean(text).replace(",", "")) is not None


def parse_number(text: str) -> Fraction | None:
    """``"$1,234.50"`` -> 2469/2, ``"3/4"`` -> 3/4, ``"12."`` -> 12; None if not a number, too long,
    or a division by zero."""
    cleaned = _clean(text)
    if len(cleaned) > MAX_NUMBER_CHARS:
        return None
    bare = cleaned.replace(",", "")
    if _PLAIN.fullmatch(bare) is None:
        return None
    numerator, _, denominator = bare.partition("/")
    value = Fraction(numerator)
    if denominator:
        if Fraction(denominator) == 0:
            return None
        value /= Fraction(denominator)
    return value


def gold_text(answer: str) -> str:
    """What follows the last ``####`` of a GSM8K answer (the whole answer if it has none), stripped."""
    return answer.rsplit("####", 1)[-1].strip()


def extract_gold(answer: str) -> Fraction | None:
    """The number after the last ``####`` of a GSM8K answer (or the whole answer if it is a number);
    None unless it is a finite number of at most ``MAX_NUMBER_CHARS`` characters."""
    return parse_number(gold_text(answer))


def extract_prediction_text(completion: str) -> str | None:
    """The text of the model's final answer (see the module docstring for the order of preference)."""
    window = completion[-MAX_EXAMINED_CHARS:]
    for marker in _MARKERS:
        matches = marker.findall(window)
        if matches:
            return matches[-1]
    numbers = _ANY_NUMBER.findall(window)
    return numbers[-1] if numbers else None


def extract_prediction(completion: str) -> Fraction | None:
    """The model's final answer as a number; None if there is none or it is not a bounded number."""
    text = extract_prediction_text(completion)
    return None if text is None else parse_number(text)


def numbers_match(predicted: Fraction, gold: Fraction) -> bool:
    """Exact equality of the two fractions (no rounding, no overflow, no tolerance)."""
    return predicted == gold


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
            return Verdict(False, "bad_gold",
                           f"the problem's gold answer is not a finite number of at most "
                           f"{MAX_NUMBER_CHARS} characters")  # fmt: skip
        text = extract_prediction_text(completion)
        if text is not None and number_too_long(text):
            return Verdict(False, "wrong_answer",
                           f"your final answer is longer than {MAX_NUMBER_CHARS} characters")  # fmt: skip
        predicted = None if text is None else parse_number(text)
        if predicted is None:
            return Verdict(False, "no_answer", "no final answer found")
        if numbers_match(predicted, gold):
            return Verdict(True, "correct")
        return Verdict(False, "wrong_answer", f"your answer {_clean(text)} is incorrect")

    def feedback(self, problem: Problem, verdict: Verdict, mode: FeedbackMode = "detailed") -> str:
        if mode == "binary":
            return "Incorrect. Try again."
        if verdict.detail == "no_answer":
            return "No final answer found. End your answer with '#### <number>'."
        return f"Incorrect: {verdict.message}. Try again."

    # "n/a" for gold_bounded only where answer_ok already failed (no number to bound).
    checks = {"answer_ok": ("ok",), "gold_bounded": ("ok", "n/a")}

    @classmethod
    def check_rows(cls, rows: list[dict[str, Any]], *, check_canonical: bool, workers: int | None) -> None:
        for row in rows:
            row.update(gsm8k_checks(row["answer"]))


GOLD_UNBOUNDED = f"gold answer is not a finite number of at most {MAX_NUMBER_CHARS} characters"


def gsm8k_checks(answer: str | None) -> dict[str, str]:
    """``answer_ok`` ("#### <number>" present) and ``gold_bounded`` (that number is one the verifier
    accepts) as "ok" or a reason; two facts so the report names which one failed."""
    if not answer or "####" not in answer or not looks_like_number(gold_text(answer)):
        return {"answer_ok": "no '#### <number>' in the answer", "gold_bounded": "n/a"}
    # The verifier answers bad_gold on every attempt at an unbounded gold: a problem nobody can solve.
    bounded = extract_gold(answer) is not None
    return {"answer_ok": "ok", "gold_bounded": "ok" if bounded else GOLD_UNBOUNDED}


@register_format("gsm8k", ("question", "answer"))
def gsm8k_format(raw: dict) -> dict:
    """GSM8K's question/answer records."""
    return {"task": "gsm8k", "prompt": raw["question"], "answer": raw["answer"], "tests": "", "meta": {}}
