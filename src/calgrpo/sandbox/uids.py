"""Unprivileged uids for jailed programs, unique across every process on the machine.

As root, each program runs under a uid of its own from ``uid_base .. uid_base + UID_RANGE - 1``.
A per-process counter is not enough: two verify stages on one node (two KFP tasks, or ``calgrpo
verify`` twice) would hand out the same uid, and each one's cleanup ("kill every process of my
uid") would kill the other's programs. So a uid is *leased*: an exclusive ``flock`` on a lock file
per uid, in a root-only directory. The kernel drops the lock when its holder dies, so a crashed
verifier never leaks a uid; the holder's pid stays in the file until a clean release, so a new
holder knows when to kill whatever a dead holder left running.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import threading
import time
from pathlib import Path

from calgrpo.errors import CalgrpoError

UID_RANGE = 1000
LOCK_DIR_NAME = "calgrpo-sandbox-uids"


class UidsExhausted(CalgrpoError):
    """Every uid of the range is leased (more concurrent programs than the range holds)."""


def lock_dir() -> Path:
    """The root-only directory of lock files, created on first use and checked every time.

    A directory that is a symlink, not ours, or writable by others is refused: a jailed program at
    a weaker isolation level sees the host's /tmp and could otherwise plant one to steal leases.
    """
    base = Path("/run") if os.access("/run", os.W_OK) else Path("/tmp")
    path = base / LOCK_DIR_NAME
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise CalgrpoError(
            f"sandbox: {path} is not a private directory of uid {os.geteuid()} (mode "
            f"{stat.filemode(info.st_mode)}, owner {info.st_uid}); remove it and run again"
        )
    return path


class UidLease:
    """One leased uid; ``release`` (or the holder's death) frees it."""

    def __init__(self, uid: int, fd: int):
        self.uid, self._fd = uid, fd

    def release(self) -> None:
        """Kill every process still running under the uid, then free it."""
        if self._fd >= 0:
            kill_processes_of(self.uid)
            os.ftruncate(self._fd, 0)  # marks the uid clean: the next holder need not look for leftovers
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


class UidLeaser:
    """Leases uids of ``uid_base .. uid_base + UID_RANGE - 1``, trying from a per-process offset."""

    def __init__(self, uid_base: int):
        self.uid_base = uid_base
        self._lock = threading.Lock()
        # Start where other processes are unlikely to be, so leases rarely contend.
        self._next = (os.getpid() * 7) % UID_RANGE

    def uids(self) -> range:
        return range(self.uid_base, self.uid_base + UID_RANGE)

    def lease(self) -> UidLease:
        directory = lock_dir()
        with self._lock:
            for _ in range(UID_RANGE):
                uid = self.uid_base + self._next
                self._next = (self._next + 1) % UID_RANGE
                fd = os.open(directory / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno in (errno.EAGAIN, errno.EACCES):
                        continue
                    raise
                if os.fstat(fd).st_size:  # a holder died mid-run: its programs may still be alive
                    kill_processes_of(uid)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return UidLease(uid, fd)
        raise UidsExhausted(
            f"sandbox: all {UID_RANGE} uids from {self.uid_base} are leased; lower the number of "
            "workers or give each verifier its own --sandbox.uid-base"
        )


def processes_of(uids: int | range) -> list[int]:
    """Live (non-zombie) processes whose real uid is ``uids`` (or in that range)."""
    wanted = uids if isinstance(uids, range) else range(uids, uids + 1)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            owner = os.stat(f"/proc/{entry}").st_uid
            if owner not in wanted and owner != 0:
                continue  # a dumpable process of another uid (non-dumpable ones show up as root)
            with open(f"/proc/{entry}/status", "rb") as handle:
                status = handle.read()
        except OSError:
            continue
        uid = _field(status, b"\nUid:")
        if uid is not None and int(uid) in wanted and _field(status, b"\nState:") != b"Z":
            found.append(int(entry))
    return found


def _field(status: bytes, name: bytes) -> bytes | None:
    """The first word after ``name`` in a /proc status file."""
    start = status.find(name)
    if start < 0:
        return None
    words = status[start + len(name) : status.find(b"\n", start + 1)].split()
    return words[0] if words else None


def kill_processes_of(uid: int, patience_s: float = 2.0) -> None:
    """SIGKILL every process of ``uid`` (those that left the program's group: setsid, double fork),
    until none is left or ``patience_s`` has passed (a killed process can take a moment to go)."""
    deadline = time.monotonic() + patience_s
    while (pids := processes_of(uid)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.001)
