"""A seccomp filter for the code sandbox, compiled to classic BPF with the standard library alone.

bubblewrap loads it with ``bwrap --seccomp FD``: FD holds an array of ``struct sock_filter``
(``u16 code; u8 jt; u8 jf; u32 k``, native byte order, no header), which bwrap reads to the end and
installs just before it executes the sandboxed program. The filter, in order:

1. ``seccomp_data.arch`` must be this machine's AUDIT_ARCH, or the process is killed: a 64-bit
   filter must not judge i386 (``int 0x80``) or compat syscalls, whose numbers mean other things.
2. On x86_64, numbers with the x32 bit set (``nr >= 0x40000000``) get EPERM: the x32 ABI reaches the
   same kernel functions under other numbers.
3. Every syscall in :data:`DENIED_SYSCALLS` gets EPERM.
4. ``clone`` with any namespace flag in its flags (arg0 on both architectures) gets EPERM; plain
   ``fork``, ``vfork`` and thread creation pass.
5. ``clone3`` gets ENOSYS: its flags sit behind a pointer the filter cannot read, and ENOSYS makes
   glibc fall back to ``clone``, which step 4 judges.
6. ``personality`` passes only for 0 (PER_LINUX) and 0xffffffff (the query); otherwise EPERM.
7. Everything else is allowed.

The jail already runs in new namespaces with every capability dropped, so most of these calls would
fail anyway; the filter removes the kernel attack surface behind them (namespace, mount, BPF,
io_uring, keyring and module code) and keeps a program from nesting namespaces of its own.
"""

from __future__ import annotations

import errno
import os
import platform
import struct

DENIED_SYSCALLS: dict[str, str] = {
    "mount": "mounting would reshape the jail's filesystem view",
    "umount2": "unmounting could uncover what the jail's mounts hide",
    "pivot_root": "changes the root of the mount namespace",
    "chroot": "a new root is the first step of classic chroot escapes",
    "unshare": "new namespaces give the program a user namespace with full capabilities",
    "setns": "joining another namespace leaves the jail",
    "ptrace": "tracing lets one process rewrite another's memory and registers",
    "process_vm_readv": "reads another process's memory",
    "process_vm_writev": "writes another process's memory",
    "kexec_load": "loads a new kernel",
    "kexec_file_load": "loads a new kernel",
    "init_module": "loads kernel code",
    "finit_module": "loads kernel code",
    "delete_module": "unloads kernel code",
    "bpf": "eBPF programs run in the kernel and are a frequent exploit vector",
    "perf_event_open": "performance counters leak side channels and are a frequent exploit vector",
    "userfaultfd": "lets a program stall kernel page faults, a staple of race exploits",
    "keyctl": "the kernel keyring is shared state outside the jail's namespaces",
    "add_key": "the kernel keyring is shared state outside the jail's namespaces",
    "request_key": "the kernel keyring is shared state outside the jail's namespaces",
    "open_by_handle_at": "opens files by handle, bypassing the jail's path view (the 'shocker' escape)",
    "name_to_handle_at": "produces file handles for open_by_handle_at",
    "fsopen": "new mount API: creates a filesystem context",
    "fsmount": "new mount API: turns a context into a mount",
    "fsconfig": "new mount API: configures a filesystem context",
    "fspick": "new mount API: reopens an existing mount for reconfiguration",
    "open_tree": "new mount API: clones mount trees",
    "open_tree_attr": "new mount API: clones mount trees with new attributes (Linux 6.15)",
    "move_mount": "new mount API: attaches mounts",
    "mount_setattr": "new mount API: changes mount flags such as read-only",
    "io_uring_setup": "io_uring bypasses syscall filtering and is a frequent exploit vector",
    "io_uring_enter": "io_uring bypasses syscall filtering and is a frequent exploit vector",
    "io_uring_register": "io_uring bypasses syscall filtering and is a frequent exploit vector",
    "swapon": "changes the host's swap",
    "swapoff": "changes the host's swap",
    "reboot": "reboots the machine or the pid namespace",
    "syslog": "reads the kernel log, which leaks kernel addresses",
    "acct": "switches process accounting",
    "quotactl": "manipulates filesystem quotas",
    "quotactl_fd": "manipulates filesystem quotas",
    "lookup_dcookie": "resolves kernel directory cookies (profiling interface)",
    "vhangup": "hangs up the controlling terminal",
    "clock_settime": "sets the system clock (shared with the host unless a time namespace)",
    "clock_adjtime": "adjusts the system clock",
    "settimeofday": "sets the system clock",
    "adjtimex": "adjusts the system clock",
}
"""Syscalls the filter refuses with EPERM whatever their arguments, each with why."""

CLONE_NAMESPACE_FLAGS = (
    0x10000000  # CLONE_NEWUSER
    | 0x00020000  # CLONE_NEWNS
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x00000080  # CLONE_NEWTIME (inside clone()'s exit-signal byte; no valid signal sets it)
)
"""``clone`` flags that make new namespaces; a clone with any of them gets EPERM."""

PERSONALITY_ALLOWED = (0x00000000, 0xFFFFFFFF)
"""``personality`` arguments let through: PER_LINUX and the query (the kernel reads only 32 bits)."""

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
"""``seccomp_data.arch`` of each supported machine (AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64)."""

X32_SYSCALL_BIT = 0x40000000

