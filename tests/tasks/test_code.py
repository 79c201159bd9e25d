"""Code task: HumanEval- and MBPP-format fixtures (written for these tests), pass/fail and feedback."""

from __future__ import annotations

import pytest

from calgrpo.sandbox.config import SandboxConfig
from calgrpo.tasks import Problem, get_task
from calgrpo.tasks.code import build_program, extract_code

HUMANEVAL = Problem(
    id="he-1",
    task="code",
    prompt='def running_max(values):\n    """Return the list of running maxima of values."""\n',
    answer="",
    tests=(
        "def check(candidate):\n"
        "    assert candidate([1, 3, 2, 5]) == [1, 3, 3, 5]\n"
        "    assert candidate([]) == []\n"
        "    assert candidate([-2, -5]) == [-2, -2]\n"
    ),
    meta={"format": "humaneval", "entry_point": "running_max"},
)
HUMANEVAL_HELPER = Problem(
    id="he-2",
    task="code",
    prompt=(
        "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n\n\n"
        'def root_of_line(xs):\n    """Return x with poly(xs, x) == 0 for a line xs = [b, a]."""\n'
    ),
    answer="",
    tests="def check(candidate):\n    assert abs(poly([2, 4], candidate([2, 4]))) < 1e-9\n",
    meta={"format": "humaneval", "entry_point": "root_of_line"},
)
MBPP = Problem(
    id="mbpp-1",
    task="code",
    prompt="Write a function count_vowels(text) that returns how many vowels text has.",
    answer="",
    tests=(
        "assert count_vowels('banana') == 3\n"
        "assert count_vowels('xyz') == 0\n"
        "assert count_vowels('AEiou') == 5\n"
    ),
    meta={"format": "mbpp", "test_imports": [], "test_setup_code": ""},
)

CASES = [
    (
        HUMANEVAL,
        "    out, best = [], None\n    for v in values:\n        best = v if best is None or v > best else best\n"
        "        out.append(best)\n    return out\n",
        True,
    ),
    (
        HUMANEVAL,
        "```python\ndef running_max(values):\n    import itertools\n"
        "    return list(itertools.accumulate(values, max))\n```",
        True,
    ),
    (HUMANEVAL, "    return sorted(values)\n", False),
    (HUMANEVAL, "    return values[0]\n", False),
    (HUMANEVAL_HELPER, "    b, a = xs\n    return -b / a\n", True),
    (HUMANEVAL_HELPER, "    return 0.0\n", False),
    (
        MBPP,
        "```python\ndef count_vowels(text):\n    return sum(ch in 'aeiouAEIOU' for ch in text)\n```",
        True,
    ),
    (MBPP, "def count_vowels(text):\n    return sum(ch in 'aeiou' for ch in text)\n", False),
    (MBPP, "def count_vowel(text):\n    return 0\n", False),
]


@pytest.fixture(scope="module")
def task():
    task = get_task("code", sandbox=SandboxConfig(timeout_s=5.0), workers=2)
    yield task
    task.close()


@pytest.mark.parametrize(("problem", "completion", "correct"), CASES)
def test_code_verdicts(task, problem, completion, correct) -> None:
    verdict = task.verify(problem, completion)
    assert verdict.correct is correct, verdict
    assert verdict.isolation in ("bwrap", "unshare+setuid", "rlimits")
    assert verdict.duration_s > 0


def test_code_verify_many_keeps_order(task) -> None:
    problems = [c[0] for c in CASES]
    verdicts = task.verify_many(problems, [c[1] for c in CASES])
    assert [v.correct for v in verdicts] == [c[2] for c in CASES]


def test_code_feedback_never_leaks_tests_or_expected_values(task) -> None:
    wrong = task.verify(HUMANEVAL, "    return sorted(values)\n")
    crashing = task.verify(HUMANEVAL, "    raise ValueError('no idea')\n")
    syntax = task.verify(HUMANEVAL, "    return (\n")
    assert wrong.detail == "wrong_answer" and crashing.detail == "error" and syntax.detail == "load_error"
    assert "ValueError: no idea" in task.feedback(HUMANEVAL, crashing)
    assert "SyntaxError" in task.feedback(HUMANEVAL, syntax)
    for verdict in (wrong, crashing, syntax):
        for mode in ("detailed", "binary"):
            text = task.feedback(HUMANEVAL, verdict, mode)
            assert "[1, 3, 3, 5]" not in text and "candidate" not in text and "assert" not in text
    assert task.feedback(HUMANEVAL, wrong, "binary") == "Incorrect. Try again."


def test_code_extraction_and_program_building() -> None:
    assert extract_code("text\n```python\nx = 1\n```\nmore\n```\ny = 2\n```") == ("y = 2\n", True)
    assert extract_code("    return 1\n") == ("    return 1\n", False)
    assert build_program(HUMANEVAL, "    return []\n") == HUMANEVAL.prompt + "    return []\n"
    assert build_program(MBPP, "```python\ndef f():\n    pass\n```") == "def f():\n    pass\n"
