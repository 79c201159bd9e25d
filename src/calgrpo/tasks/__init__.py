"""Task types: prompt formatting, verifier, feedback. Importing this package registers them."""

from calgrpo.tasks import code as _code  # noqa: F401  (registers "code")
from calgrpo.tasks import codebreak as _codebreak  # noqa: F401  (registers "codebreak")
from calgrpo.tasks import gsm8k as _gsm8k  # noqa: F401  (registers "gsm8k")
from calgrpo.tasks import guess as _guess  # noqa: F401  (registers "guess")
from calgrpo.tasks import math as _math  # noqa: F401  (registers "math")
from calgrpo.tasks.base import (
    TASKS,
    FeedbackMode,
    Problem,
    SyntheticTask,
    Task,
    Verdict,
    get_task,
    register_task,
    synthetic_task,
    verify_batch,
)  # fmt: skip

__all__ = [
    "TASKS", "FeedbackMode", "Problem", "SyntheticTask", "Task", "Verdict", "build_tasks", "get_task",
    "register_task", "synthetic_task", "verify_batch",
]  # fmt: skip


def build_tasks(names, *, sandbox=None, workers=None, math_timeout_s: float = 5.0) -> dict[str, Task]:
    """One instance per task name, with the verifier resources the heavy ones need."""
    params = {
        "code": {"sandbox": sandbox, "workers": workers},
        "math": {"workers": workers, "timeout_s": math_timeout_s},
    }
    return {name: get_task(name, **params.get(name, {})) for name in sorted(names)}