# Syscall numbers. x86_64: arch/x86/entry/syscalls/syscall_64.tbl ("common"/"64" rows); aarch64:
# the generic table, include/uapi/asm-generic/unistd.h (scripts/syscall.tbl since Linux 6.11).
# Checked against the Linux 6.1 uapi headers (asm/unistd_64.h, asm-generic/unistd.h);
# open_tree_attr (467 on both) is newer than those headers and comes from the 6.15 tables.
SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {
        "clone": 56, "ptrace": 101, "syslog": 103, "personality": 135, "vhangup": 153,
        "pivot_root": 155, "adjtimex": 159, "chroot": 161, "acct": 163, "settimeofday": 164,
        "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
        "init_module": 175, "delete_module": 176, "quotactl": 179, "lookup_dcookie": 212,
        "clock_settime": 227, "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250,
        "unshare": 272, "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304,
        "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311,
        "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "clone3": 435, "mount_setattr": 442, "quotactl_fd": 443, "open_tree_attr": 467,
    },
    "aarch64": {
        "lookup_dcookie": 18, "umount2": 39, "mount": 40, "pivot_root": 41, "chroot": 51,
        "vhangup": 58, "quotactl": 60, "acct": 89, "personality": 92, "unshare": 97,
        "kexec_load": 104, "init_module": 105, "delete_module": 106, "clock_settime": 112,
        "syslog": 116, "ptrace": 117, "reboot": 142, "settimeofday": 170, "adjtimex": 171,
        "add_key": 217, "request_key": 218, "keyctl": 219, "clone": 220, "swapon": 224,
        "swapoff": 225, "perf_event_open": 241, "name_to_handle_at": 264, "open_by_handle_at": 265,
        "clock_adjtime": 266, "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271,
        "finit_module": 273, "bpf": 280, "userfaultfd": 282, "kexec_file_load": 294,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "clone3": 435, "mount_setattr": 442, "quotactl_fd": 443, "open_tree_attr": 467,
    },
}  # fmt: skip

# Classic BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_JSET_K = 0x45
BPF_RET_K = 0x06
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

# struct seccomp_data offsets: nr (u32), arch (u32), instruction_pointer (u64), args[6] (u64 each).
# Both supported machines are little-endian, so an argument's low 32 bits come first.
OFFSET_NR = 0
OFFSET_ARCH = 4
OFFSET_ARG0_LOW = 16

SOCK_FILTER = struct.Struct("<HBBI")  # little-endian = native on x86_64 and aarch64
MAX_JUMP = 255


def seccomp_program(machine: str | None = None) -> bytes | None:
    """The compiled filter for ``machine`` (``platform.machine()`` by default), None if unsupported.

    Supported: ``x86_64`` and ``aarch64``. On anything else the caller runs without a filter (and says
    so). The result is ``8 * n`` bytes: n ``struct sock_filter`` records for ``bwrap --seccomp``.
    """
    machine = platform.machine() if machine is None else machine
    if machine not in AUDIT_ARCH:
        return None
    numbers = SYSCALL_NUMBERS[machine]
    eperm = SECCOMP_RET_ERRNO | errno.EPERM
    enosys = SECCOMP_RET_ERRNO | errno.ENOSYS
    # (code, jt, jf, k); jt/jf are label names resolved by _assemble, or 0 for the next instruction.
    code: list[tuple[int, int | str, int | str, int] | str] = [
        (BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
        (BPF_JEQ_K, 0, "kill", AUDIT_ARCH[machine]),
        (BPF_LD_W_ABS, 0, 0, OFFSET_NR),
    ]
    if machine == "x86_64":
        code.append((BPF_JGE_K, "eperm", 0, X32_SYSCALL_BIT))
    for name in DENIED_SYSCALLS:
        code.append((BPF_JEQ_K, "eperm", 0, numbers[name]))
    code += [
        (BPF_JEQ_K, "clone", 0, numbers["clone"]),
        (BPF_JEQ_K, "enosys", 0, numbers["clone3"]),
        (BPF_JEQ_K, "personality", 0, numbers["personality"]),
        "allow",
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        "clone",
        (BPF_LD_W_ABS, 0, 0, OFFSET_ARG0_LOW),
        (BPF_JSET_K, "eperm", "allow2", CLONE_NAMESPACE_FLAGS),
        "personality",
        (BPF_LD_W_ABS, 0, 0, OFFSET_ARG0_LOW),
        *[(BPF_JEQ_K, "allow2", 0, value) for value in PERSONALITY_ALLOWED],
        "eperm",  # other personalities fall through to here
        (BPF_RET_K, 0, 0, eperm),
        "allow2",  # BPF jumps only forward, so the allow above cannot be reused
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        "enosys",
        (BPF_RET_K, 0, 0, enosys),
        "kill",
        (BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
    ]
    return _assemble(code)


def _assemble(code: list[tuple[int, int | str, int | str, int] | str]) -> bytes:
    """Packs instructions, resolving label names in jt/jf to forward offsets (at most 255)."""
    labels: dict[str, int] = {}
    instructions: list[tuple[int, int | str, int | str, int]] = []
    for item in code:
        if isinstance(item, str):
            labels[item] = len(instructions)
        else:
            instructions.append(item)
    out = bytearray()
    for index, (op, jt, jf, k) in enumerate(instructions):
        offsets = [labels[j] - index - 1 if isinstance(j, str) else j for j in (jt, jf)]
        for offset in offsets:
            if not 0 <= offset <= MAX_JUMP:
                raise ValueError(f"seccomp: jump of {offset} at instruction {index} is outside 0..255")
        out += SOCK_FILTER.pack(op, offsets[0], offsets[1], k)
    return bytes(out)


def write_program_fd(program: bytes) -> int:
    """A readable fd holding ``program`` from its start, for ``bwrap --seccomp FD`` via ``pass_fds``.

    An anonymous memory file (close-on-exec here; ``pass_fds`` makes it inheritable in the child).
    bwrap reads it to the end, so use one fd per launch and close it after starting the process.
    """
    fd = os.memfd_create("calgrpo-seccomp", os.MFD_CLOEXEC)
    try:
        view = memoryview(program)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
