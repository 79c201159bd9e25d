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


MAX_ITEMS = 1 << 20
"""Values (all containers and scalars together) one decoded message may hold."""
MAX_INT_DIGITS = 4300
"""Longest integer accepted (CPython's own default for int(str)); longer ones are quadratic to parse."""
MAX_SAME_HASH = 8
"""Distinct values sharing one hash that a container may hold. Ints that are multiples of 2**61 - 1
all hash alike, so a set of them (or any later set() of a list of them in the tests) takes
quadratic time; no honest answer looks like that, so the value is refused while decoding."""


class _Budget:
    def __init__(self, items: int):
        self.items = items

    def spend(self, count: int = 1) -> None:
        self.items -= count
        if self.items < 0:
            raise CodecError(f"value has more than {MAX_ITEMS} items")


def decode(data: Any, depth: int = 0, budget: _Budget | None = None) -> Any:
    """Rebuild a value from :func:`encode`'s form; rejects anything else.

    Bounded work whatever ``data`` is: nesting, item count, integer length and hash collisions
    are limited, so decoding a hostile reply is linear in its size.
    """
    budget = budget if budget is not None else _Budget(MAX_ITEMS)
    if depth > MAX_DEPTH:
        raise CodecError("value nested too deeply")
    budget.spend()
    if data is None or isinstance(data, (bool, str)):
        return data
    if not isinstance(data, dict) or len(data) != 1:
        raise CodecError("malformed value")
    ((tag, payload),) = data.items()
    if tag == "i":
        if not isinstance(payload, str) or len(payload) > MAX_INT_DIGITS + 1:
            raise CodecError(f"integer longer than {MAX_INT_DIGITS} digits")
        return int(payload)
    if tag == "f":
        return float(_short(payload))
    if tag == "c":
        return complex(float(_short(payload[0])), float(_short(payload[1])))
    if tag == "b":
        return bytes.fromhex(payload)
    if tag in ("l", "t", "s", "z", "d"):
        if not isinstance(payload, list):
            raise CodecError("malformed container")
        if tag == "d":
            pairs = [(decode(k, depth + 1, budget), decode(v, depth + 1, budget)) for k, v in _pairs(payload)]
            _refuse_hash_floods([k for k, _ in pairs])
            return dict(pairs)
        items = [decode(item, depth + 1, budget) for item in payload]
        _refuse_hash_floods(items)
        return {"l": list, "t": tuple, "s": set, "z": frozenset}[tag](items)
    raise CodecError(f"unknown tag {tag!r}")


def _short(text: Any) -> str:
    if not isinstance(text, str) or len(text) > 64:
        raise CodecError("malformed float")
    return text


def _pairs(payload: list) -> list:
    if not all(isinstance(pair, list) and len(pair) == 2 for pair in payload):
        raise CodecError("malformed dict")
    return payload


def _refuse_hash_floods(items: list) -> None:
    """Raise if more than MAX_SAME_HASH distinct hashable items share a hash (linear time)."""
    if len(items) <= MAX_SAME_HASH:
        return
    seen: dict[int, list] = {}
    for item in items:
        try:
            key = hash(item)
        except TypeError:  # lists, dicts, sets: never set members or keys as they are
            continue
        bucket = seen.setdefault(key, [])
        if len(bucket) <= MAX_SAME_HASH and not any(type(x) is type(item) and x == item for x in bucket):
            bucket.append(item)
            if len(bucket) > MAX_SAME_HASH:
                raise CodecError("value holds many distinct items with the same hash")


def dumps(message: dict) -> bytes:
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


def loads(line: bytes) -> dict:
    try:
        message = json.loads(line)
    except RecursionError:  # a deeply nested JSON text
        raise CodecError("message nested too deeply") from None
    if not isinstance(message, dict):
        raise CodecError("malformed message")
    return message
