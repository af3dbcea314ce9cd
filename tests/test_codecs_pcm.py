"""L16 helpers and the PCM input normaliser."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audiocodecs import (
    as_int16,
    l16be_decode,
    l16be_encode,
    l16le_decode,
    l16le_encode,
    pcm_silence,
)


def wrong(value: object) -> Any:
    """Hide a deliberately mistyped argument from the type checker."""
    return value


VALUES = [0, 1, -1, 256, -256, 0x1234, 32767, -32768]


def test_byte_orders_literal() -> None:
    pcm = np.array(VALUES, dtype=np.int16)
    assert l16le_encode(pcm) == struct.pack("<8h", *VALUES)
    assert l16be_encode(pcm) == struct.pack(">8h", *VALUES)
    assert l16le_decode(struct.pack("<8h", *VALUES)).tolist() == VALUES
    assert l16be_decode(struct.pack(">8h", *VALUES)).tolist() == VALUES
    assert l16be_encode(np.array([0x1234], np.int16)) == b"\x12\x34"
    assert l16le_encode(np.array([0x1234], np.int16)) == b"\x34\x12"


@given(st.lists(st.integers(-32768, 32767), max_size=300))
@settings(max_examples=100, deadline=None)
def test_round_trips(values: list[int]) -> None:
    pcm = np.array(values, dtype=np.int16)
    for encode, decode in ((l16le_encode, l16le_decode), (l16be_encode, l16be_decode)):
        data = encode(pcm)
        assert isinstance(data, bytes) and len(data) == 2 * len(values)
        back = decode(data)
        assert back.dtype == np.int16 and back.tolist() == values
    # Big-endian bytes are the little-endian bytes with each pair swapped.
    le = bytearray(l16le_encode(pcm))
    le[0::2], le[1::2] = le[1::2], le[0::2]
    assert bytes(le) == l16be_encode(pcm)


def test_decoders_return_fresh_writable_arrays() -> None:
    data = bytearray(struct.pack("<3h", 1, 2, 3))
    for decode in (l16le_decode, l16be_decode):
        out = decode(data)
        out[0] = 99
        assert data[:2] == b"\x01\x00"  # not a view of the caller's buffer
    assert l16le_decode(memoryview(data)[2:]).tolist() == [2, 3]
    assert l16le_decode(b"").shape == (0,)


def test_as_int16_views_without_copy() -> None:
    pcm = np.arange(10, dtype=np.int16)
    assert as_int16(pcm) is pcm
    assert as_int16(pcm[::2]) is not None and as_int16(pcm[::2]).tolist() == [0, 2, 4, 6, 8]
    data = struct.pack("<2h", -5, 7)
    assert as_int16(data).tolist() == [-5, 7]
    assert as_int16(bytearray(data)).tolist() == [-5, 7]
    assert as_int16(memoryview(data)).tolist() == [-5, 7]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="odd byte count 3"):
        as_int16(b"abc")
    with pytest.raises(ValueError, match="odd byte count"):
        l16le_decode(b"a")
    with pytest.raises(ValueError, match="odd byte count"):
        l16be_decode(bytearray(b"abc"))
    with pytest.raises(TypeError, match="float64"):
        as_int16(wrong(np.zeros(2)))
    with pytest.raises(TypeError, match=">i2"):
        as_int16(wrong(np.zeros(2, dtype=">i2" if np.little_endian else "<i2")))
    with pytest.raises(ValueError, match=r"1-D.*\(2, 2\)"):
        as_int16(np.zeros((2, 2), dtype=np.int16))
    with pytest.raises(TypeError, match="list"):
        as_int16([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes-like"):
        l16le_decode(np.zeros(2, np.int16))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="count"):
        pcm_silence(-1)


def test_pcm_silence() -> None:
    s = pcm_silence(160)
    assert s.dtype == np.int16 and s.shape == (160,) and not s.any()
