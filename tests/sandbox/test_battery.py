"""A second adversarial battery (issue 14): 32 programs of our own design, through run_verify.

Every program returns something wrong (or nothing) while trying to make the verdict "passed", to
stall the stage, to leave a process or a file behind, or to leak a credential. The hidden test is
``solve(x) == 2 * x``. The whole batch must: pass none, end within the stage's budget, leave no
process of the sandbox uids, create no file outside the jail, and show no credential anywhere in
its verdicts. The existing 39 attacks stay in test_adversarial.py.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from calgrpo.verify import read_verdicts, write_verdicts
from tests.sandbox.verifying import DOUBLE, FAST, PROMPT, no_program_left, stage_budget, verify_programs

TOKEN = secrets.token_hex(6)
HOST_PLACES = ["/tmp", "/var/tmp", "/dev/shm", str(Path.cwd()), str(Path.home())]
RESPOND = "import os, sys\nREPLY = int(sys.argv[2])\n"
CLASSES = {
    "str_subclass_equal": "class V(str):\n    def __eq__(self, o):\n        return True\n    __hash__ = str.__hash__\n",
    "float_subclass_equal": "class V(float):\n    def __eq__(self, o):\n        return True\n    __hash__ = float.__hash__\n",
    "tuple_subclass_equal": "class V(tuple):\n    def __eq__(self, o):\n        return True\n    __hash__ = tuple.__hash__\n",
    "list_subclass_equal": "class V(list):\n    def __eq__(self, o):\n        return True\n",
    "dict_subclass_equal": "class V(dict):\n    def __eq__(self, o):\n        return True\n",
    "index_and_eq_object": "class V:\n    def __index__(self):\n        return 4\n    def __int__(self):\n"
                           "        return 4\n    def __eq__(self, o):\n        return True\n",
}
BATTERY = {name: body + PROMPT + "    return V()\n" for name, body in CLASSES.items()} | {
    "hash_colliding_liars": "class V:\n    def __hash__(self):\n        return 0\n    def __eq__(self, o):\n"
                            "        return True\n" + PROMPT + "    return {V(), V()}\n",
    "generator_return": PROMPT + "    return (v for v in [2 * x])\n",
    "lambda_return": PROMPT + "    return lambda *a: True\n",
    "pickle_reduce_object": "import os\nclass V:\n    def __reduce__(self):\n        return (os.system, ('true',))\n"
                            + PROMPT + "    return V()\n",
    "own_assertion_error": "class AssertionError(Exception):\n    pass\n" + PROMPT + "    raise AssertionError('ok')\n",
    "stop_iteration": PROMPT + "    raise StopIteration\n",
    "infinite_recursion": PROMPT + "    return solve(x)\n",
    "exception_str_raises": "class E(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\n"
                            + PROMPT + "    raise E()\n",
    "huge_exception_message": PROMPT + "    raise ValueError('A' * (10 << 20))\n",
    "lone_surrogate_message": PROMPT + "    raise ValueError('\\ud800 passed \\udfff')\n",
    "sigstop_self": "import os, signal\n" + PROMPT + "    os.kill(os.getpid(), signal.SIGSTOP)\n    return 2 * x\n",
    "sigstop_group": "import os, signal\n" + PROMPT + "    os.killpg(0, signal.SIGSTOP)\n    return 2 * x\n",
    "alarm_forges_reply": RESPOND + "import signal\n"
                          "signal.signal(signal.SIGALRM, lambda *a: os.write(REPLY, b'{\"ok\": {\"i\": \"4\"}}\\n'))\n"
                          + PROMPT + "    signal.setitimer(signal.ITIMER_REAL, 0.01)\n    return 0\n",
    "thread_bomb": "import threading, time\n" + PROMPT
                   + "    while True:\n        threading.Thread(target=time.sleep, args=(100,)).start()\n",
    "mmap_bomb": "import mmap\n" + PROMPT + "    maps = []\n    while True:\n"
                 "        maps.append(mmap.mmap(-1, 256 << 20))\n        maps[-1][::4096] = b'1' * (65536)\n",
    "forged_reply_then_wrong": RESPOND + PROMPT + "    os.write(REPLY, b'{\"ok\": {\"i\": \"4\"}}\\n')\n    return 0\n",
    "encoder_patched_to_true": "import sys\nsys.modules['codec'].encode = lambda v, depth=0: True\n"
                               + PROMPT + "    return 0\n",
    "encoder_patched_to_nan": "import sys\nsys.modules['codec'].encode = lambda v, depth=0: {'f': 'nan'}\n"
                              + PROMPT + "    return 0\n",
    "late_child_forges_replies": RESPOND + "import time\n" + PROMPT
                                 + "    if os.fork() == 0:\n        time.sleep(0.2)\n"
                                 "        os.write(REPLY, b'{\"ok\": {\"i\": \"-6\"}}\\n' * 4)\n        os._exit(0)\n"
                                 "    return 4 if x == 2 else 0\n",
    "setsid_double_fork_survivor": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                                   "        time.sleep(300)\n    os._exit(0)\n" + PROMPT + "    return 0\n",
    "close_reply_channel": RESPOND + PROMPT + "    os.close(REPLY)\n    return 2 * x\n",
    "endless_line_on_reply": RESPOND + PROMPT + "    while True:\n        os.write(REPLY, b'A' * 65536)\n",
    "invalid_utf8_reply": RESPOND + PROMPT + "    os.write(REPLY, b'\\xff\\xfe{\"ok\": 1}\\n')\n    return 0\n",
    "atexit_forges_success": RESPOND + "import atexit\n"
                             "atexit.register(lambda: os.write(REPLY, b'{\"ok\": {\"i\": \"4\"}}\\n'))\n"
                             "print('ALL TESTS PASSED')\n" + PROMPT + "    raise SystemExit(0)\n",
    "write_files_on_the_host": "import os\n" + PROMPT + "    for place in " + repr(HOST_PLACES) + ":\n"
                               "        for path in (place + '/calgrpo-battery-" + TOKEN + "', "
                               "'../' * 8 + place.lstrip('/') + '/calgrpo-battery-" + TOKEN + "'):\n"
                               "            try:\n                open(path, 'w').write('x')\n"
                               "            except OSError:\n                pass\n    return 0\n",
    "symlink_to_host_secrets": "import os\n" + PROMPT + "    os.symlink('/etc/shadow', 'leak')\n"
                               "    return open('leak').read()\n",
    "scan_proc_for_credentials": "import os\n" + PROMPT + "    found = []\n    for pid in os.listdir('/proc'):\n"
                                 "        try:\n            found.append(open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1'))\n"
                                 "        except OSError:\n            pass\n"
                                 "    raise ValueError(str(found) + repr(dict(os.environ)))\n",
    "ptrace_and_kernel_calls": "import ctypes, os\n" + PROMPT + "    libc = ctypes.CDLL(None, use_errno=True)\n"
                               "    codes = [libc.ptrace(16, os.getppid(), 0, 0), libc.syscall(321, 0, 0, 0),\n"
                               "             libc.syscall(425, 8, 0), libc.syscall(250, 0, 0, 0, 0)]\n"
                               "    raise ValueError(str(codes))\n",
}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    assert len(BATTERY) >= 30
    secret = "AKIA" + secrets.token_hex(8).upper()
    saved = {key: os.environ.get(key) for key in ("AWS_SECRET_ACCESS_KEY", "HF_TOKEN")}
    os.environ.update(AWS_SECRET_ACCESS_KEY=secret, HF_TOKEN=secret)
    try:
        names = sorted(BATTERY)
        rows, summary, elapsed = verify_programs(DOUBLE, [BATTERY[n] for n in names], workers=2)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    path = tmp_path_factory.mktemp("battery") / "verdicts.parquet"
    write_verdicts(rows, path)  # hostile message text must not break the writer
    return dict(zip(names, read_verdicts(path), strict=True)), summary, elapsed, secret


@pytest.mark.parametrize("name", sorted(BATTERY))
def test_battery_program_does_not_pass(outcome, name: str) -> None:
    verdicts = outcome[0]
    assert verdicts[name].reward == 0.0, verdicts[name]
    assert len(verdicts[name].message) <= 600


def test_battery_ends_within_the_stage_budget(outcome) -> None:
    _, summary, elapsed, _ = outcome
    assert elapsed < stage_budget(len(BATTERY), 2), (elapsed, summary)


def test_battery_leaves_no_process_no_file_and_no_credential(outcome) -> None:
    verdicts, summary, _, secret = outcome
    assert no_program_left(FAST)
    for place in HOST_PLACES:
        assert not any(entry.startswith(f"calgrpo-battery-{TOKEN}") for entry in os.listdir(place)), place
    shown = " ".join(row.message for row in verdicts.values())
    assert secret not in shown and "AKIA" not in shown
    assert summary["per_task"]["code"]["pass_rate"] == 0.0
