"""The seccomp filter: well-formed BPF for both machines, and in a real bwrap jail it refuses exactly
what it should (EPERM, ENOSYS for clone3) while ordinary Python work still runs.

The pure tests run the compiled program through a small classic-BPF interpreter written here, so
they check the shipped bytes rather than the code that produced them. The jail tests run the system
Python under ``bwrap --seccomp FD``, as root and as an unprivileged uid like the real sandbox.
"""

from __future__ import annotations

import errno
import functools
import json
import operator
import os
import platform
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from calgrpo.sandbox.seccomp import (
    AUDIT_ARCH,
    CLONE_NAMESPACE_FLAGS,
    DENIED_SYSCALLS,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_KILL_PROCESS,
    SYSCALL_NUMBERS,
    seccomp_program,
    write_program_fd,
)

MACHINES = sorted(AUDIT_ARCH)
EPERM = SECCOMP_RET_ERRNO | errno.EPERM
ENOSYS = SECCOMP_RET_ERRNO | errno.ENOSYS
NAMESPACE_FLAGS = {
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWTIME": 0x00000080,
}
FORK_FLAGS = 0x01200011  # glibc fork(): CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD
THREAD_FLAGS = 0x003D0F00  # glibc pthread_create: VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|*_TID
CLONE_THREAD = 0x00010000  # without CLONE_SIGHAND the kernel answers EINVAL before creating anything
UNUSED_UID = 61999


def _evaluate(program: bytes, nr: int, arch: int, args: tuple[int, ...] = (0,) * 6) -> int:
    """Runs a seccomp program on one ``struct seccomp_data`` and returns the action (k of the RET)."""
    data = struct.pack("<IIQ6Q", nr, arch, 0x1000, *args, *(0,) * (6 - len(args)))
    instructions = list(struct.iter_unpack("<HBBI", program))
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = instructions[pc]
        if code == 0x20:  # BPF_LD | BPF_W | BPF_ABS
            (acc,) = struct.unpack_from("<I", data, k)
            pc += 1
        elif code == 0x06:  # BPF_RET | BPF_K
            return k
        else:
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += 1 + (jt if taken else jf)


def test_seccomp_program_unsupported_machine_is_none():
    assert seccomp_program("riscv64") is None
    assert seccomp_program("i686") is None


@pytest.mark.parametrize("machine", MACHINES)
def test_seccomp_program_jumps_stay_inside(machine):
    program = seccomp_program(machine)
    assert program is not None and len(program) % 8 == 0
    instructions = list(struct.iter_unpack("<HBBI", program))
    assert 0 < len(instructions) <= 4096  # BPF_MAXINSNS
    for pc, (code, jt, jf, k) in enumerate(instructions):
        assert code in (0x20, 0x15, 0x35, 0x45, 0x06), (pc, code)
        if code == 0x20:
            assert k % 4 == 0 and k < 64, (pc, k)  # inside struct seccomp_data
        elif code == 0x06:
            assert jt == jf == 0
            assert k in (SECCOMP_RET_ALLOW, EPERM, ENOSYS, SECCOMP_RET_KILL_PROCESS), (pc, hex(k))
        else:
            assert pc + 1 + max(jt, jf) < len(instructions), (pc, jt, jf)
    assert instructions[-1][0] == 0x06  # no path runs off the end


