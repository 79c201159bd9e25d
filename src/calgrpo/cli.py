"""The ``calgrpo`` command: one subcommand per job, help generated from the config dataclasses.

Only dataclasses, tyro and the light error module are imported at the top so that ``--help`` stays
fast; each handler imports torch and the library after parsing. Results go to stdout (``--json``
for machines), logs to stderr. Exit codes: 0 success, 1 runtime failure, 2 usage error.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Sequence

import tyro

from calgrpo.commands import COMMANDS
from calgrpo.errors import CalgrpoError, ConfigError, UnknownNameError

log = logging.getLogger("calgrpo")


def parse(argv: Sequence[str]):
    """``(config, handler)`` for a command line, without running it (exits like argparse on bad usage;
    the configs' own checks raise ConfigError)."""
    argv = _expand_config_file(_joined(argv))
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            config = tyro.extras.subcommand_cli_from_dict(
                {name: cls for name, (cls, _) in COMMANDS.items()}, prog="calgrpo", args=argv
            )
    except SystemExit as exit:
        # A nested config's own check (``--train.learning-rate -1``) reaches tyro as a ValueError,
        # which it shows in a box; it is our one-line usage error like any other.
        cause = _config_error_in(exit)
        if cause is not None:
            raise cause from None
        line = one_line_usage_error(usage.getvalue()) if exit.code else None
        sys.stderr.write(f"calgrpo: error: {line}\n" if line else usage.getvalue())
        raise
    sys.stderr.write(usage.getvalue())
    return config, next(h for cls, h in COMMANDS.values() if isinstance(config, cls))


def one_line_usage_error(box: str) -> str | None:
    """tyro's usage-error box as one line: what is wrong, the flag it suggests, where help is."""
    rows = [row.strip().strip("│").strip() for row in box.splitlines() if row.strip().startswith("│")]
    if not rows:
        return None
    sections: list[list[str]] = [[]]
    for row in rows:
        if row and set(row) <= {"─"}:
            sections.append([])
        elif row:
            sections[-1].append(row)
    first = sections[0]
    flags = [row.split()[0] for row in first[1:] if row.startswith("--")]
    if first and first[0].startswith("Missing from") and flags:  # required options: their names only
        message = f"missing {', '.join(flags)} (required)"
    else:
        message = " ".join(first)
    if "Missing subcommand" in box.splitlines()[0]:
        message = f"no command given: {message[0].lower()}{message[1:]}"
    for section in sections[1:]:
        if section and section[0].startswith("Perhaps you meant") and len(section) > 1:
            message += f"; did you mean {section[1].split()[0]}?"
        elif section and section[-1].startswith("For full helptext"):
            message += f" ({section[-1].removeprefix('For full helptext, ').removesuffix('.')})"
    return message


def _config_error_in(error: BaseException) -> ConfigError | None:
    seen = error.__context__
    while seen is not None:
        if isinstance(seen, ConfigError):
            return seen
        seen = seen.__context__
    return None


def _joined(argv: Sequence[str]) -> list[str]:
    """``calgrpo s3 serve ...`` is ``calgrpo s3-serve ...`` (and ``pipeline X`` is ``pipeline-X``)."""
    argv = list(argv)
    if len(argv) >= 2 and argv[0] in ("s3", "pipeline") and not argv[1].startswith("-"):
        return [f"{argv[0]}-{argv[1]}", *argv[2:]]
    return argv


def _expand_config_file(argv: list[str]) -> list[str]:
    """``calgrpo CMD --config FILE [flags]``: the file's settings as flags before the typed ones,
    which override them (every command takes ``--config``)."""
    positions = [i for i, arg in enumerate(argv) if arg == "--config" or arg.startswith("--config=")]
    if not positions or not argv or argv[0] not in COMMANDS:
        return argv
    from calgrpo.configs import config_file_flags, mapping_flags, merge_mapping_flags

    if len(positions) > 1:
        raise ConfigError("--config given more than once")
    (i,) = positions
    if argv[i] == "--config":
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file")
        path, rest = argv[i + 1], argv[:i] + argv[i + 2 :]
    else:
        path, rest = argv[i].split("=", 1)[1], argv[:i] + argv[i + 1 :]
    cls = COMMANDS[rest[0]][0]
    from_file = config_file_flags(cls, path, _other_entry_points_settings(cls))
    from_file, typed = merge_mapping_flags(from_file, rest[1:], mapping_flags(cls))
    return [rest[0], *from_file, *typed]


def _other_entry_points_settings(cls: type) -> frozenset[str]:
    """One run file drives ``learn`` and every ``pipeline`` command: the settings only the other
    entry points take (a pipeline's registry for learn, learn's run folder for a pipeline) are
    ignored by this one, while a key no entry point knows is still refused."""
    import dataclasses

    from calgrpo.learn import LearnConfig
    from calgrpo.pipelines.local import RunLocalConfig
    from calgrpo.run_config import RunConfig

    if not issubclass(cls, RunConfig):
        return frozenset()
    names = {field.name for c in (LearnConfig, RunLocalConfig) for field in dataclasses.fields(c)}
    return frozenset(names - {field.name for field in dataclasses.fields(cls)})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``calgrpo`` console script."""
    argv = _joined(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug and not _has_field(argv, "debug"):  # every command takes --debug
        argv = [arg for arg in argv if arg != "--debug"]
    # Our own logs at INFO; libraries (Great Expectations, boto, transformers) only warn.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    # Library progress goes through calgrpo.progress; silence the per-file bars of model loading.
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        config, handler = parse(argv)
        return handler(config)
    except (ConfigError, UnknownNameError) as error:
        print(f"calgrpo: error: {error}", file=sys.stderr)
        return 2
    except CalgrpoError as error:
        if debug:
            raise
        print(f"calgrpo: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a wrong path, a folder where a file was expected, no permission
        if debug:
            raise
        print(f"calgrpo: error: {_describe(error)}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 (one line for a person; --debug shows the traceback)
        if debug:
            raise
        print(f"calgrpo: error: {type(error).__name__}: {error} (run with --debug for the traceback)",
              file=sys.stderr)  # fmt: skip
        return 1


def _describe(error: OSError) -> str:
    name = error.filename or str(error)
    if isinstance(error, FileNotFoundError):
        return f"no such file or folder: {name}"
    if isinstance(error, IsADirectoryError):
        return f"{name} is a folder; give a file"
    if isinstance(error, PermissionError):
        return f"permission denied: {name}"
    return f"{error.strerror or type(error).__name__}: {name}"


def _has_field(argv: list[str], name: str) -> bool:
    """Whether the command named in ``argv`` (joined) has its own ``name`` setting."""
    import dataclasses

    cls = COMMANDS.get(argv[0] if argv else "", (None,))[0]
    return cls is not None and name in {f.name for f in dataclasses.fields(cls)}


if __name__ == "__main__":
    sys.exit(main())
