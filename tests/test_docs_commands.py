"""Every `calgrpo` command quoted in a shell block of the docs or the README parses with the flags and
values the CLI actually accepts (parsed only, not run)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from calgrpo.cli import parse

ROOT = Path(__file__).resolve().parents[1]


def _quoted_commands() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", path.read_text(), re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # leading VAR=value assignments
                    words = words[1:]
                if words and words[-1] == "&":
                    words = words[:-1]
                if words and words[0] == "calgrpo":
                    found.append((f"{path.name}: {' '.join(words)[:60]}", " ".join(shlex.quote(w) for w in words)))
    return found


COMMANDS = _quoted_commands()


def test_the_docs_quote_the_commands_that_matter() -> None:
    quoted = " ".join(command for _, command in COMMANDS)
    for command in ("pipeline submit", "pipeline schedule", "pipeline compile", "pipeline run-local"):
        assert f"calgrpo {command}" in quoted


@pytest.mark.parametrize("command", [c for _, c in COMMANDS], ids=[i for i, _ in COMMANDS])
def test_quoted_command_parses(command, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the docs name config files by their path in the repository
    try:
        config, handler = parse(shlex.split(command)[1:])
    except SystemExit as exit_:  # tyro/argparse reject unknown flags or bad values this way
        pytest.fail(f"`{command}` does not parse (exit {exit_.code})")
    assert callable(handler) and config is not None
    if hasattr(config, "param"):  # submit/schedule: the --param names and values fit the pipeline too
        from calgrpo.pipelines.local import as_pipeline_config
        from calgrpo.pipelines.submit import package_for, parse_params

        package = package_for(config.pipeline, tmp_path, as_pipeline_config(config), config.train_nodes)
        params = parse_params(list(config.param), package)  # raises on a bad name or value
        assert set(params) == {param.split("=", 1)[0] for param in config.param}