@pytest.mark.parametrize("machine", MACHINES)
def test_seccomp_program_decisions(machine):
    program = seccomp_program(machine)
    arch, numbers = AUDIT_ARCH[machine], SYSCALL_NUMBERS[machine]
    assert set(DENIED_SYSCALLS) <= set(numbers)
    for name in DENIED_SYSCALLS:
        assert _evaluate(program, numbers[name], arch) == EPERM, name
    for flag_name, flag in NAMESPACE_FLAGS.items():
        assert CLONE_NAMESPACE_FLAGS & flag
        assert _evaluate(program, numbers["clone"], arch, (flag | FORK_FLAGS,)) == EPERM, flag_name
    for flags in (FORK_FLAGS, THREAD_FLAGS, 0):
        assert _evaluate(program, numbers["clone"], arch, (flags,)) == SECCOMP_RET_ALLOW, hex(flags)
    assert _evaluate(program, numbers["clone3"], arch) == ENOSYS
    personality = numbers["personality"]
    assert _evaluate(program, personality, arch, (0,)) == SECCOMP_RET_ALLOW
    assert _evaluate(program, personality, arch, (0xFFFFFFFF,)) == SECCOMP_RET_ALLOW
    assert _evaluate(program, personality, arch, (0x0008,)) == EPERM  # PER_LINUX32
    assert _evaluate(program, personality, arch, (0x0040000,)) == EPERM  # ADDR_NO_RANDOMIZE
    for nr in range(0, 470):  # everything else, e.g. read, write, openat, mmap, execve, exit_group
        if nr not in numbers.values():
            assert _evaluate(program, nr, arch) == SECCOMP_RET_ALLOW, nr
    for other in (0x40000003, 0x40000028, 0xC000003E, 0xC00000B7):  # i386, arm, the other 64-bit one
        if other != arch:
            assert _evaluate(program, 0, other) == SECCOMP_RET_KILL_PROCESS, hex(other)
    x32_getpid = 0x40000000 | 39
    expected = EPERM if machine == "x86_64" else SECCOMP_RET_ALLOW
    assert _evaluate(program, x32_getpid, arch) == expected


HEADERS = {
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    "aarch64": Path("/usr/include/asm-generic/unistd.h"),
}


@pytest.mark.parametrize("machine", MACHINES)
def test_syscall_numbers_match_kernel_headers(machine):
    header = HEADERS[machine]
    if not header.exists():
        pytest.skip(f"{header} is absent (install linux-libc-dev to cross-check the table)")
    defined = {
        name: int(value)
        for name, value in re.findall(r"#define __NR(?:3264)?_(\w+)\s+(\d+)\b", header.read_text())
    }
    checked = {name: nr for name, nr in SYSCALL_NUMBERS[machine].items() if name in defined}
    assert checked == {name: defined[name] for name in checked}
    missing = set(SYSCALL_NUMBERS[machine]) - set(defined)
    assert missing <= {"open_tree_attr"}  # newer than old headers; its number is checked by hand


def test_write_program_fd_reads_back_from_start():
    program = seccomp_program("x86_64")
    fd = write_program_fd(program)
    try:
        assert os.read(fd, len(program) + 100) == program
        assert os.get_inheritable(fd) is False  # pass_fds makes it inheritable in the child only
    finally:
        os.close(fd)


# ---- in a real bwrap jail ------------------------------------------------------------------------

PYTHON = "/usr/bin/python3"

PROBE = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def errno_of(nr, args):
    pid = os.fork()  # one child per call: a call that succeeds leaves no trace in the others
    if pid == 0:
        result = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
        os._exit(0 if result >= 0 else ctypes.get_errno())
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

print(json.dumps({label: errno_of(nr, args) for label, nr, args in json.loads(sys.argv[1])}))
"""

# Arguments that do no harm should a call get through: NULL pointers, bad fds, no-op flags.
PROBE_ARGS: dict[str, tuple[int, ...]] = {
    "mount": (0, 0, 0, 0, 0), "umount2": (0, 0), "pivot_root": (0, 0), "chroot": (0,),
    "unshare": (0,), "setns": (-1, 0), "ptrace": (0, 0, 0, 0),  # PTRACE_TRACEME
    "process_vm_readv": (1, 0, 0, 0, 0, 0), "process_vm_writev": (1, 0, 0, 0, 0, 0),
    "kexec_load": (0, 0, 0, 0), "kexec_file_load": (-1, -1, 0, 0, 0), "init_module": (0, 0, 0),
    "finit_module": (-1, 0, 0), "delete_module": (0, 0), "bpf": (0, 0, 0),
    "perf_event_open": (0, 0, -1, -1, 0), "userfaultfd": (1,),  # UFFD_USER_MODE_ONLY
    "keyctl": (0, 0, 0), "add_key": (0, 0, 0, 0, 0), "request_key": (0, 0, 0, 0),
    "open_by_handle_at": (-1, 0, 0), "name_to_handle_at": (-1, 0, 0, 0, 0), "fsopen": (0, 0),
    "fsmount": (-1, 0, 0), "fsconfig": (-1, 0, 0, 0, 0), "fspick": (-1, 0, 0), "open_tree": (-1, 0, 0),
    "open_tree_attr": (-1, 0, 0, 0, 0), "move_mount": (-1, 0, -1, 0, 0), "mount_setattr": (-1, 0, 0, 0, 0),
    "io_uring_setup": (0, 0), "io_uring_enter": (-1, 0, 0, 0, 0, 0), "io_uring_register": (-1, 0, 0, 0),
    "swapon": (0, 0), "swapoff": (0,), "reboot": (0, 0, 0, 0),  # no magic numbers: never reboots
    "syslog": (10, 0, 0), "acct": (0,), "quotactl": (0, 0, 0, 0), "quotactl_fd": (-1, 0, 0, 0),
    "lookup_dcookie": (0, 0, 0), "vhangup": (), "clock_settime": (0, 0), "clock_adjtime": (0, 0),
    "settimeofday": (0, 0), "adjtimex": (0,),
}  # fmt: skip

# Calls whose unfiltered answer here is not EPERM, so EPERM under the filter is the filter's doing.
NOT_EPERM_WITHOUT_FILTER = (
    "mount", "umount2", "chroot", "unshare", "setns", "ptrace", "add_key", "request_key",
    "name_to_handle_at", "clock_settime",
    "clock_adjtime", "adjtimex", "personality(PER_LINUX32)", "clone3",
    *[f"clone({name})" for name in NAMESPACE_FLAGS],
)  # fmt: skip

WORKLOAD = r"""
import ctypes, json, os, socket, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
out = {}
pid = os.fork()
if pid == 0:
    os._exit(7)
