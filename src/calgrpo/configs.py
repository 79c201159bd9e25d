"""Configs as JSON: what a launcher hands to the process that runs a stage, and what is saved next
to every output. The dataclasses validate themselves on construction, so a config read back is
checked exactly like one built from the command line; an unknown key is refused with its name.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from calgrpo.errors import ConfigError


def to_json(config: Any) -> dict[str, Any]:
    """A config dataclass (nested ones included) as plain JSON values (tuples as lists, paths as str)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def from_json(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """``cls`` built from :func:`to_json`'s output; raises ConfigError naming an unknown or bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        known = ", ".join(sorted(names))
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {known}")
    values = {name: _value(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**values)
    except TypeError as error:  # a required field is missing
        raise ConfigError(f"{where}: {error}") from None


def _value(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(arg for arg in args if arg is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_json(hint, value, where)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if hint is Path and isinstance(value, str):
        return Path(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def write_config(config: Any, path: Path) -> None:
    path.write_text(json.dumps(to_json(config), indent=1, sort_keys=True))


def read_config(cls: type, text: str, where: str) -> Any:
    try:
        data = json.loads(text)
    except ValueError:
        raise ConfigError(f"{where} is not valid JSON") from None
    return from_json(cls, data, where)


def config_file_flags(cls: type, path: str | Path, ignored: frozenset[str] = frozenset()) -> list[str]:
    """A YAML (or JSON) config file for the command ``cls`` as command-line flags, to go before the
    ones typed (which then override it). Keys are the flags' names with underscores, nested as the
    flags are (``train: {learning_rate: 1e-5}`` is ``--train.learning-rate 1e-5``); an unknown key
    is refused with its dotted name. Top-level keys in ``ignored`` are dropped (settings of another
    entry point of the same run file, e.g. a pipeline's registry for ``learn``)."""
    import logging

    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"--config {path}: not a readable YAML file ({error})") from None
    data = data or {}
    if isinstance(data, dict) and ignored & data.keys():
        skipped = ", ".join(sorted(ignored & data.keys()))
        logging.getLogger("calgrpo").info("%s: %s do not apply to this command; ignored", path, skipped)
        data = {key: value for key, value in data.items() if key not in ignored}
    return _flags(cls, data, "", str(path))


def _flags(cls: type, data: Any, prefix: str, where: str) -> list[str]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the file'} must be a mapping of settings")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    flags: list[str] = []
    for key, value in data.items():
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{where}: unknown setting {prefix}{key}; known here: {known}")
        flag = f"--{prefix}{key.replace('_', '-')}"
        nested = _unwrap_optional(hints[key])
        if dataclasses.is_dataclass(nested):
            flags += _flags(nested, value, f"{prefix}{key}.", where)
        elif isinstance(value, bool):
            flags.append(flag if value else f"--{prefix}no-{key.replace('_', '-')}")
        elif isinstance(value, list):
            flags += [flag, *map(str, value)]
        elif isinstance(value, dict):  # a mapping flag takes KEY VALUE pairs
            flags += [flag, *(str(item) for pair in value.items() for item in pair)]
        else:
            flags += [flag, "None" if value is None else str(value)]
    return flags


def mapping_flags(cls: type, prefix: str = "") -> set[str]:
    """The flags of ``cls`` (nested ones included) that take KEY VALUE pairs (dict-typed fields)."""
    hints = typing.get_type_hints(cls)
    found: set[str] = set()
    for f in dataclasses.fields(cls):
        hint = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(hint):
            found |= mapping_flags(hint, f"{prefix}{f.name}.")
        elif typing.get_origin(hint) is dict:
            found.add(f"--{prefix}{f.name.replace('_', '-')}")
    return found


def merge_mapping_flags(
    from_file: list[str], typed: list[str], mappings: set[str]
) -> tuple[list[str], list[str]]:
    """A mapping flag given both in the file and typed is merged key by key, the typed values winning
    (``task_options: {num_values: 16}`` with ``--task-options hint_prob 0.9`` keeps num_values)."""
    file_pairs, file_rest = _take_mappings(from_file, mappings)
    typed_pairs, typed_rest = _take_mappings(typed, mappings)
    merged: list[str] = []
    for flag in sorted(file_pairs.keys() & typed_pairs.keys()):
        values = {**file_pairs.pop(flag), **typed_pairs.pop(flag)}
        merged += [flag, *(item for pair in values.items() for item in pair)]
    for pairs, rest in ((file_pairs, file_rest), (typed_pairs, typed_rest)):
        for flag, values in pairs.items():
            rest += [flag, *(item for pair in values.items() for item in pair)]
    return file_rest, typed_rest + merged


def _take_mappings(args: list[str], mappings: set[str]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """(the mapping flags' KEY VALUE pairs, the other arguments)."""
    pairs: dict[str, dict[str, str]] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        if args[i] not in mappings:
            rest.append(args[i])
            i += 1
            continue
        flag, i = args[i], i + 1
        values: list[str] = []
        while i < len(args) and not args[i].startswith("--"):
            values.append(args[i])
            i += 1
        if len(values) % 2:  # an odd count is tyro's error to report: pass it through untouched
            rest += [flag, *values]
            continue
        pairs.setdefault(flag, {}).update(zip(values[::2], values[1::2], strict=True))
    return pairs, rest


def _unwrap_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint
