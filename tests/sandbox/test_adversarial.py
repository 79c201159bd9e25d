"""Adversarial programs: none may pass, none may touch the host, the verifier survives them all.

Each program returns wrong answers (or reaches for something it must not have) while trying to make
the verdict say "passed" or to escape. The hidden test is HumanEval style: ``solve(x) == 2 * x``,
or, for the escape attempts, equality with a secret that only an escape could produce.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time

import pytest

from calgrpo.sandbox.config import SandboxConfig
from calgrpo.sandbox.isolation import choose_isolation
from calgrpo.sandbox.judge import JudgePool
from calgrpo.sandbox.uids import UID_RANGE, processes_of

PROMPT = 'def solve(x):\n    """Return twice x."""\n'
DOUBLE_TESTS = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-3) == -6\n"
FAST = SandboxConfig(timeout_s=3.0, cpu_s=3, memory_mb=512, file_size_mb=2, processes=16, output_bytes=2048)

@pytest.fixture(scope="module", autouse=True)
def _pools():
    yield
    for pool in POOLS.values():
        pool.close()


POOLS: dict[SandboxConfig, JudgePool] = {}


def run_tests(program: str, tests: str, *, setup: str, entry_point: str, config: SandboxConfig):
    """One verification through the judge pool the code task uses (one pool per config)."""
    if config not in POOLS:
        POOLS[config] = JudgePool(1, config)
    return POOLS[config].run(program, tests, setup=setup, entry_point=entry_point)


def _run(body: str, tests: str = DOUBLE_TESTS, config: SandboxConfig = FAST):
    return run_tests(body, tests, setup=PROMPT, entry_point="solve", config=config)


def _secret_tests(secret: str) -> str:
    return f"def check(candidate):\n    assert candidate(0) == {secret!r}\n"


def _no_process_left() -> bool:
    return processes_of(range(FAST.uid_base, FAST.uid_base + UID_RANGE)) == []


FORGERIES = {
    "sys_exit_at_load": "import sys\nsys.exit(0)\n",
    "os_exit_at_load": "import os\nos._exit(0)\n",
    "sys_exit_in_call": PROMPT + "    import sys\n    sys.exit(0)\n",
    "os_exit_in_call": PROMPT + "    import os\n    os._exit(0)\n",
    "system_exit_in_finally": PROMPT
    + "    try:\n        return 0\n    finally:\n        raise SystemExit(0)\n",
    "keyboard_interrupt": PROMPT + "    raise KeyboardInterrupt\n",
    "patch_builtins": (
        "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n"
        "builtins.isinstance = lambda *a: True\nbuiltins.print = lambda *a, **k: None\n"
        + PROMPT
        + "    return 0\n"
    ),
    "define_fake_check": PROMPT + "    return 0\n\ndef check(candidate):\n    return True\n",
    "print_fake_success": "print('ALL TESTS PASSED')\nprint('{\"passed\": true}')\n"
    + PROMPT
    + "    return 0\n",
    "always_equal_object": (
        "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
        + PROMPT
        + "    return Anything()\n"
    ),
    "int_subclass_equal": (
        "class Sly(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        + PROMPT
        + "    return Sly(0)\n"
    ),
    "forge_protocol_messages": (
        'import os\nfor fd in range(3, 12):\n    try:\n        os.write(fd, b\'{"ready": ["solve"]}\\n{"ok": {"i": "4"}}\\n\')\n'
        "    except OSError:\n        pass\n" + PROMPT + "    return 0\n"
    ),
    "rewrite_runner_files": (
        "import os\nfor name in ('runner.py', 'codec.py'):\n    open(name, 'w').write('PASSED = True')\n"
        + PROMPT
        + "    return 0\n"
    ),
    "kill_parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + PROMPT + "    return 0\n",
    "kill_everything": "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n",
    "ignore_sigterm_and_spin": "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    + PROMPT
    + "    while True:\n        pass\n",
    "huge_return_value": PROMPT + "    return 'x' * (50 << 20)\n",
    "deep_return_value": PROMPT + "    v = []\n    for _ in range(10000):\n        v = [v]\n    return v\n",
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_success_fails(name: str) -> None:
    result = _run(FORGERIES[name])
    assert not result.passed, result
    assert _no_process_left()


def test_infinite_loop_at_load_times_out() -> None:
    started = time.monotonic()
    result = _run("while True:\n    pass\n")
    assert not result.passed and result.timed_out
    assert time.monotonic() - started < FAST.timeout_s + 5


def test_sleeping_past_the_timeout_is_killed() -> None:
    result = _run(PROMPT + "    import time\n    time.sleep(100)\n")
    assert not result.passed and result.timed_out
    assert _no_process_left()


def test_fork_bomb_is_contained() -> None:
    result = _run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    assert not result.passed
    assert _no_process_left()
    assert _run(PROMPT + "    return 2 * x\n").passed  # the slot still works afterwards


def test_memory_bomb_is_contained() -> None:
    result = _run(PROMPT + "    blocks = []\n    while True:\n        blocks.append(bytearray(64 << 20))\n")
    assert not result.passed
    assert "MemoryError" in result.message or result.crashed


def test_huge_output_is_capped() -> None:
    result = _run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n")
    assert not result.passed
    assert len(result.stdout) <= FAST.output_bytes


def test_filling_the_disk_is_capped(tmp_path) -> None:
    result = _run(
        PROMPT
        + "    with open('big.bin', 'wb') as f:\n        while True:\n            f.write(b'0' * (1 << 20))\n"
    )
    assert not result.passed


def test_writing_outside_the_work_dir_does_not_reach_the_host(tmp_path) -> None:
    targets = [tmp_path / "escaped.txt", f"/tmp/calgrpo-escape-{secrets.token_hex(4)}"]
    body = "".join(
        f"try:\n    open({str(t)!r}, 'w').write('pwned')\nexcept OSError:\n    pass\n" for t in targets
    )
    result = _run(body + PROMPT + "    return 0\n")
    assert not result.passed
    for target in targets:
        assert not os.path.exists(target)


def test_reading_a_host_secret_file_fails(tmp_path) -> None:
    secret = secrets.token_hex(16)
    path = tmp_path / "secret.txt"
    path.write_text(secret)
    os.chmod(path, 0o600)
    result = _run(PROMPT + f"    return open({str(path)!r}).read()\n", tests=_secret_tests(secret))
    assert not result.passed


def test_reading_etc_shadow_fails() -> None:
    with open("/etc/shadow") as handle:
        shadow = handle.read()
    result = _run(PROMPT + "    return open('/etc/shadow').read()\n", tests=_secret_tests(shadow))
    assert not result.passed


def test_environment_secrets_never_reach_the_program(monkeypatch) -> None:
    fake_key = "AKIA" + secrets.token_hex(8).upper()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", fake_key)
    monkeypatch.setenv("HF_TOKEN", fake_key)
    body = (
        "import os\nprint(dict(os.environ))\n"
        + PROMPT
        + "    return os.environ.get('AWS_SECRET_ACCESS_KEY', '') + os.environ.get('HF_TOKEN', '')\n"
    )
    result = _run(body, tests=_secret_tests(fake_key + fake_key))
    assert not result.passed
    assert fake_key not in result.stdout + result.stderr + result.message


def test_proc_does_not_expose_the_host(monkeypatch) -> None:
    fake_key = "SECRET" + secrets.token_hex(8)
    monkeypatch.setenv("CALGRPO_TEST_SECRET", fake_key)
    body = PROMPT + (
        "    import os\n    found = ''\n    for pid in os.listdir('/proc'):\n"
        "        for name in ('environ', 'cmdline', 'root/proc/self/environ'):\n"
        "            try:\n                found += open(f'/proc/{pid}/{name}', 'rb').read().decode('latin-1')\n"
        "            except OSError:\n                pass\n"
        f"    return {fake_key!r} if {fake_key!r} in found else found[:50]\n"
    )
    result = _run(body, tests=_secret_tests(fake_key))
    assert not result.passed


def test_parent_memory_is_out_of_reach() -> None:
    body = PROMPT + (
        "    import os\n    try:\n        open(f'/proc/{os.getppid()}/mem', 'rb').read(16)\n        return 'read'\n"
        "    except OSError:\n        return 'denied'\n"
    )
    assert not _run(body, tests=_secret_tests("read")).passed


def test_network_to_a_loopback_listener_is_blocked() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    connections = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
                connections.append(connection)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    body = PROMPT + (
        "    import socket\n    try:\n"
        f"        socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
        "        return 'connected'\n    except OSError:\n        return 'blocked'\n"
    )
    try:
        result = _run(body, tests=_secret_tests("connected"))
    finally:
        stop.set()
        thread.join()
        server.close()
    assert not result.passed
    assert connections == []


def test_subprocesses_cannot_escape(tmp_path) -> None:
    secret = secrets.token_hex(8)
    (tmp_path / "s.txt").write_text(secret)
    body = PROMPT + (
        "    import subprocess\n"
        "    subprocess.Popen(['sh', '-c', 'sleep 60'], start_new_session=True)\n"
        f"    out = subprocess.run(['cat', {str(tmp_path / 's.txt')!r}], capture_output=True, text=True)\n"
        "    return out.stdout\n"
    )
    result = _run(body, tests=_secret_tests(secret))
    assert not result.passed
    assert _no_process_left()  # the detached sleeper was killed too


def test_many_open_files_are_capped() -> None:
    body = PROMPT + "    handles = [open('f%d' % i, 'w') for i in range(10000)]\n    return 2 * x\n"
    result = _run(body)
    assert not result.passed
    assert "Too many open files" in result.message


def test_isolation_level_is_recorded_and_strict_mode_works() -> None:
    result = _run(PROMPT + "    return 2 * x\n")
    assert result.passed
    assert result.isolation == choose_isolation(FAST)
    if result.isolation == "bwrap":
        strict = SandboxConfig(timeout_s=3.0, strict=True)
        assert run_tests(
            PROMPT + "    return 2 * x\n", DOUBLE_TESTS, setup=PROMPT, entry_point="solve", config=strict
        ).passed


FALLBACK = SandboxConfig(
    timeout_s=3.0, cpu_s=3, memory_mb=512, file_size_mb=2, processes=16, isolation="unshare+setuid"
)


@pytest.mark.skipif(os.geteuid() != 0, reason="unshare+setuid isolation needs root")
@pytest.mark.parametrize("name", ["sys_exit_at_load", "patch_builtins", "always_equal_object", "kill_parent"])
def test_fallback_isolation_still_refuses_forgeries(name: str) -> None:
    result = run_tests(FORGERIES[name], DOUBLE_TESTS, setup=PROMPT, entry_point="solve", config=FALLBACK)
    assert result.isolation == "unshare+setuid"
    assert not result.passed


@pytest.mark.skipif(os.geteuid() != 0, reason="unshare+setuid isolation needs root")
def test_fallback_isolation_blocks_network_secrets_and_root_files(tmp_path, monkeypatch) -> None:
    fake_key = secrets.token_hex(8)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", fake_key)
    (tmp_path / "root_only.txt").write_text(fake_key)
    os.chmod(tmp_path / "root_only.txt", 0o600)
    body = PROMPT + (
        "    import os, socket\n    got = os.environ.get('AWS_SECRET_ACCESS_KEY', '')\n"
        f"    try:\n        got += open({str(tmp_path / 'root_only.txt')!r}).read()\n    except OSError:\n        pass\n"
        "    try:\n        socket.create_connection(('127.0.0.1', 22), timeout=1)\n        got += 'net'\n"
        "    except OSError:\n        pass\n    return got\n"
    )
    result = run_tests(body, _secret_tests(fake_key), setup=PROMPT, entry_point="solve", config=FALLBACK)
    assert result.isolation == "unshare+setuid"
    assert not result.passed
    assert "Incorrect" not in result.message and fake_key not in result.message
