"""The ``calgrpo`` command: one subcommand per job, help generated from the config dataclasses.

Only dataclasses, tyro and the light error module are imported at the top so that ``--help`` stays
fast; each handler imports torch and the library after parsing. Results go to stdout (``--json``
for machines), logs to stderr. Exit codes: 0 success, 1 runtime failure, 2 usage error.
"""

from __future__ import annotations

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
    argv = list(argv)
    if len(argv) >= 2 and argv[0] in ("s3", "pipeline") and not argv[1].startswith("-"):
        argv = [f"{argv[0]}-{argv[1]}", *argv[2:]]  # `calgrpo s3 serve` is `calgrpo s3-serve`
    argv = _expand_config_file(argv)
    config = tyro.extras.subcommand_cli_from_dict(
        {name: cls for name, (cls, _) in COMMANDS.items()}, prog="calgrpo", args=argv
    )
    return config, next(h for cls, h in COMMANDS.values() if isinstance(config, cls))


def _expand_config_file(argv: list[str]) -> list[str]:
    """``calgrpo CMD --config FILE [flags]``: the file's settings as flags before the typed ones,
    which override them (every command takes ``--config``)."""
    positions = [i for i, arg in enumerate(argv) if arg == "--config" or arg.startswith("--config=")]
    if not positions or not argv or argv[0] not in COMMANDS:
        return argv
    from calgrpo.configs import config_file_flags

    if len(positions) > 1:
        raise ConfigError("--config given more than once")
    (i,) = positions
    if argv[i] == "--config":
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file")
        path, rest = argv[i + 1], argv[:i] + argv[i + 2 :]
    else:
        path, rest = argv[i].split("=", 1)[1], argv[:i] + argv[i + 1 :]
    return [rest[0], *config_file_flags(COMMANDS[rest[0]][0], path), *rest[1:]]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``calgrpo`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
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


if __name__ == "__main__":
    sys.exit(main())
