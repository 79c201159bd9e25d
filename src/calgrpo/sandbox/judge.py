"""Judge processes: each verification runs in a child process that is killed if it overruns.

The trusted side of a verification (starting the jail, decoding the program's values, running the
hidden tests on them, cleaning up) is bounded operation by operation in harness.py, but the tests'
own work on a hostile value cannot be interrupted inside one Python process. So it runs in a judge:
a long-lived child that serves one verification at a time. The pool waits ``timeout_s +
host_grace_s`` for its answer; past that the judge, the program's group and every process of the
leased uid are killed, the verdict is ``timeout`` and a fresh judge takes the slot. Whatever the
programs do, a batch of N on W workers ends within ceil(N / W) * (timeout_s + host_grace_s).

Judges start with a scrubbed environment (no credentials to read through /proc at the weaker
isolation levels) and mark themselves non-dumpable (no same-uid process may read their memory,
which holds the hidden tests, or ptrace them).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from calgrpo.sandbox.config import IsolationLevel, SandboxConfig
from calgrpo.sandbox.harness import CodeResult, run_tests
from calgrpo.sandbox.isolation import (
    SAFE_ENV,
    JailFeatures,
    adopt,
    choose_isolation,
    jail_features,
    runner_dir,
)
from calgrpo.sandbox.uids import UidLeaser

log = logging.getLogger(__name__)
PR_SET_DUMPABLE = 4
MAX_REPLY = 1 << 20
_warned_levels: set[str] = set()
_ENTRY = "import sys; sys.path.insert(0, sys.argv[1]); from calgrpo.sandbox.judge import serve; serve()"


def make_undumpable() -> None:
    """Refuse same-uid readers of this process's /proc/<pid>/{environ,mem} and ptrace."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def warn_weak_isolation(level: IsolationLevel) -> None:
    """Say once per process that programs run with less than a full jail, and protect this process."""
    if level == "bwrap":
        return
    make_undumpable()
    if level not in _warned_levels:
        _warned_levels.add(level)
        log.warning(
            "sandbox: bubblewrap is unavailable, untrusted programs run at the weaker isolation level "
            "%r (see docs/verification.md); install 'bubblewrap' or use --sandbox.strict to refuse",
            level,
        )


def judge_environment() -> dict[str, str]:
    """What a judge inherits: nothing of ours but the temp directory (no credentials, no tokens)."""
    env = {key: value for key, value in SAFE_ENV.items() if key != "PYTHONHASHSEED"}  # random: str hashes
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]
    return env


def failure(level: IsolationLevel, elapsed: float, crashed: bool, message: str | None = None) -> CodeResult:
    """The verdict when no judge answered: its process died (crashed) or overran (timeout)."""
    if crashed:
        return CodeResult(
            passed=False, detail="crashed", message=message or "the verification's judge process died",
            isolation=level, duration_s=elapsed, timed_out=False, crashed=True,
        )  # fmt: skip
    return CodeResult(
        passed=False, detail="timeout", message="time limit exceeded", isolation=level,
        duration_s=elapsed, timed_out=True, crashed=False,
    )  # fmt: skip


class _Judge:
    """One judge process and its pipes."""

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ENTRY, package_root],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=judge_environment(),
            start_new_session=True,  # its own group: killed as one, apart from the jailed programs
        )  # fmt: skip
        os.set_blocking(self.process.stdout.fileno(), False)
        self.buffer = b""
        self.died = False

    def ask(self, job: dict, deadline: float) -> tuple[dict | None, int | None]:
        """(result, program pid): result None if the judge overran ``deadline`` or died."""
        program_pid = None
        try:
            self.process.stdin.write((json.dumps(job) + "\n").encode())
            self.process.stdin.flush()
        except OSError:
            self.died = True
            return None, None
        while True:
            line = self._line(deadline)
            if line is None:
                return None, program_pid
            message = json.loads(line)
            if "pid" in message:
                program_pid = int(message["pid"])
            else:
                return message["result"], program_pid

    def _line(self, deadline: float) -> bytes | None:
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk or len(self.buffer) > MAX_REPLY:
                self.died = True
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except OSError:
            pass
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


class JudgePool:
    """Runs verifications on up to ``size`` judges at once; thread-safe."""

    def __init__(self, size: int, config: SandboxConfig):
        self.config = config
        self.level: IsolationLevel = choose_isolation(config)
        warn_weak_isolation(self.level)
        self.leaser = UidLeaser(config.uid_base) if os.geteuid() == 0 else None
        self.slots = threading.BoundedSemaphore(size)
        self.idle: queue.SimpleQueue[_Judge] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.judges: list[_Judge] = []

    def run(self, program: str, tests: str, setup: str = "", entry_point: str | None = None) -> CodeResult:
        job = {
            "program": program, "tests": tests, "setup": setup, "entry_point": entry_point,
            "config": asdict(self.config), "level": self.level, "runner_dir": runner_dir(),
            "features": asdict(jail_features()),
        }  # fmt: skip
        with self.slots:
            judge, lease = self._take(), None
            started = time.monotonic()
            try:
                lease = self.leaser.lease() if self.leaser is not None else None
                job["uid"] = lease.uid if lease is not None else None
                deadline = started + self.config.timeout_s + self.config.host_grace_s
                reply, program_pid = judge.ask(job, deadline)
                if reply is None:
                    died = judge.died
                    self._replace(judge, program_pid)
                    judge = None
                    return failure(self.level, time.monotonic() - started, crashed=died)
                return CodeResult(**reply)
            finally:
                if lease is not None:
                    lease.release()
                if judge is not None:
                    self.idle.put(judge)

    def _take(self) -> _Judge:
        try:
            return self.idle.get_nowait()
        except queue.Empty:
            judge = _Judge()
            with self.lock:
                self.judges.append(judge)
            return judge

    def _replace(self, judge: _Judge, program_pid: int | None) -> None:
        judge.kill()
        if program_pid is not None:
            try:
                os.killpg(program_pid, signal.SIGKILL)
            except OSError:
                pass
        with self.lock:
            self.judges.remove(judge)

    def close(self) -> None:
        with self.lock:
            judges, self.judges = self.judges, []
        for judge in judges:
            judge.kill()
        self.idle = queue.SimpleQueue()


def serve() -> None:
    """A judge's main loop: one job per stdin line, replies on the original stdout."""
    make_undumpable()
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything printed by accident goes to stderr, never into the protocol
    for line in sys.stdin:
        job = json.loads(line)
        adopt(job["runner_dir"], JailFeatures(**job["features"]))

        def started(pid: int) -> None:
            replies.write(json.dumps({"pid": pid}) + "\n")
            replies.flush()

        try:
            result = run_tests(
                job["program"], job["tests"], setup=job["setup"], entry_point=job["entry_point"],
                config=SandboxConfig(**job["config"]), level=job["level"], uid=job["uid"], on_start=started,
            )  # fmt: skip
        except Exception as exc:  # the process boundary: report, keep serving
            message = f"sandbox failure: {type(exc).__name__}"
            result = failure(job["level"], 0.0, crashed=True, message=message)
            print(f"calgrpo judge: {exc!r}", file=sys.stderr)
        replies.write(json.dumps({"result": asdict(result)}) + "\n")
        replies.flush()
