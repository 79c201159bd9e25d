"""Sandbox limits and isolation policy; importable without torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from calgrpo.errors import ConfigError, check_ranges

IsolationLevel = Literal["bwrap", "unshare+setuid", "rlimits"]
"""What a run actually got, strongest first:

- ``bwrap``: bubblewrap jail: new user, pid, network, ipc, uts and mount namespaces; read-only
  system directories, a small tmpfs as work directory and /tmp and nothing else; an unprivileged
  uid; no further user namespaces; a seccomp filter where this architecture has one.
- ``unshare+setuid``: a new network namespace and a dropped uid, but the host filesystem is visible
  (read-only by permissions only).
- ``rlimits``: resource limits and a scrubbed environment only.
"""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits for one untrusted program."""

    timeout_s: float = 10.0
    """Wall-clock budget for loading the program and running every test (> 0)."""
    cpu_s: int = 10
    """CPU seconds (RLIMIT_CPU, >= 1)."""
    memory_mb: int = 1024
    """Address space (RLIMIT_AS) in MiB (>= 64)."""
    file_size_mb: int = 16
    """Largest file the program may write, stdout/stderr included (RLIMIT_FSIZE)."""
    open_files: int = 64
    """Open file descriptors (RLIMIT_NOFILE)."""
    processes: int = 32
    """Processes of the program's uid (RLIMIT_NPROC); as root every run gets a uid of its own."""
    output_bytes: int = 4096
    """How much of the program's stdout/stderr is kept."""
    isolation: Literal["auto", "bwrap", "unshare+setuid", "rlimits"] = "auto"
    """Isolation to use: ``auto`` takes the strongest that works on this machine."""
    strict: bool = False
    """Refuse to run anything without full (bwrap) isolation."""
    uid_base: int = 61000
    """As root, each run leases a uid/gid of uid_base .. uid_base + 999, unique across every process
    on the machine (lock files), so concurrent verifiers never share or kill each other's programs."""
    scratch_mb: int = 64
    """Writable space of the jail (its work directory and /tmp together, a tmpfs), MiB (>= 1)."""
    scratch_inodes: int = 4096
    """Files and directories the jail's tmpfs may hold (>= 64), so a file bomb ends at a count."""
    host_grace_s: float = 5.0
    """Wall-clock seconds on top of ``timeout_s`` for the trusted side (start-up, decoding the
    program's values, running the tests, cleanup); past it the whole verification is killed and
    counts as a timeout, so nothing a program returns can stall the stage (> 0)."""

    def __post_init__(self) -> None:
        check_ranges(
            "sandbox",
            self,
            {
                "timeout_s": (self.timeout_s > 0, "> 0"),
                "cpu_s": (self.cpu_s >= 1, ">= 1"),
                "memory_mb": (self.memory_mb >= 64, ">= 64"),
                "file_size_mb": (self.file_size_mb >= 1, ">= 1"),
                "open_files": (self.open_files >= 16, ">= 16"),
                "processes": (self.processes >= 1, ">= 1"),
                "output_bytes": (self.output_bytes >= 0, ">= 0"),
                "scratch_mb": (self.scratch_mb >= 1, ">= 1"),
                "scratch_inodes": (self.scratch_inodes >= 64, ">= 64"),
                "host_grace_s": (self.host_grace_s > 0, "> 0"),
                "uid_base": (1000 <= self.uid_base <= 2**31 - 2000, "in 1000 .. 2**31 - 2000"),
            },
        )
        if self.strict and self.isolation not in ("auto", "bwrap"):
            raise ConfigError(
                f"sandbox: strict mode needs bwrap isolation, but isolation = {self.isolation!r}"
            )
