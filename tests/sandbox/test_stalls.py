"""Programs that tried to stall the trusted side past every timeout (issue 14, finding 2).

Each returns (or forges) something that made the host's decoding, file reads or pipe writes block
or take minutes; the verify stage must end within its budget with a failed verdict.
"""

from __future__ import annotations

import pytest

from calgrpo.sandbox.judge import JudgePool
from tests.sandbox.verifying import DOUBLE, FAST, PROMPT, no_program_left, stage_budget, verify_programs

COLLIDING = "[i * (2**61 - 1) for i in range(1, 60001)]"  # every one hashes to 0
STALLS = {
    # The runner's encoder is the program's to patch: it sends a set tag over 60,000 colliding ints,
    # whose decoding on the host was quadratic (minutes).
    "colliding_set_reply": (
        "import sys\ncodec = sys.modules['codec']\n"
        f"codec.encode = lambda value, depth=0: {{'s': [{{'i': str(v)}} for v in {COLLIDING}]}}\n"
        + PROMPT + "    return 0\n"
    ),
    "colliding_dict_keys_reply": (
        "import sys\ncodec = sys.modules['codec']\n"
        f"codec.encode = lambda value, depth=0: {{'d': [[{{'i': str(v)}}, None] for v in {COLLIDING}]}}\n"
        + PROMPT + "    return 0\n"
    ),
    # A plain list is cheap to decode, but the tests' own set() of it was quadratic.
    "colliding_list_into_set": PROMPT + f"    return {COLLIDING}\n",
    # stdout.txt replaced by a FIFO: the host's open() blocked forever.
    "stdout_becomes_fifo": (
        "import os\nfor name in ('stdout.txt', 'stderr.txt'):\n    try:\n        os.remove(name)\n"
        "    except OSError:\n        pass\n    try:\n        os.mkfifo(name)\n    except OSError:\n        pass\n"
        + PROMPT + "    return 0\n"
    ),
    # Answers the first call itself, then never reads again: the next (large) argument used to
    # block the host's pipe write forever.
    "answers_then_stops_reading": (
        "import os, sys, time\n" + PROMPT
        + "    os.write(int(sys.argv[2]), b'{\"ok\": {\"i\": \"4\"}}\\n')\n    time.sleep(1000)\n"
    ),
    "deeply_nested_json_reply": (
        "import os, sys\n" + PROMPT + "    os.write(int(sys.argv[2]), b'{\"ok\": ' + b'[' * 200000 + b'\\n')\n"
        "    import time\n    time.sleep(1000)\n"
    ),
    "huge_int_reply": (
        "import os, sys\n" + PROMPT
        + "    os.write(int(sys.argv[2]), b'{\"ok\": {\"i\": \"' + b'7' * 4000000 + b'\"}}\\n')\n"
        "    import time\n    time.sleep(1000)\n"
    ),
}
SET_TESTS = "def check(candidate):\n    assert set(candidate(2)) == {4}\n"
PIPE_TESTS = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate('x' * 200000) == 0\n"


def _tests_for(name: str) -> str:
    return PIPE_TESTS if name == "answers_then_stops_reading" else SET_TESTS


@pytest.mark.parametrize("name", sorted(STALLS))
def test_stall_ends_within_budget_and_fails(name: str) -> None:
    problem = DOUBLE.__class__(**{**DOUBLE.__dict__, "tests": _tests_for(name)})
    rows, _, elapsed = verify_programs(problem, [STALLS[name]], workers=1)
    assert rows[0].reward == 0.0, rows[0]
    assert elapsed < stage_budget(1, 1), (name, elapsed, rows[0])
    assert no_program_left()


def test_many_stalls_at_once_end_within_the_stage_budget() -> None:
    programs = [STALLS[name] for name in sorted(STALLS)] * 2
    problem = DOUBLE.__class__(**{**DOUBLE.__dict__, "tests": SET_TESTS})
    rows, summary, elapsed = verify_programs(problem, programs, workers=2)
    assert [row.reward for row in rows] == [0.0] * len(programs)
    assert elapsed < stage_budget(len(programs), 2), (elapsed, summary)


def test_judge_overrun_is_killed_and_replaced() -> None:
    # Trusted test code that never ends on what it got: only the judge's hard deadline stops it.
    pool = JudgePool(1, FAST)
    try:
        result = pool.run(PROMPT + "    return x\n", "def check(candidate):\n    while candidate(1) == 1:\n        pass\n",
                          setup=PROMPT, entry_point="solve")  # fmt: skip
        assert result.timed_out and not result.passed
        assert result.duration_s < FAST.timeout_s + FAST.host_grace_s + 2
        assert pool.run(PROMPT + "    return 2 * x\n", DOUBLE.tests, setup=PROMPT, entry_point="solve").passed
    finally:
        pool.close()
    assert no_program_left()


def test_symlinked_output_never_reads_host_files() -> None:
    with open("/etc/hostname") as handle:
        host_text = handle.read().strip()
    program = (
        "import os\nfor name in ('stdout.txt', 'stderr.txt'):\n    try:\n        os.remove(name)\n"
        "    except OSError:\n        pass\n    try:\n        os.symlink('/etc/hostname', name)\n"
        "    except OSError:\n        pass\n" + PROMPT + "    return 2 * x\n"
    )
    pool = JudgePool(1, FAST)
    try:
        result = pool.run(program, DOUBLE.tests, setup=PROMPT, entry_point="solve")
    finally:
        pool.close()
    assert result.passed  # the program is correct; what matters is what the host read back
    assert host_text not in result.stdout + result.stderr
