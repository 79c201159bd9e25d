"""A safe value codec for crossing the sandbox boundary (standard library only).

Only plain data crosses: None, bool, int, float (inf/nan included), complex, str, bytes, and lists,
tuples, dicts, sets and frozensets of those. Decoding builds fresh builtin objects, so nothing the
untrusted program defines (a class whose ``__eq__`` always says True, say) ever reaches the tests.
This file is copied into the sandbox next to the runner; it must not import calgrpo.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64


class CodecError(ValueError):
    """A value of a type that cannot cross the boundary."""


def encode(value: Any, depth: int = 0) -> Any:
    """A JSON-serialisable tagged form of ``value``."""
    if depth > MAX_DEPTH:
        raise CodecError("value nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return {"i": str(value)}  # exact, any size
    if kind is float:
        return {"f": repr(value)} if math.isfinite(value) else {"f": str(value)}
    if kind is complex:
        return {"c": [repr(value.real), repr(value.imag)]}
    if kind is bytes:
        return {"b": value.hex()}
    if kind in (list, tuple, set, frozenset):
        tag = {list: "l", tuple: "t", set: "s", frozenset: "z"}[kind]
        return {tag: [encode(item, depth + 1) for item in value]}
    if kind is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    raise CodecError(f"values of type {kind.__name__} cannot be checked")


def decode(data: Any, depth: int = 0) -> Any:
    """Rebuild a value from :func:`encode`'s form; rejects anything else."""
    if depth > MAX_DEPTH:
        raise CodecError("value nested too deeply")
    if data is None or isinstance(data, (bool, str)):
        return data
    if not isinstance(data, dict) or len(data) != 1:
        raise CodecError("malformed value")
    ((tag, payload),) = data.items()
    if tag == "i":
        return int(payload)
    if tag == "f":
        return float(payload)
    if tag == "c":
        return complex(float(payload[0]), float(payload[1]))
    if tag == "b":
        return bytes.fromhex(payload)
    if tag in ("l", "t", "s", "z"):
        items = [decode(item, depth + 1) for item in payload]
        return {"l": list, "t": tuple, "s": set, "z": frozenset}[tag](items)
    if tag == "d":
        return {decode(k, depth + 1): decode(v, depth + 1) for k, v in payload}
    raise CodecError(f"unknown tag {tag!r}")


def dumps(message: dict) -> bytes:
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


def loads(line: bytes) -> dict:
    message = json.loads(line)
    if not isinstance(message, dict):
        raise CodecError("malformed message")
    return message
