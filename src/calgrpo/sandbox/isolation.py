"""Starting a program under the strongest isolation this machine offers.

``bwrap`` is used when bubblewrap can create its namespaces here (probed once per process);
otherwise a new network namespace and a uid drop (as root), otherwise rlimits alone. The level used
is returned with every run, and ``strict`` refuses anything weaker than bwrap.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

from calgrpo.errors import CalgrpoError
from calgrpo.sandbox.config import IsolationLevel, SandboxConfig

SANDBOX_DIR = "/sandbox"
SAFE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "PYTHONIOENCODING": "utf-8",
}


class IsolationUnavailable(CalgrpoError):
    """The requested isolation cannot be had on this machine."""


def sandbox_python() -> str:
    """The interpreter that runs untrusted programs: the system one if present (it lives in /usr)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return os.path.realpath(sys.executable)


def _system_binds(python: str) -> list[str]:
    args = []
    for path in (
        "/usr",
        "/lib",
        "/lib64",
        "/lib32",
        "/bin",
        "/sbin",
        "/etc/alternatives",
        "/etc/ld.so.cache",
    ):
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    prefix = str(Path(python).resolve().parents[1])
    if not prefix.startswith("/usr"):
        args += ["--ro-bind", prefix, prefix]
    return args


@functools.cache
def bwrap_works() -> bool:
    """Whether bubblewrap can create a full jail here (as the uid a slot would run as)."""
    if shutil.which("bwrap") is None:
        return False
    probe = [
        shutil.which("bwrap"),
        *_system_binds(sandbox_python()),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--unshare-all",
        "--die-with-parent",
        "--",
        sandbox_python(),
        "-c",
        "pass",
    ]
    try:
        return subprocess.run(probe, capture_output=True, timeout=20, preexec_fn=_probe_drop).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _probe_drop() -> None:
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(SandboxConfig.uid_base)
        os.setuid(SandboxConfig.uid_base)


def choose_isolation(config: SandboxConfig) -> IsolationLevel:
    """The isolation level runs will get under ``config`` (raises if it cannot be had)."""
    wanted = config.isolation
    if wanted in ("auto", "bwrap") and bwrap_works():
        return "bwrap"
    if wanted == "bwrap" or config.strict:
        raise IsolationUnavailable(
            "full isolation needs bubblewrap with user namespaces (install the Debian package "
            "'bubblewrap'; in containers allow unprivileged user namespaces), or run without --strict"
        )
    if wanted in ("auto", "unshare+setuid") and os.geteuid() == 0:
        return "unshare+setuid"
    if wanted == "unshare+setuid":
        raise IsolationUnavailable(
            "unshare+setuid isolation needs root to create namespaces and drop privileges"
        )
    return "rlimits"


def build_command(level: IsolationLevel, workdir: Path, argv: list[str], fds: list[int]) -> list[str]:
    """The command line that runs ``argv`` (paths inside the jail) under ``level``."""
    if level != "bwrap":
        return argv
    return [
        shutil.which("bwrap") or "bwrap",
        *_system_binds(argv[0]),
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",
        "--bind", str(workdir), SANDBOX_DIR,
        "--chdir", SANDBOX_DIR,
        "--unshare-all",  # user, pid, network, ipc, uts, cgroup namespaces
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--clearenv",
        *[arg for key, val in {**SAFE_ENV, "HOME": SANDBOX_DIR}.items() for arg in ("--setenv", key, val)],
        "--",
        *argv,
    ]  # fmt: skip


CLONE_NEWNET = 0x40000000


def _unshare_network() -> None:
    """unshare(CLONE_NEWNET) (os.unshare only exists from Python 3.12)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")


def make_preexec(level: IsolationLevel, config: SandboxConfig, uid: int | None):
    """The function run in the child before exec: new session, namespaces, rlimits, uid drop."""

    def preexec() -> None:
        os.setsid()  # its own process group, killed as a whole on timeout
        if level == "unshare+setuid":
            _unshare_network()  # an empty network namespace: not even loopback is up
        limits = {
            resource.RLIMIT_CPU: config.cpu_s,
            resource.RLIMIT_AS: config.memory_mb << 20,
            resource.RLIMIT_FSIZE: config.file_size_mb << 20,
            resource.RLIMIT_NOFILE: config.open_files,
            resource.RLIMIT_CORE: 0,
        }
        if uid is not None:
            limits[resource.RLIMIT_NPROC] = config.processes  # counted per uid, and each slot has its own
        for kind, value in limits.items():
            resource.setrlimit(kind, (value, value))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return preexec
