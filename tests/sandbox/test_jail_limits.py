"""The jail's resources are bounded (issue 14, finding 4).

Each hidden test here is a probe: the program measures a limit from inside the jail and returns
what it found, and the trusted test asserts the bound. Before, /tmp was an unbounded tmpfs, the
work directory had no size or file limit, and nested user namespaces and mounts were allowed.
"""

from __future__ import annotations

import pytest

from calgrpo.sandbox.config import SandboxConfig
from calgrpo.sandbox.isolation import jail_features
from calgrpo.tasks import Problem
from tests.sandbox.verifying import PROMPT, verify_programs

pytestmark = pytest.mark.skipif(not jail_features().bwrap, reason="bubblewrap cannot create a jail here")
LIMITS = SandboxConfig(timeout_s=8.0, cpu_s=8, memory_mb=512, file_size_mb=4, scratch_mb=24, scratch_inodes=500,
                       host_grace_s=3.0)  # fmt: skip
FILL = (
    "    import os\n    total = 0\n    for i in range(1000):\n        try:\n"
    "            with open(os.path.join(x, f'f{i}'), 'wb') as handle:\n"
    "                for _ in range(4):\n                    total += handle.write(b'0' * (1 << 20))\n"
    "        except OSError:\n            break\n    return total\n"
)
COUNT_FILES = (
    "    import os\n    made = 0\n    for i in range(100000):\n        try:\n"
    "            open(os.path.join(x, f'e{i}'), 'w').close()\n            made += 1\n"
    "        except OSError:\n            break\n    return made\n"
)


def _probe(body: str, tests: str) -> bool:
    problem = Problem(id="limits", task="code", prompt=PROMPT, answer="", tests=tests,
                      meta={"format": "humaneval", "entry_point": "solve"})  # fmt: skip
    rows, _, _ = verify_programs(problem, [PROMPT + body], sandbox=LIMITS, workers=1)
    return rows[0].reward == 1.0


@pytest.mark.parametrize("place", ["/tmp", "/sandbox", "/dev/shm"])
def test_writable_places_are_bounded_in_bytes(place: str) -> None:
    limit = LIMITS.scratch_mb << 20
    tests = f"def check(candidate):\n    written = candidate({place!r})\n    assert 4 << 20 <= written <= {limit}\n"
    assert _probe(FILL, tests)


@pytest.mark.parametrize("place", ["/tmp", "/sandbox"])
def test_writable_places_are_bounded_in_files(place: str) -> None:
    tests = f"def check(candidate):\n    assert 100 <= candidate({place!r}) <= {LIMITS.scratch_inodes}\n"
    assert _probe(COUNT_FILES, tests)


@pytest.mark.parametrize("place", ["/", "/dev", "/etc", "/usr"])
def test_the_rest_of_the_filesystem_is_read_only(place: str) -> None:
    body = (
        "    try:\n        open(x + '/calgrpo-probe', 'w').write('1')\n        return 'wrote'\n"
        "    except OSError as exc:\n        return exc.__class__.__name__\n"
    )
    tests = f"def check(candidate):\n    assert candidate({place.rstrip('/')!r}) != 'wrote'\n"
    assert _probe(body, tests)


def test_no_nested_user_namespaces_or_mounts() -> None:
    body = (
        "    import ctypes, os\n    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    results = [libc.unshare(0x10000000), libc.unshare(0x00020000),\n"
        "               libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)]\n"
        "    return results\n"
    )
    assert _probe(body, "def check(candidate):\n    assert candidate(0) == [-1, -1, -1]\n")


def test_seccomp_filter_is_loaded_where_supported() -> None:
    if not jail_features().seccomp:
        pytest.skip("no seccomp filter for this architecture")
    body = "    status = open('/proc/self/status').read()\n    return [l for l in status.splitlines() if l.startswith(x)]\n"
    assert _probe(body, "def check(candidate):\n    assert candidate('Seccomp:') == ['Seccomp:\\t2']\n")
