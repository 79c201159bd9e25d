"""MBPP forging through the tests' namespace (issue 14, finding 1).

MBPP tests call the solution by name next to builtins (``set``, ``sorted``, ``abs``) and names their
setup defines. Only the names the tests need from outside may come from the program; a program
that also defines ``set`` or a setup helper must not decide the other side of the assert.
"""

from __future__ import annotations

import pytest

from calgrpo.sandbox.entry_points import required_names
from calgrpo.tasks import Problem
from tests.sandbox.verifying import verify_programs

MBPP_2 = Problem(  # the shape of MBPP task 2 (tests written for this file)
    id="mbpp-2", task="code",
    prompt="Write a function to find the similar elements from the given two tuple lists.",
    answer="def similar_elements(a, b):\n    return tuple(set(a) & set(b))\n",
    tests=(
        "assert set(similar_elements((3, 4, 5, 6), (5, 7, 4, 10))) == set((4, 5))\n"
        "assert sorted(similar_elements((1, 2, 3, 4), (5, 4, 3, 7))) == sorted((3, 4))\n"
        "assert abs(len(similar_elements((11, 12, 14, 13), (17, 15, 14, 13))) - 2) == 0\n"
    ),
    meta={"format": "mbpp", "test_imports": ["import math"], "test_setup_code": "def twice(v):\n    return 2 * v\n"},
)  # fmt: skip
WITH_SETUP = Problem(
    id="mbpp-setup", task="code", prompt="Write double(v).", answer="",
    tests="assert double(3) == twice(3)\nassert double(0) == twice(0)\n",
    meta={"format": "mbpp", "test_imports": ["import math"], "test_setup_code": "def twice(v):\n    return 2 * v\n"},
)  # fmt: skip
FORGERIES = {
    "redefine_set": "def similar_elements(a, b):\n    return 'wrong'\n\ndef set(*a):\n    return 0\n",
    "redefine_sorted_and_abs": (
        "def similar_elements(a, b):\n    return ()\n\ndef sorted(*a, **k):\n    return 0\n\n"
        "def abs(x):\n    return 0\n\ndef len(x):\n    return 2\n\ndef set(*a):\n    return 0\n"
    ),
    "redefine_every_builtin": (
        "import builtins\nfor _name in dir(builtins):\n    globals()[_name] = lambda *a, **k: 0\n"
        "def similar_elements(a, b):\n    return 'wrong'\n"
    ),
    "shadow_assert_helpers": "def similar_elements(a, b):\n    return None\n\nAssertionError = Exception\n",
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_mbpp_builtin_forgery_fails(name: str) -> None:
    rows, _, _ = verify_programs(MBPP_2, [FORGERIES[name]], workers=1)
    assert rows[0].reward == 0.0, rows[0]


def test_mbpp_setup_names_stay_trusted() -> None:
    forged = "def double(v):\n    return 0\n\ndef twice(v):\n    return 0\n"
    honest = "def double(v):\n    return 2 * v\n"
    rows, _, _ = verify_programs(WITH_SETUP, [forged, honest], workers=1)
    assert [row.reward for row in rows] == [0.0, 1.0]


def test_mbpp_correct_solution_passes_and_missing_name_is_reported() -> None:
    rows, _, _ = verify_programs(MBPP_2, [MBPP_2.answer, "def similar(a, b):\n    return ()\n"], workers=1)
    assert [row.reward for row in rows] == [1.0, 0.0]
    assert rows[1].verdict == "missing_function" and "similar_elements" in rows[1].message


def test_required_names_are_the_free_names_of_the_tests() -> None:
    tests = (
        "import re\nresult = f(1)\nassert result == g(2) and twice(3) and len([x for x in h()])\n"
        "def local(y):\n    return k(y)\n"
    )
    assert required_names(tests, {"twice": None}) == ["f", "g", "h", "k"]
