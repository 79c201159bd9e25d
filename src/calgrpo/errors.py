"""The project's own exception classes.

Every message names what failed, the offending value, and the fix or the valid choices.
Library code raises these; only process boundaries (the CLI) catch broadly.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CalgrpoError(Exception):
    """Base class of every error calgrpo raises on purpose."""


class InvalidInputError(CalgrpoError, ValueError):
    """An argument has the wrong shape, type or value."""


class ConfigError(CalgrpoError, ValueError):
    """A configuration field is out of its documented range."""


class UnknownNameError(CalgrpoError, KeyError):
    """A registry lookup used a name nobody registered."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        valid = sorted(valid)
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        self.message = f"unknown {kind} {name!r}; valid names: {', '.join(valid) or '(none)'}.{hint}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.message


class DuplicateNameError(CalgrpoError, ValueError):
    """A registry already holds an entry under this name."""


def check_ranges(owner: str, config: object, rules: dict[str, tuple[bool, str]]) -> None:
    """Raise :class:`ConfigError` for the first field whose rule fails.

    ``rules`` maps a field name to (rule holds, what the rule requires), e.g.
    ``{"learning_rate": (self.learning_rate > 0, "> 0")}``.
    """
    for name, (holds, requirement) in rules.items():
        if not holds:
            raise ConfigError(f"{owner}: {name} must be {requirement}, got {getattr(config, name)!r}")
