"""Host side of code verification: the program runs jailed, the hidden tests run here.

The program is loaded in the sandbox (runner.py); the tests execute in this process with proxies in
place of the program's functions. A call sends plain-value arguments into the jail and gets a plain
value back (codec.py). So the verdict is decided outside the jail, by trusted test code, from
values the program cannot disguise: exiting early, patching builtins or ``check``, printing fake
success lines or killing processes can only make a test fail.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from calgrpo.sandbox import codec
from calgrpo.sandbox.config import IsolationLevel, SandboxConfig
from calgrpo.sandbox.isolation import (
    SAFE_ENV,
    SANDBOX_DIR,
    build_command,
    choose_isolation,
    make_preexec,
    sandbox_python,
)

HERE = Path(__file__).parent


@dataclass(frozen=True)
class CodeResult:
    """Outcome of running hidden tests against one program."""

    passed: bool
    detail: str
    """``passed``, ``wrong_answer``, ``error``, ``load_error``, ``missing_function``, ``timeout``,
    ``crashed`` or ``unsupported_value``."""
    message: str
    """Safe to show the model: the program's own exception, never the test source or expected values."""
    isolation: IsolationLevel
    duration_s: float
    timed_out: bool
    crashed: bool
    stdout: str = ""
    stderr: str = ""


class _Timeout(Exception):
    pass


class _Died(Exception):
    pass


class RemoteError(Exception):
    """An exception raised by the program inside the sandbox."""

    def __init__(self, error: dict):
        self.type_name = str(error.get("type", "Exception"))
        self.text = str(error.get("message", ""))
        super().__init__(self.text)


class _Connection:
    """Line-oriented messages over two pipes, every wait bounded by the deadline."""

    def __init__(self, write_fd: int, read_fd: int, deadline: float):
        self.write_fd, self.read_fd, self.deadline = write_fd, read_fd, deadline
        self.buffer = b""

    def send(self, message: dict) -> None:
        data = memoryview(codec.dumps(message))
        while data:
            self._wait(self.write_fd, write=True)
            try:
                data = data[os.write(self.write_fd, data) :]
            except (BrokenPipeError, OSError) as exc:
                raise _Died("the program's process is gone") from exc

    def receive(self) -> dict:
        while b"\n" not in self.buffer:
            self._wait(self.read_fd, write=False)
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise _Died("the program's process ended")
            self.buffer += chunk
            if len(self.buffer) > 8 << 20:
                raise _Died("the program sent an oversized message")
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            return codec.loads(line)
        except ValueError as exc:
            raise _Died("the program corrupted the result channel") from exc

    def _wait(self, fd: int, write: bool) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _Timeout()
        ready = select.select([], [fd], [], remaining) if write else select.select([fd], [], [], remaining)
        if not any(ready):
            raise _Timeout()


def _proxy(connection: _Connection, name: str):
    def call(*args, **kwargs):
        try:
            request = {"call": name, "args": codec.encode(list(args)), "kwargs": codec.encode(kwargs)}
        except codec.CodecError as exc:
            raise TypeError(f"test argument cannot be sent to the program: {exc}") from None
        connection.send(request)
        reply = connection.receive()
        if "error" in reply:
            raise RemoteError(reply["error"])
        try:
            return codec.decode(reply.get("ok"))
        except (codec.CodecError, ValueError, TypeError) as exc:
            raise RemoteError({"type": "TypeError", "message": f"TypeError: {exc}"}) from None

    call.__name__ = name
    return call


class SlotPool:
    """Bounds concurrent programs and, as root, gives each run a uid of its own.

    Uids rotate through ``uid_base .. uid_base + UID_RANGE - 1``, skipping those in use: a process
    limit (RLIMIT_NPROC counts per uid) then counts only that run's processes, not the exiting
    leftovers of the previous run, and killing "every process of the uid" kills only that run.
    """

    UID_RANGE = 1000

    def __init__(self, size: int, config: SandboxConfig):
        self.slots = threading.BoundedSemaphore(size)
        self.config = config
        self.lock = threading.Lock()
        self.in_use: set[int] = set()
        self.next_offset = 0

    def acquire(self) -> int | None:
        self.slots.acquire()
        if os.geteuid() != 0:
            return None
        with self.lock:
            while True:
                uid = self.config.uid_base + self.next_offset
                self.next_offset = (self.next_offset + 1) % self.UID_RANGE
                if uid not in self.in_use:
                    self.in_use.add(uid)
                    return uid

    def release(self, uid: int | None) -> None:
        if uid is not None:
            with self.lock:
                self.in_use.discard(uid)
        self.slots.release()

    def uids(self) -> range:
        """Every uid this pool may hand out."""
        return range(self.config.uid_base, self.config.uid_base + self.UID_RANGE)


def run_tests(
    program: str,
    tests: str,
    *,
    setup: str = "",
    entry_point: str | None = None,
    config: SandboxConfig | None = None,
    pool: SlotPool | None = None,
) -> CodeResult:
    """Load ``program`` in the sandbox, then run ``tests`` here against it.

    Args:
        program: the untrusted source.
        tests: trusted test code. With ``entry_point`` (HumanEval style) it defines
            ``check(candidate)``, which is called with the program's function; without it (MBPP style)
            it is a block of asserts that call the program's functions by name.
        setup: trusted code run first in the test namespace (a HumanEval prompt's helpers, imports).
    """
    config = config or SandboxConfig()
    pool = pool or SlotPool(1, config)
    level = choose_isolation(config)
    uid = pool.acquire()
    try:
        return _run_in_slot(program, tests, setup, entry_point, config, level, uid)
    finally:
        pool.release(uid)


