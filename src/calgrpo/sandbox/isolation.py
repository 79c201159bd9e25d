"""Starting a program under the strongest isolation this machine offers.

``bwrap`` is used when bubblewrap can create its namespaces here (probed once per process);
otherwise a new network namespace and a uid drop (as root), otherwise rlimits alone. The level used
is returned with every run, and ``strict`` refuses anything weaker than bwrap.

Under ``bwrap`` the jail's only writable place is a tmpfs bounded in bytes *and* in files: bwrap's
own ``--tmpfs`` has no file-count limit, so the child mounts one (``size=``, ``nr_inodes=``) in a
user and mount namespace of its own just before it becomes bwrap, and bwrap binds it as the work
directory and /tmp. The mount exists only in that namespace and vanishes with the jail: nothing the
program writes ever lands on the host, and there is nothing to clean up.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from calgrpo.errors import CalgrpoError
from calgrpo.sandbox.config import IsolationLevel, SandboxConfig
from calgrpo.sandbox.seccomp import seccomp_program

log = logging.getLogger(__name__)

SANDBOX_DIR = "/sandbox"
LIBRARY_DIR = "/calgrpo"
"""Where the runner and codec sit in the jail (read-only, with their bytecode precompiled)."""
SAFE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "PYTHONIOENCODING": "utf-8",
}
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_NOSUID, MS_NODEV = 0x2, 0x4
PR_SET_DUMPABLE = 4
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: preexec code must not import


class IsolationUnavailable(CalgrpoError):
    """The requested isolation cannot be had on this machine."""


@dataclass(frozen=True)
class JailFeatures:
    """What bubblewrap can do on this machine (probed once per process)."""

    bwrap: bool
    """A full jail starts at all."""
    bounded_scratch: bool
    """The child can mount its own size- and inode-limited tmpfs (else bwrap's size-only tmpfs)."""
    seccomp: bool
    """A seccomp filter exists for this architecture and bwrap loads it."""


def sandbox_python() -> str:
    """The interpreter that runs untrusted programs: the system one if present (it lives in /usr)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return os.path.realpath(sys.executable)


def _system_binds(python: str) -> list[str]:
    args = []
    system = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc/alternatives", "/etc/ld.so.cache")
    for path in system:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    prefix = str(Path(python).resolve().parents[1])
    if not prefix.startswith("/usr"):
        args += ["--ro-bind", prefix, prefix]
    return args


def _probe(features: JailFeatures, scratch: Path) -> bool:
    """Whether a jail with ``features`` runs ``pass`` here, as the uid a run would get."""
    argv = [sandbox_python(), "-c", "pass"]
    config = SandboxConfig(scratch_mb=1, scratch_inodes=64)
    seccomp_fd = _seccomp_fd() if features.seccomp else None
    command = build_command("bwrap", argv, scratch, features, seccomp_fd)
    fds = [seccomp_fd] if seccomp_fd is not None else []
    uid = SandboxConfig.uid_base if os.geteuid() == 0 else None
    try:
        done = subprocess.run(
            command, capture_output=True, timeout=20, pass_fds=fds,
            preexec_fn=make_preexec("bwrap", config, uid, scratch if features.bounded_scratch else None),
        )  # fmt: skip
        return done.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        if seccomp_fd is not None:
            os.close(seccomp_fd)


_adopted: dict[str, object] = {}


def adopt(directory: str, features: JailFeatures) -> None:
    """Use the runner directory and jail features a parent process already set up (judges do)."""
    _adopted.update(directory=directory, features=features)


def jail_features() -> JailFeatures:
    """The strongest jail that works here (probed once per process, unless adopted)."""
    return _adopted["features"] if "features" in _adopted else _probed_features()  # type: ignore[return-value]


@functools.cache
def _probed_features() -> JailFeatures:
    if shutil.which("bwrap") is None:
        return JailFeatures(False, False, False)
    scratch = Path(runner_dir()) / "scratch"
    filtered = seccomp_program() is not None
    candidates = [JailFeatures(True, True, filtered), JailFeatures(True, False, filtered)]
    candidates += [JailFeatures(True, False, False)] if filtered else []
    for candidate in candidates:
        if _probe(candidate, scratch):
            if candidate != candidates[0]:
                log.warning("sandbox: bubblewrap runs with fewer protections here: %s", candidate)
            return candidate
    return JailFeatures(False, False, False)


def runner_dir() -> str:
    """The private directory of the runner and codec (read-only) and the scratch mount point."""
    return _adopted["directory"] if "directory" in _adopted else _own_runner_dir()  # type: ignore[return-value]


@functools.cache
def _own_runner_dir() -> str:
    import atexit
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="calgrpo-jail-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.chmod(path, 0o755)  # the jailed uid must read the runner; nobody but us writes here
    (path / "lib").mkdir(0o755)
    for name in ("runner.py", "codec.py"):
        shutil.copy(Path(__file__).parent / name, path / "lib" / name)
    # Bytecode compiled once by the jail's own interpreter: every program's start-up then reads it
    # instead of compiling the runner again (the jail runs with -B and cannot write it).
    subprocess.run([sandbox_python(), "-m", "compileall", "-q", str(path / "lib")], check=False,
                   capture_output=True, timeout=60)  # fmt: skip
    for file in (path / "lib").rglob("*"):
        os.chmod(file, 0o755 if file.is_dir() else 0o444)
    (path / "scratch").mkdir(0o755)
    return str(path)


def runner_argv(level: IsolationLevel, request_fd: int, response_fd: int) -> list[str]:
    """The jailed interpreter's command line: import the runner (from its bytecode) and serve."""
    library = LIBRARY_DIR if level == "bwrap" else f"{runner_dir()}/lib"
    start = f"import sys; sys.path.insert(0, {library!r}); import runner; runner.main()"
    # -S: the standard library only (no site-packages, no .pth hooks run at start-up; 25% faster).
    return [sandbox_python(), "-E", "-S", "-B", "-c", start, str(request_fd), str(response_fd)]


def bwrap_works() -> bool:
    """Whether bubblewrap can create a full jail here."""
    return jail_features().bwrap


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


def _seccomp_fd() -> int | None:
    from calgrpo.sandbox.seccomp import write_program_fd

    program = seccomp_program()
    return None if program is None else write_program_fd(program)


def open_seccomp_fd(level: IsolationLevel) -> int | None:
    """A fresh fd holding the filter for one bwrap run (bwrap consumes it), or None."""
    return _seccomp_fd() if level == "bwrap" and jail_features().seccomp else None


def build_command(
    level: IsolationLevel,
    argv: list[str],
    scratch: Path,
    features: JailFeatures | None = None,
    seccomp_fd: int | None = None,
    config: SandboxConfig | None = None,
) -> list[str]:
    """The command line that runs ``argv`` (paths inside the jail) under ``level``.

    ``scratch``: the mount point of the bounded tmpfs (see the module docstring); with
    ``features.bounded_scratch`` off, bwrap's own size-limited tmpfs is used instead.
    """
    if level != "bwrap":
        return argv
    features = features or jail_features()
    config = config or SandboxConfig()
    # The only writable places: the work directory, /tmp and /dev/shm; / and /dev are remounted
    # read-only below (bwrap makes both tmpfs without limits).
    places = {SANDBOX_DIR: "work", "/tmp": "tmp", "/dev/shm": "shm"}
    if features.bounded_scratch:
        writable = [arg for inside, name in places.items() for arg in ("--bind", f"{scratch}/{name}", inside)]
    else:
        size = str(config.scratch_mb << 20)
        writable = [arg for inside in places for arg in ("--size", size, "--tmpfs", inside)]
    lib = runner_dir()
    return [
        shutil.which("bwrap") or "bwrap",
        *_system_binds(argv[0]),
        "--proc", "/proc",
        "--dev", "/dev",
        *writable,
        "--ro-bind", f"{lib}/lib", LIBRARY_DIR,
        "--remount-ro", "/dev",
        "--remount-ro", "/",
        "--chdir", SANDBOX_DIR,
        "--unshare-all",  # pid, network, ipc, uts, cgroup namespaces
        "--unshare-user",  # explicitly, so that --disable-userns applies
        "--disable-userns",  # no nested user namespaces (and so no mounts) for the program
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        *(["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []),
        "--clearenv",
        *[arg for key, val in {**SAFE_ENV, "HOME": SANDBOX_DIR}.items() for arg in ("--setenv", key, val)],
        "--",
        *argv,
    ]  # fmt: skip


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what} failed: {os.strerror(errno)}")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _mount_scratch(scratch: Path, config: SandboxConfig) -> None:
    """In a new user + mount namespace, mount the bounded tmpfs at ``scratch`` (child side)."""
    uid, gid = os.getuid(), os.getgid()
    _LIBC.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # a uid change cleared it; /proc/self/*_map needs it
    _check(_LIBC.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    options = f"size={config.scratch_mb << 20},nr_inodes={config.scratch_inodes},mode=0700"
    _check(
        _LIBC.mount(b"calgrpo", str(scratch).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode()),
        "mount(tmpfs)",
    )
    for name in ("work", "tmp", "shm"):
        os.mkdir(scratch / name, 0o700)


def make_preexec(level: IsolationLevel, config: SandboxConfig, uid: int | None, scratch: Path | None = None):
    """The function run in the child before exec: new session, namespaces, rlimits, uid drop.

    Only call it from a single-threaded process (the judge): it runs Python between fork and exec.
    """

    def preexec() -> None:
        os.setsid()  # its own process group, killed as a whole on timeout
        if level == "unshare+setuid":
            _check(_LIBC.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")  # not even loopback is up
        limits = {
            resource.RLIMIT_CPU: config.cpu_s,
            resource.RLIMIT_AS: config.memory_mb << 20,
            resource.RLIMIT_FSIZE: config.file_size_mb << 20,
            resource.RLIMIT_NOFILE: config.open_files,
            resource.RLIMIT_CORE: 0,
        }
        if uid is not None:
            limits[resource.RLIMIT_NPROC] = config.processes  # counted per uid, and each run has its own
        for kind, value in limits.items():
            resource.setrlimit(kind, (value, value))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        if scratch is not None:
            _mount_scratch(scratch, config)

    return preexec
