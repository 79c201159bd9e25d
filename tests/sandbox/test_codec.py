"""The boundary codec: plain values round-trip exactly; anything else is refused."""

from __future__ import annotations

import math

import pytest

from calgrpo.sandbox import codec

VALUES = [
    None,
    True,
    False,
    0,
    -7,
    2**100,
    1.5,
    -0.0,
    float("inf"),
    "héllo",
    b"\x00\xff",
    3 + 4j,
    [1, [2, (3, "x")]],
    (1,),
    {"a": [1, 2], 3: (4, 5), (1, 2): None},
    {1, 2},
    frozenset({"a"}),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_codec_roundtrip(value) -> None:
    back = codec.decode(codec.loads(codec.dumps({"v": codec.encode(value)}))["v"])
    assert back == value and type(back) is type(value)


def test_codec_nan_and_bool_int_distinction() -> None:
    assert math.isnan(codec.decode(codec.encode(float("nan"))))
    assert codec.decode(codec.encode(True)) is True
    assert type(codec.decode(codec.encode(1))) is int


def test_codec_refuses_custom_types_and_subclasses() -> None:
    class Sly(int):
        pass

    for value in (Sly(3), object(), lambda: 1, [Sly(1)], {"k": object()}):
        with pytest.raises(codec.CodecError):
            codec.encode(value)
    for data in ({"zz": 1}, {"i": "1", "f": "2"}, [1, 2], {"l": [{"q": 1}]}):
        with pytest.raises(codec.CodecError):
            codec.decode(data)


def test_codec_refuses_deep_nesting() -> None:
    value: list = []
    for _ in range(codec.MAX_DEPTH + 5):
        value = [value]
    with pytest.raises(codec.CodecError, match="deeply"):
        codec.encode(value)