def _run_in_slot(program, tests, setup, entry_point, config, level, uid) -> CodeResult:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="calgrpo-sandbox-"))
    request_r, request_w = os.pipe()
    response_r, response_w = os.pipe()
    process = None
    try:
        (workdir / "program.py").write_text(program)
        shutil.copy(HERE / "runner.py", workdir / "runner.py")
        shutil.copy(HERE / "codec.py", workdir / "codec.py")
        if uid is not None:
            for path in [workdir, *workdir.iterdir()]:
                os.chown(path, uid, uid)
        os.chmod(workdir, 0o700)
        inside = SANDBOX_DIR if level == "bwrap" else str(workdir)
        argv = [sandbox_python(), "-E", "-s", "-B", f"{inside}/runner.py", str(request_r), str(response_w)]
        with open(workdir / "stdout.txt", "wb") as out, open(workdir / "stderr.txt", "wb") as err:
            process = subprocess.Popen(
                build_command(level, workdir, argv, [request_r, response_w]),
                cwd=workdir,
                env={**SAFE_ENV, "HOME": inside},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                pass_fds=(request_r, response_w),
                preexec_fn=make_preexec(level, config, uid),
            )
        os.close(request_r)
        os.close(response_w)
        request_r = response_w = -1
        connection = _Connection(request_w, response_r, started + config.timeout_s)
        detail, message = _drive(connection, tests, setup, entry_point)
    finally:
        for fd in (request_r, request_w, response_r, response_w):
            if fd >= 0:
                os.close(fd)
        crashed_code = _terminate(process, uid)
    stdout, stderr = (_head(workdir / name, config.output_bytes) for name in ("stdout.txt", "stderr.txt"))
    shutil.rmtree(workdir, ignore_errors=True)
    if detail == "crashed" and crashed_code is not None:
        message = (
            f"the program was killed by signal {signal.Signals(-crashed_code).name}"
            if crashed_code < 0
            else f"the program's process exited early (exit code {crashed_code})"
        )
    return CodeResult(
        passed=detail == "passed",
        detail=detail,
        message=message,
        isolation=level,
        duration_s=time.monotonic() - started,
        timed_out=detail == "timeout",
        crashed=detail == "crashed",
        stdout=stdout,
        stderr=stderr,
    )


def _drive(connection: _Connection, tests: str, setup: str, entry_point: str | None) -> tuple[str, str]:
    """Run the trusted tests against the jailed program; (detail, message)."""
    try:
        hello = connection.receive()
        if "load_error" in hello:
            return "load_error", _program_error(hello["load_error"])
        callables = [name for name in hello.get("ready", []) if isinstance(name, str)]
        namespace: dict = {"__name__": "__calgrpo_tests__"}
        exec(compile(setup, "<setup>", "exec"), namespace)
        if entry_point is not None:
            if entry_point not in callables:
                return "missing_function", f"the program does not define {entry_point}()"
            namespace[entry_point] = _proxy(connection, entry_point)
            exec(compile(tests, "<hidden tests>", "exec"), namespace)
            namespace["check"](namespace[entry_point])
        else:
            namespace.update(
                {name: _proxy(connection, name) for name in callables if not name.startswith("_")}
            )
            exec(compile(tests, "<hidden tests>", "exec"), namespace)
        return "passed", ""
    except _Timeout:
        return "timeout", "time limit exceeded"
    except _Died as exc:
        return "crashed", str(exc)
    except RemoteError as exc:
        return "error", _program_error({"message": exc.text})
    except AssertionError:
        return "wrong_answer", "a hidden test failed: wrong result"
    except TypeError as exc:
        if "cannot be sent" in str(exc):
            return "unsupported_value", "a hidden test's argument type is not supported by the sandbox"
        return "error", f"TypeError in a hidden test: {type(exc).__name__}"
    except Exception as exc:  # the trusted test code failed on what the program returned
        return "error", f"{type(exc).__name__} raised while checking the result"


def _program_error(error: dict) -> str:
    return str(error.get("message", "error"))[-500:]


def _terminate(process: subprocess.Popen | None, uid: int | None) -> int | None:
    """Kill the program's process group (and, with a slot uid, every process of that uid).

    Returns the exit status if the process had already ended on its own, else None.
    """
    if process is None:
        return None
    exited_by_itself = process.poll()
    with _suppress():
        os.killpg(process.pid, signal.SIGKILL)
    if uid is not None:
        _kill_uid(uid)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return exited_by_itself


def _kill_uid(uid: int) -> None:
    """Processes that left the group (setsid, double fork) still carry the slot's uid."""
    for _ in range(50):
        pids = processes_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            with _suppress():
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def processes_of_uid(uid: int | range) -> list[int]:
    """Live (non-zombie) processes whose real uid is ``uid`` (or in that range of uids)."""
    uids = uid if isinstance(uid, range) else range(uid, uid + 1)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                status = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        zombie = status.get("State", "").strip().startswith("Z")
        if int(status.get("Uid", "-1 ").split()[0]) in uids and not zombie:
            found.append(int(entry))
    return found


def _head(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is not None and issubclass(kind, (ProcessLookupError, PermissionError, OSError))
