"""The weaker isolation levels (issue 14, finding 7).

When ``auto`` falls back below bubblewrap, the run says so once on stderr and in the summary, and
no credential of the verifier is left where a same-uid program could read it through /proc: judges
start with a scrubbed environment and the verifier makes itself non-dumpable.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

from calgrpo.io import write_problems
from calgrpo.rollout.records import write_attempts
from tests.sandbox.verifying import DOUBLE, PROMPT, attempt

ROOT = Path(__file__).resolve().parents[2]


def test_fallback_is_announced_once_on_stderr_and_in_the_summary(tmp_path) -> None:
    write_problems([DOUBLE], tmp_path / "problems.parquet")
    programs = [PROMPT + "    return 2 * x\n", PROMPT + "    return x\n"] * 3
    write_attempts([attempt("double", i, p) for i, p in enumerate(programs)], tmp_path / "attempts.parquet")
    done = subprocess.run(
        [sys.executable, "-m", "calgrpo.cli", "verify", "--problems", str(tmp_path / "problems.parquet"),
         "--attempts", str(tmp_path / "attempts.parquet"), "--output", str(tmp_path / "verdicts.parquet"),
         "--sandbox.isolation", "rlimits", "--workers", "2"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("weaker isolation level 'rlimits'") == 1, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert "6 programs ran without the full bubblewrap jail" in summary["isolation_warning"]
    assert summary["per_task"]["code"]["pass_rate"] == 0.5


PROBE = textwrap.dedent(
    """
    import ctypes, json, os
    from calgrpo.sandbox.config import SandboxConfig
    from calgrpo.sandbox.judge import JudgePool
    from tests.sandbox.verifying import DOUBLE, PROMPT
    libc = ctypes.CDLL(None)
    before = libc.prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
    pool = JudgePool(1, SandboxConfig(isolation="rlimits", timeout_s=5.0))
    result = pool.run(PROMPT + "    return 2 * x\\n", DOUBLE.tests, setup=PROMPT, entry_point="solve")
    judge = pool.judges[0].process.pid
    with open(f"/proc/{judge}/environ", "rb") as handle:
        judge_env = handle.read().decode("latin-1")
    print(json.dumps({"before": before, "after": libc.prctl(3, 0, 0, 0, 0), "passed": result.passed,
                      "judge_env": judge_env}))
    pool.close()
    """
)


def test_judges_hold_no_credentials_and_the_verifier_is_not_dumpable() -> None:
    secret = "AKIA" + secrets.token_hex(8).upper()
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": secret, "HF_TOKEN": secret}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["passed"]
    assert (found["before"], found["after"]) == (1, 0)
    assert secret not in found["judge_env"] and "AWS_" not in found["judge_env"]
    assert "PATH=" in found["judge_env"]  # it is the judge's real environment, read through /proc
