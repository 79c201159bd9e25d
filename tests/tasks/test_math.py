"""Math task: a table of equivalences math-verify must get right, including false positives to avoid."""

from __future__ import annotations

import subprocess
import sys

import pytest

from calgrpo.tasks import Problem, get_task
from calgrpo.workers import TimeoutPool

TABLE = [
    # fractions vs decimals
    ("\\frac{1}{2}", "The answer is $\\boxed{0.5}$", True),
    ("0.5", "$\\boxed{\\frac{1}{2}}$", True),
    ("\\frac{3}{4}", "$\\boxed{\\frac{6}{8}}$", True),
    ("\\dfrac{7}{3}", "$\\boxed{2\\frac{1}{3}}$", True),
    # x = 3 vs 3
    ("3", "So $x = 3$.", True),
    ("3", "$\\boxed{x=3}$", True),
    # intervals and sets
    ("(1,2]", "$\\boxed{(1,2]}$", True),
    ("(1,2]", "$\\boxed{[1,2]}$", False),
    ("\\{1,2\\}", "$\\boxed{\\{2,1\\}}$", True),
    ("\\{1,2\\}", "$\\boxed{\\{1,2,3\\}}$", False),
    # percentages
    ("50\\%", "$\\boxed{50\\%}$", True),
    ("50\\%", "$\\boxed{50}$", True),
    # radicals, powers, polynomials
    ("\\frac{\\sqrt{2}}{2}", "$\\boxed{\\frac{1}{\\sqrt{2}}}$", True),
    ("2\\sqrt{2}", "$\\boxed{\\sqrt{8}}$", True),
    ("10^{3}", "$\\boxed{1000}$", True),
    ("x^2+2x+1", "$\\boxed{(x+1)^2}$", True),
    ("1000", "$\\boxed{1,000}$", True),
    # known false positives to avoid
    ("12", "$\\boxed{\\frac{1}{2}}$", False),
    ("2", "$\\boxed{2x}$", False),
    ("\\pi", "$\\boxed{3.14}$", False),
    ("-1", "$\\boxed{1}$", False),
    ("3", "The answer is 3 or 4: $\\boxed{4}$", False),
    ("5", "no answer here", False),
]


@pytest.fixture(scope="module")
def task():
    task = get_task("math", workers=2, timeout_s=10.0)
    yield task
    task.close()


def test_math_equivalence_table(task) -> None:
    problems = [
        Problem(id=str(i), task="math", prompt="", answer=gold) for i, (gold, _, _) in enumerate(TABLE)
    ]
    verdicts = task.verify_many(problems, [pred for _, pred, _ in TABLE])
    wrong = [
        (gold, pred, v.correct)
        for (gold, pred, want), v in zip(TABLE, verdicts, strict=True)
        if v.correct != want
    ]
    assert wrong == []


def test_math_feedback_shows_the_prediction_not_the_gold(task) -> None:
    problem = Problem(id="p", task="math", prompt="", answer="\\frac{7}{9}")
    verdict = task.verify(problem, "$\\boxed{\\frac{2}{3}}$")
    assert verdict.detail == "wrong_answer"
    text = task.feedback(problem, verdict)
    assert "\\frac{2}{3}" in text and "7" not in text
    assert task.verify(problem, "I give up").detail == "no_answer"


def _hang_or_echo(item):
    import time

    if item == "hang":
        time.sleep(60)
    if item == "boom":
        raise ValueError("boom")
    return item


def test_timeout_pool_kills_hung_workers_and_keeps_going() -> None:
    pool = TimeoutPool(_hang_or_echo, num_workers=2, timeout_s=0.5)
    try:
        outcomes = pool.map(["a", "hang", "b", "boom", "c"])
        assert [o.value for o in outcomes] == ["a", None, "b", None, "c"]
        assert outcomes[1].timed_out and outcomes[3].error == "ValueError: boom"
        assert [o.value for o in pool.map(["d", "e"])] == ["d", "e"]  # the replacement worker serves
    finally:
        pool.close()


def test_first_items_do_not_pay_for_worker_start_up_under_load() -> None:
    # One core kept busy by another process: a fresh pool's first items used to time out because
    # their clock included spawning the worker and importing math-verify and sympy.
    busy = subprocess.Popen([sys.executable, "-c", "while True:\n    pass\n"])
    task = get_task("math", workers=2, timeout_s=1.0)
    try:
        problems = [Problem(id=str(i), task="math", prompt="", answer=str(i)) for i in range(6)]
        verdicts = task.verify_many(problems, [f"$\\boxed{{{i}}}$" for i in range(6)])
    finally:
        task.close()
        busy.kill()
        busy.wait()
    assert [v.detail for v in verdicts] == ["correct"] * 6
