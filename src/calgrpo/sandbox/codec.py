"""A safe value codec for crossing the sandbox boundary (standard library only).

Only plain data crosses: None, bool, int, float (inf/nan included), complex, str, bytes, and lists,
tuples, dicts, sets and frozensets of those. Decoding builds fresh builtin objects, so nothing the
untrusted program defines (a class whose ``__eq__`` always says True, say) ever reaches the tests.
This file is copied into the sandbox next to the runner; it must not import calgrpo. It frames
messages with the C parts of the json package only (``_json``): importing ``json`` itself pulls
in ``re``, and ``typing`` costs as much: together they doubled the jailed interpreter's start-up.
"""

from __future__ import annotations

import _json
import math

MAX_DEPTH = 64


class CodecError(ValueError):
    """A value of a type that cannot cross the boundary."""


def encode(value: object, depth: int = 0) -> object:
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


def decode(data: object, depth: int = 0, budget: _Budget | None = None) -> object:
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


def _short(text: object) -> str:
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
    """One JSON line: ``message`` holds only dicts with str keys, lists, str, bool and None."""
    parts: list[str] = []
    _write(message, parts, 0)
    parts.append("\n")
    return "".join(parts).encode()


def _write(value: object, parts: list[str], depth: int) -> None:
    if depth > 2 * MAX_DEPTH + 8:
        raise CodecError("message nested too deeply")
    if value is None:
        parts.append("null")
    elif value is True or value is False:
        parts.append("true" if value else "false")
    elif type(value) is str:
        parts.append(_json.encode_basestring_ascii(value))
    elif type(value) in (list, tuple):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _write(item, parts, depth + 1)
        parts.append("]")
    elif type(value) is dict:
        parts.append("{")
        for index, (key, item) in enumerate(value.items()):
            if type(key) is not str:
                raise CodecError("message keys must be strings")
            parts.append(("," if index else "") + _json.encode_basestring_ascii(key) + ":")
            _write(item, parts, depth + 1)
        parts.append("}")
    else:
        raise CodecError(f"a message cannot hold a {type(value).__name__}")


class _ScanContext:
    """What ``_json.make_scanner`` reads off a decoder: plain JSON, no hooks, no NaN literals."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> object:
        raise CodecError(f"{name} is not allowed in a message")


_scan = _json.make_scanner(_ScanContext())


def loads(line: bytes) -> dict:
    """Parse one message line (the same C scanner json.loads uses); anything else is refused."""
    try:
        text = line.decode("utf-8").strip()
        message, end = _scan(text, 0)
    except StopIteration:
        raise CodecError("malformed message") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise CodecError(f"malformed message: {type(exc).__name__}") from None
    if end != len(text) or not isinstance(message, dict):
        raise CodecError("malformed message")
    return message
