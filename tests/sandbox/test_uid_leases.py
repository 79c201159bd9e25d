"""Concurrent verifiers on one machine (issue 14, finding 3).

Every process used to hand out uids from the same start, and cleanup killed every process of a
uid: two verify stages on one node killed each other's programs. Uids are now leased with a lock
file each, unique across processes, and cleanup touches only its own lease.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from calgrpo.sandbox.uids import UidLeaser, lock_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="uids are leased only when running as root")
ROOT = Path(__file__).resolve().parents[2]
VERIFY = textwrap.dedent(
    """
    import json, sys
    from calgrpo.sandbox.config import SandboxConfig
    from tests.sandbox.verifying import DOUBLE, PROMPT, verify_programs
    sleep, count = float(sys.argv[1]), int(sys.argv[2])
    program = PROMPT + f"    import time\\n    time.sleep({sleep})\\n    return 2 * x\\n"
    config = SandboxConfig(timeout_s=20.0, cpu_s=5, memory_mb=512, host_grace_s=5.0)
    rows, summary, _ = verify_programs(DOUBLE, [program] * count, sandbox=config, workers=1)
    print(json.dumps([[row.reward, row.verdict, row.message] for row in rows]))
    """
)


def _start(sleep: float, count: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", VERIFY, str(sleep), str(count)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_two_verify_stages_do_not_kill_each_others_programs() -> None:
    slow = _start(sleep=1.5, count=2)  # each program sleeps through both calls: 3 s
    fast = _start(sleep=0.0, count=12)  # a dozen cleanups while the slow ones run
    outputs = [process.communicate(timeout=120) for process in (slow, fast)]
    for process, (_, err) in zip((slow, fast), outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
    slow_rows, fast_rows = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert [row[0] for row in slow_rows] == [1.0, 1.0], slow_rows
    assert [row[0] for row in fast_rows] == [1.0] * 12, fast_rows


HOLD = textwrap.dedent(
    """
    import sys, time
    from calgrpo.sandbox.uids import UidLeaser
    leaser = UidLeaser(int(sys.argv[1]))
    leaser._next = 0
    lease = leaser.lease()
    print(lease.uid, flush=True)
    time.sleep(60)
    """
)


def test_a_uid_leased_by_another_process_is_skipped_and_freed_when_it_dies() -> None:
    base = 62000
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(base)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert int(holder.stdout.readline()) == base
        leaser = UidLeaser(base)
        leaser._next = 0
        lease = leaser.lease()
        assert lease.uid == base + 1  # the other process holds base
        lease.release()
    finally:
        holder.kill()
        holder.wait()
    leaser._next = 0
    lease = leaser.lease()
    assert lease.uid == base  # the kernel dropped the dead holder's lock
    lease.release()


def test_lock_dir_is_private() -> None:
    info = os.lstat(lock_dir())
    assert info.st_uid == os.geteuid() and info.st_mode & 0o077 == 0
