"""Task types: prompt formatting, verifier, feedback. Importing this package registers them."""

from calgrpo.tasks import guess as _guess  # noqa: F401  (registers "guess")
from calgrpo.tasks.base import TASKS, FeedbackMode, Problem, Task, Verdict, get_task, register_task

__all__ = ["TASKS", "FeedbackMode", "Problem", "Task", "Verdict", "get_task", "register_task"]
