"""GSM8K: answer extraction on every real test answer, the usual answer styles, and hostile inputs
(huge numbers, unbounded golds, megabytes of adversarial text) that must neither raise nor stall."""

from __future__ import annotations

import json
import random
import time
from fractions import Fraction
from pathlib import Path

import pytest

from calgrpo.tasks import Problem, get_task, gsm8k
from calgrpo.tasks.gsm8k import (
    MAX_NUMBER_CHARS,
    extract_gold,
    extract_prediction,
    numbers_match,
    parse_number,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "gsm8k" / "test.jsonl"  # shipped in the repository


def test_every_real_gold_answer_verifies_against_itself_and_not_a_perturbed_value() -> None:
    assert DATA.is_file(), f"GSM8K fixture missing at {DATA}"
    task = get_task("gsm8k")
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    assert len(rows) > 1000
    for i, row in enumerate(rows):
        problem = Problem(id=str(i), task="gsm8k", prompt=row["question"], answer=row["answer"])
        gold = extract_gold(row["answer"])
        assert gold is not None, row["answer"]
        assert task.verify(problem, row["answer"]).correct, row["answer"]
        head = row["answer"].rsplit("####", 1)[0]
        perturbed = f"{head}#### {gold + 1}"  # exact comparison: off by one is wrong at any size
        assert not task.verify(problem, perturbed).correct, perturbed


@pytest.mark.parametrize(
    ("completion", "value"),
    [
        ("so she earns $18.\n#### 18", 18.0),
        ("The answer is 1,234.", 1234.0),
        ("The answer is: $5.50", 5.5),
        ("Final: \\boxed{42}", 42.0),
        ("\\boxed{\\text{7}}", 7.0),
        ("Q: ...\nA: 12 apples", 12.0),
        ("3 + 4 = 7 so 7 cookies. Then 7 * 2 = 14 cookies in total.", 14.0),
        ("It is 25% of the total", 25.0),
        ("#### -3", -3.0),
        ("the answer is 3/4", 0.75),
        ("no digits here", None),
        ("#### 10\nlater I wrote 12", 10.0),
    ],
)
def test_extract_prediction(completion: str, value: float | None) -> None:
    assert extract_prediction(completion) == value


def test_parse_number_edge_cases() -> None:
    assert parse_number("1,000,000") == 1_000_000
    assert parse_number("12.") == 12
    assert parse_number("$ 3") == 3
    assert parse_number("1/0") is None
    assert parse_number("abc") is None


def test_gsm8k_feedback_modes_do_not_reveal_gold() -> None:
    task = get_task("gsm8k")
    problem = Problem(id="p", task="gsm8k", prompt="q", answer="work\n#### 72")
    wrong = task.verify(problem, "#### 70")
    assert wrong.detail == "wrong_answer"
    assert "70" in task.feedback(problem, wrong) and "72" not in task.feedback(problem, wrong)
    assert task.feedback(problem, wrong, "binary") == "Incorrect. Try again."
    missing = task.verify(problem, "I am not sure")
    assert missing.detail == "no_answer" and "####" in task.feedback(problem, missing)
    assert "72" not in task.format_prompt(problem)


def _verify(answer: str, completion: str):
    problem = Problem(id="p", task="gsm8k", prompt="q", answer=answer)
    return get_task("gsm8k").verify(problem, completion)


@pytest.mark.parametrize(
    "completion",
    ["#### 1" + "0" * 400, "#### 1" + "0" * 400 + "/3", "#### 3/1" + "0" * 400, "#### 0." + "0" * 400 + "1",
     "#### -" + "9" * 65, "#### " + "1," * 40 + "1", "#### " + "9" * 1000],
    ids=["400 zeros", "huge numerator", "huge denominator", "tiny decimal", "65 digits", "long with commas",
         "1000 digits"],
)  # fmt: skip
def test_verify_overlong_prediction_is_wrong_not_an_exception(completion: str) -> None:
    # float(Fraction) overflowed on these and the whole verify stage wrote no verdicts.
    verdict = _verify("#### 18", completion)
    assert not verdict.correct and verdict.detail == "wrong_answer"
    assert f"longer than {MAX_NUMBER_CHARS} characters" in verdict.message


@pytest.mark.parametrize(
    "gold",
    ["#### 1" + "0" * 400, "#### 1e400", "#### inf", "#### nan", "#### 1/0", "#### 1" + "0" * 400 + "/3",
     "#### " + "1" * 65],
    ids=["400 zeros", "1e400", "inf", "nan", "division by zero", "huge fraction", "65 digits"],
)  # fmt: skip
def test_verify_unbounded_gold_is_bad_gold_never_correct(gold: str) -> None:
    # An infinite gold made every answer "correct" (|p - inf| <= 1e-6 * inf).
    for completion in ("#### 5", gold, "#### 1" + "0" * 400, "no answer"):
        verdict = _verify(gold, completion)
        assert not verdict.correct and verdict.detail == "bad_gold", (gold[:20], completion[:20])


def test_parse_number_is_exact_and_bounded() -> None:
    assert parse_number("0.1") + parse_number("0.2") == parse_number("0.3")  # exact, unlike floats
    assert parse_number("1/3") == Fraction(1, 3)
    assert parse_number("9" * MAX_NUMBER_CHARS) == int("9" * MAX_NUMBER_CHARS)
    for text in ("9" * (MAX_NUMBER_CHARS + 1), "1e5", "inf", "nan", "1_000", "12 apples", "", "-", "."):
        assert parse_number(text) is None, text


@pytest.mark.parametrize(
    ("predicted", "gold", "match"),
    [("1000000", "1000000", True), ("1000001", "1000000", False), ("109200001", "109200000", False),
     ("2.50", "5/2", True), ("0.1", "1/10", True), ("0.3333333", "1/3", False), ("0.000001", "0", False),
     ("1" + "0" * 63, "1" + "0" * 63, True), ("1" + "0" * 63, "1" + "0" * 62 + "1", False)],
)  # fmt: skip
def test_numbers_match_exactly(predicted: str, gold: str, match: bool) -> None:
    assert numbers_match(parse_number(predicted), parse_number(gold)) is match


_MEGABYTE = 1_000_000
_ADVERSARIAL = {
    "spaces after $": "$" + " " * _MEGABYTE,
    "spaces after answer is": "The answer is" + " " * _MEGABYTE,
    "spaces after ####": "####" + " " * _MEGABYTE,
    "spaces after boxed": "\\boxed{" + " " * _MEGABYTE,
    "spaces after A:": "\nA:" + " " * _MEGABYTE,
    "spaces only": " " * _MEGABYTE,
    "digits after ####": "#### " + "9" * _MEGABYTE,
    "digits": "7" * _MEGABYTE,
    "decimal digits": "0." + "3" * _MEGABYTE,
    "commas": "1" + "," * _MEGABYTE,
    "digit comma runs": "1," * (_MEGABYTE // 2),
    "markers without numbers": "answer is: $ " * (_MEGABYTE // 13),
    "dollar runs": "-$" * (_MEGABYTE // 2),
    "fraction chains": "3/ " * (_MEGABYTE // 3),
    "hash runs": "#" * _MEGABYTE,
    "boxed runs": "\\boxed{\\text{ " * (_MEGABYTE // 14),
}


@pytest.mark.parametrize("shape", sorted(_ADVERSARIAL))
def test_verify_adversarial_megabyte_completion_is_fast(shape: str) -> None:
    # Unbounded \s* before a digit made these quadratic or worse (41 s for "answer is" + 2,000 spaces).
    started = time.perf_counter()
    verdict = _verify("#### 18", _ADVERSARIAL[shape])
    elapsed = time.perf_counter() - started
    assert not verdict.correct
    assert elapsed < 2.0, f"{shape}: {elapsed:.2f} s"


@pytest.mark.parametrize(
    "shape", ["spaces after $", "spaces after answer is", "spaces after boxed", "commas"]
)
def test_extract_prediction_is_linear_even_without_the_window(monkeypatch, shape: str) -> None:
    # The window is one defence; the bounded patterns are the other (a quadratic one takes minutes here).
    monkeypatch.setattr(gsm8k, "MAX_EXAMINED_CHARS", 10**9)
    completion = _ADVERSARIAL[shape][:200_000]
    started = time.perf_counter()
    extract_prediction(completion)
    assert time.perf_counter() - started < 2.0


def test_verify_reads_the_answer_after_megabytes_of_padding() -> None:
    assert _verify("#### 18", "$" + " " * _MEGABYTE + "so #### 18").correct
    assert _verify("#### 18", "answer is" + " " * _MEGABYTE + "\n#### 18").correct


def test_verify_never_raises_on_random_number_like_text() -> None:
    rng = random.Random(0)
    alphabet = ["0", "1", "9", ",", ".", "/", "-", "$", " ", "\n", "#### ", "answer is ", "\\boxed{", "A: ",
                "%", "e", "1e400", "0" * 70]  # fmt: skip
    for _ in range(2000):
        completion = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        gold = "#### " + "".join(rng.choice(alphabet[:9]) for _ in range(rng.randint(0, 6)))
        verdict = _verify(gold, completion)
        assert verdict.detail in {"correct", "wrong_answer", "no_answer", "bad_gold"}, (gold, completion)
