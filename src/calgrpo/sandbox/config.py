"""Sandbox limits and isolation policy; importable without torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from calgrpo.errors import ConfigError, check_ranges

IsolationLevel = Literal["bwrap", "unshare+setuid", "rlimits"]
"""What a run actually got, strongest first:

- ``bwrap``: bubblewrap jail: new user, pid, network, ipc, uts and mount namespaces; read-only
  system directories, a fresh writable work directory and nothing else; an unprivileged uid.
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
    """As root, runs take uids/gids uid_base .. uid_base + 999 in turn (unused by anything else)."""

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
            },
        )
        if self.strict and self.isolation not in ("auto", "bwrap"):
            raise ConfigError(
                f"sandbox: strict mode needs bwrap isolation, but isolation = {self.isolation!r}"
            )
