"""Host side of code verification: the program runs jailed, the hidden tests run here.

The program is loaded in the sandbox (runner.py); the tests execute in this process with proxies in
place of the program's functions. A call sends plain-value arguments into the jail and gets a plain
value back (codec.py). So the verdict is decided outside the jail, by trusted test code, from
values the program cannot disguise: exiting early, patching builtins or ``check``, printing fake
success lines or killing processes can only make a test fail.

Everything the program hands back is bounded here: pipe I/O is non-blocking against one deadline,
messages are capped, decoding has a budget (codec.py), and stdout/stderr go to anonymous files that
the program cannot replace by a FIFO or a symlink. The judge process (judge.py) that calls
:func:`run_tests` is itself killed if it overruns, which bounds whatever is left (the tests' own
work on returned values).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from calgrpo.sandbox import codec
from calgrpo.sandbox.config import IsolationLevel, SandboxConfig
from calgrpo.sandbox.entry_points import required_names
from calgrpo.sandbox.isolation import (
    SAFE_ENV,
    SANDBOX_DIR,
    build_command,
    jail_features,
    make_preexec,
    open_seccomp_fd,
    runner_argv,
    runner_dir,
)

MAX_MESSAGE = 8 << 20


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
        self.type_name = str(error.get("type", "Exception"))[:100]
        self.text = str(error.get("message", ""))[-2000:]
        super().__init__(self.text)


class _Connection:
    """Line-oriented messages over two non-blocking pipes, every wait bounded by one deadline."""

    def __init__(self, write_fd: int, read_fd: int, deadline: float):
        self.write_fd, self.read_fd, self.deadline = write_fd, read_fd, deadline
        os.set_blocking(write_fd, False)  # a program that stops reading must not block a write
        os.set_blocking(read_fd, False)
        self.buffer = bytearray()

    def send(self, message: dict) -> None:
        data = memoryview(codec.dumps(message))
        while data:
            self._wait(self.write_fd, write=True)
            try:
                data = data[os.write(self.write_fd, data) :]
            except BlockingIOError:
                continue
            except OSError as exc:
                raise _Died("the program's process is gone") from exc

    def receive(self) -> dict:
        searched = 0
        while (end := self.buffer.find(b"\n", searched)) < 0:
            searched = len(self.buffer)
            self._wait(self.read_fd, write=False)
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                raise _Died("the program's process ended")
            self.buffer += chunk
            if len(self.buffer) > MAX_MESSAGE:
                raise _Died("the program sent an oversized message")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
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
            raise RemoteError(reply["error"] if isinstance(reply["error"], dict) else {})
        try:
            return codec.decode(reply.get("ok"))
        except (codec.CodecError, ValueError, TypeError, RecursionError) as exc:
            raise RemoteError({"type": "TypeError", "message": f"TypeError: {exc}"}) from None

    call.__name__ = name
    return call


def run_tests(
    program: str,
    tests: str,
    *,
    setup: str = "",
    entry_point: str | None = None,
    config: SandboxConfig | None = None,
    level: IsolationLevel,
    uid: int | None = None,
    on_start=None,
) -> CodeResult:
    """Load ``program`` in the sandbox, then run ``tests`` here against it (in this process).

    Args:
        program: the untrusted source.
        tests: trusted test code. With ``entry_point`` (HumanEval style) it defines
            ``check(candidate)``, which is called with the program's function; without it (MBPP style)
            it is a block of asserts that call the program's functions by name.
        setup: trusted code run first in the test namespace (a HumanEval prompt's helpers, imports).
        level: the isolation level (see isolation.choose_isolation); ``uid``: the leased uid (root).
        on_start: called with the program's process id once it runs (the judge reports it).

    Runs Python between fork and exec: call it from a single-threaded process (judge.py does).
    """
    config = config or SandboxConfig()
    started = time.monotonic()
    request_r, request_w = os.pipe()
    response_r, response_w = os.pipe()
    process = workdir = seccomp_fd = None
    detail, message = "crashed", "the sandbox could not start the program"
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            workdir = _host_workdir(level, uid)
            argv = runner_argv(level, request_r, response_w)
            seccomp_fd = open_seccomp_fd(level)
            fds = [request_r, response_w] + ([seccomp_fd] if seccomp_fd is not None else [])
            scratch = Path(runner_dir()) / "scratch"
            bounded = scratch if level == "bwrap" and jail_features().bounded_scratch else None
            process = subprocess.Popen(
                build_command(level, argv, scratch, seccomp_fd=seccomp_fd, config=config),
                cwd=workdir or "/", env={**SAFE_ENV, "HOME": workdir or SANDBOX_DIR},
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=fds,
                preexec_fn=make_preexec(level, config, uid, bounded),
            )  # fmt: skip
            if on_start is not None:
                on_start(process.pid)
            for fd in (request_r, response_w):
                os.close(fd)
            request_r = response_w = -1
            connection = _Connection(request_w, response_r, started + config.timeout_s)
            detail, message = _drive(connection, program, tests, setup, entry_point)
        finally:
            for fd in (request_r, request_w, response_r, response_w, seccomp_fd):
                if fd is not None and fd >= 0:
                    os.close(fd)
            crashed_code = _terminate(process)
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
        stdout, stderr = (_head(handle, config.output_bytes) for handle in (out, err))
    if detail == "crashed" and crashed_code is not None:
        message = (
            f"the program was killed by signal {signal.Signals(-crashed_code).name}"
            if crashed_code < 0
            else f"the program's process exited early (exit code {crashed_code})"
        )
    return CodeResult(
        passed=detail == "passed", detail=detail, message=message, isolation=level,
        duration_s=time.monotonic() - started, timed_out=detail == "timeout", crashed=detail == "crashed",
        stdout=stdout, stderr=stderr,
    )  # fmt: skip


def _host_workdir(level: IsolationLevel, uid: int | None) -> str | None:
    """The weaker levels run in a fresh host directory (bwrap's work directory is its own tmpfs)."""
    if level == "bwrap":
        return None
    workdir = tempfile.mkdtemp(prefix="calgrpo-sandbox-")
    if uid is not None:
        os.chown(workdir, uid, uid)
    os.chmod(workdir, 0o700)
    return workdir


def _drive(connection: _Connection, program: str, tests: str, setup: str, entry_point: str | None):
    """Run the trusted tests against the jailed program; (detail, message)."""
    try:
        connection.send({"program": program})
        hello = connection.receive()
        if "load_error" in hello:
            return "load_error", _program_error(hello["load_error"])
        ready = hello.get("ready")
        callables = {name for name in ready if isinstance(name, str)} if isinstance(ready, list) else set()
        namespace: dict = {"__name__": "__calgrpo_tests__"}
        exec(compile(setup, "<setup>", "exec"), namespace)
        # Only the names the tests need from outside come from the program (entry_points.py).
        wanted = [entry_point] if entry_point is not None else required_names(tests, namespace)
        missing = [name for name in wanted if name not in callables]
        if missing:
            return "missing_function", f"the program does not define {missing[0]}()"
        namespace.update({name: _proxy(connection, name) for name in wanted})
        exec(compile(tests, "<hidden tests>", "exec"), namespace)
        if entry_point is not None:
            namespace["check"](namespace[entry_point])
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


def _program_error(error) -> str:
    """The program's own error text, shortened and made valid UTF-8 (a lone surrogate in it would
    break the parquet writer and the tokenizer downstream)."""
    text = str(error.get("message", "error"))[-500:] if isinstance(error, dict) else "error"
    return text.encode("utf-8", errors="replace").decode("utf-8")


def _terminate(process: subprocess.Popen | None) -> int | None:
    """Kill the program's process group; the exit status if it had already ended by itself.

    Processes that left the group (setsid, double fork) die with the jail's pid namespace under
    bwrap, and with the leased uid (uids.py) at the weaker levels as root.
    """
    if process is None:
        return None
    exited_by_itself = process.poll()
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return exited_by_itself


def _head(handle, limit: int) -> str:
    """The first ``limit`` bytes the program wrote to an anonymous output file."""
    handle.seek(0)
    return handle.read(limit).decode("utf-8", errors="replace")