out["fork_exit"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
seen = []
threads = [threading.Thread(target=seen.append, args=(i,)) for i in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
out["threads"] = sorted(seen)
out["subprocess"] = subprocess.run(["true"]).returncode
out["echo"] = subprocess.run(["echo", "hi"], capture_output=True, text=True).stdout
with open("/tmp/f", "w") as handle:
    handle.write("data")
out["file"] = open("/tmp/f").read()
left, right = socket.socketpair()
left.sendall(b"ping")
out["socketpair"] = right.recv(4).decode()
out["libc_unshare_newuser"] = 0 if libc.unshare(0x10000000) == 0 else ctypes.get_errno()
out["libc_mount"] = 0 if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0 else ctypes.get_errno()
pid = os.fork()
if pid == 0:
    os._exit(0 if libc.ptrace(0, 0, None, None) == 0 else ctypes.get_errno())
out["libc_ptrace_traceme"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
out["seccomp_mode"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")]
print(json.dumps(out))
"""


def _drop_to_unused_uid() -> None:
    os.setgroups([])
    os.setgid(UNUSED_UID)
    os.setuid(UNUSED_UID)


def _jail(code: str, args: list[str], *, unprivileged: bool, seccomp: bool) -> subprocess.CompletedProcess:
    binds = [arg for path in ("/usr", "/lib", "/lib64", "/bin") if os.path.exists(path)
             for arg in ("--ro-bind", path, path)]  # fmt: skip
    fds = [write_program_fd(seccomp_program())] if seccomp else []
    argv = [
        shutil.which("bwrap") or "bwrap", *binds, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        "--unshare-all", "--die-with-parent", "--cap-drop", "ALL",
        *[arg for fd in fds for arg in ("--seccomp", str(fd))], "--", PYTHON, "-c", code, *args,
    ]  # fmt: skip
    drop = _drop_to_unused_uid if unprivileged and os.geteuid() == 0 else None
    try:
        return subprocess.run(
            argv, pass_fds=fds, preexec_fn=drop, capture_output=True, text=True, timeout=30, env={}
        )
    finally:
        for fd in fds:
            os.close(fd)


@functools.cache
def _jail_problem(unprivileged: bool) -> str | None:
    """Why the jail tests cannot run here, or None when they can."""
    if seccomp_program() is None:
        return f"no seccomp filter for {platform.machine()}"
    if shutil.which("bwrap") is None or not os.access(PYTHON, os.X_OK):
        return f"needs bubblewrap and {PYTHON}"
    if not unprivileged and os.geteuid() != 0:
        return "the root variant needs root"
    result = _jail("print('ok')", [], unprivileged=unprivileged, seccomp=False)
    if result.stdout.strip() != "ok":
        return f"bwrap cannot create namespaces here: {result.stderr.strip()[:200]}"
    return None


def _probes() -> list[tuple[str, int, tuple[int, ...]]]:
    numbers = SYSCALL_NUMBERS[platform.machine()]
    probes = [(name, numbers[name], PROBE_ARGS[name]) for name in DENIED_SYSCALLS]
    probes += [(f"clone({name})", numbers["clone"], (flag | CLONE_THREAD, 0, 0, 0, 0))
               for name, flag in NAMESPACE_FLAGS.items()]  # fmt: skip
    probes += [
        ("clone(CLONE_THREAD)", numbers["clone"], (CLONE_THREAD, 0, 0, 0, 0)),  # EINVAL from the kernel
        ("clone3", numbers["clone3"], (0, 0)),
        ("personality(PER_LINUX32)", numbers["personality"], (0x0008,)),
        ("personality(query)", numbers["personality"], (0xFFFFFFFF,)),
    ]
    if platform.machine() == "x86_64":
        probes.append(("x32 getpid", 0x40000000 | 39, ()))
    return probes


@functools.cache
def _probe_results(unprivileged: bool, seccomp: bool) -> dict[str, int]:
    result = _jail(PROBE, [json.dumps(_probes())], unprivileged=unprivileged, seccomp=seccomp)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


MODES = [pytest.param(False, id="root"), pytest.param(True, id="unprivileged")]


def _skip_unless_jail(unprivileged: bool) -> None:
    problem = _jail_problem(unprivileged)
    if problem is not None:
        pytest.skip(problem)


@pytest.mark.parametrize("unprivileged", MODES)
def test_filter_refuses_denied_calls_in_bwrap(unprivileged):
    _skip_unless_jail(unprivileged)
    got = _probe_results(unprivileged, seccomp=True)
    refused = [*DENIED_SYSCALLS, *[f"clone({name})" for name in NAMESPACE_FLAGS], "personality(PER_LINUX32)"]
    refused += ["x32 getpid"] if platform.machine() == "x86_64" else []
    assert {name: got[name] for name in refused} == {name: errno.EPERM for name in refused}
    assert got["clone3"] == errno.ENOSYS
    assert got["clone(CLONE_THREAD)"] == errno.EINVAL  # reached the kernel: not a namespace clone
    assert got["personality(query)"] == 0


def test_filter_is_what_refuses():
    """Without the filter the same calls get other answers, so the EPERMs above are its doing."""
    _skip_unless_jail(True)
    unfiltered = _probe_results(True, seccomp=False)
    assert all(unfiltered[name] != errno.EPERM for name in NOT_EPERM_WITHOUT_FILTER), unfiltered
    assert unfiltered["clone3"] != errno.ENOSYS
    if platform.machine() == "x86_64":
        assert unfiltered["x32 getpid"] != errno.EPERM  # ENOSYS, or a pid where x32 is built in


def test_denied_syscalls_cover_the_escape_routes():
    """Shrinking the list must be a decision: these stay refused."""
    required = {
        "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "ptrace", "process_vm_readv",
        "process_vm_writev", "kexec_load", "kexec_file_load", "init_module", "finit_module",
        "delete_module", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
        "open_by_handle_at", "name_to_handle_at", "fsopen", "fsmount", "fsconfig", "fspick", "open_tree",
        "move_mount", "mount_setattr", "io_uring_setup", "io_uring_enter", "io_uring_register", "swapon",
        "swapoff", "reboot", "syslog", "acct", "quotactl", "lookup_dcookie", "vhangup", "clock_settime",
        "settimeofday", "adjtimex",
    }  # fmt: skip
    assert required <= set(DENIED_SYSCALLS)
    assert all(reason.strip() for reason in DENIED_SYSCALLS.values())
    assert CLONE_NAMESPACE_FLAGS == functools.reduce(operator.or_, NAMESPACE_FLAGS.values())


@pytest.mark.parametrize("unprivileged", MODES)
def test_ordinary_python_work_runs_under_filter(unprivileged):
    _skip_unless_jail(unprivileged)
    result = _jail(WORKLOAD, [], unprivileged=unprivileged, seccomp=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "fork_exit": 7,
        "threads": [0, 1, 2, 3],  # pthread_create: clone3 -> ENOSYS -> clone without namespace flags
        "subprocess": 0,
        "echo": "hi\n",
        "file": "data",
        "socketpair": "ping",
        "libc_unshare_newuser": errno.EPERM,
        "libc_mount": errno.EPERM,
        "libc_ptrace_traceme": errno.EPERM,
        "seccomp_mode": ["2"],  # SECCOMP_MODE_FILTER
    }
