"""GSM8K: answer extraction on every real test answer, and the usual answer styles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calgrpo.tasks import Problem, get_task
from calgrpo.tasks.gsm8k import extract_gold, extract_prediction, parse_number

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k" / "test.jsonl"


def test_every_real_gold_answer_verifies_against_itself_and_not_a_perturbed_value() -> None:
    assert DATA.is_file(), f"GSM8K fixture missing at {DATA} (shared/ must sit beside the repository)"
    task = get_task("gsm8k")
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    assert len(rows) > 1000
    for i, row in enumerate(rows):
        problem = Problem(id=str(i), task="gsm8k", prompt=row["question"], answer=row["answer"])
        gold = extract_gold(row["answer"])
        assert gold is not None, row["answer"]
        assert task.verify(problem, row["answer"]).correct, row["answer"]
        head = row["answer"].rsplit("####", 1)[0]
        perturbed = f"{head}#### {gold + 1:g}"
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
