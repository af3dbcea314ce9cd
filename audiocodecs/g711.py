"""ITU-T G.711 μ-law and A-law, bit-exact with CPython's ``audioop`` (width 2).

Both laws compress one 16-bit linear sample into one 8-bit code.  The conversions here
are pure table lookups, with every table computed once, at import, from the G.711
segment rules:

* Encode (16-bit → code) indexes a 65,536-entry ``uint8`` table by the sample's bit
  pattern, so one ``take`` encodes a whole array.  Like ``audioop.lin2ulaw`` /
  ``lin2alaw``, μ-law keeps the top 14 bits of the sample and A-law the top 13 (G.711's
  input resolutions), clipping μ-law magnitudes at 8159 (G.711 Table 2a).
* Decode (code → 16-bit) indexes a 65,536-entry ``uint32`` table by *two* codes at once
  (the input viewed as ``uint16``); each entry holds the two decoded ``int16`` samples in
  memory order, so the result is viewed back as ``int16`` with no further work.  An odd
  trailing code is decoded on its own.  Decoded values are G.711's segment midpoints
  scaled to 16 bits, as ``audioop.ulaw2lin`` / ``alaw2lin`` return them.

Silence: μ-law ``0xFF`` and A-law ``0xD5`` are the codes for a zero sample (A-law has no
exact zero; ``0xD5`` decodes to +8).

Inputs: decoders take bytes-like or a 1-D ``uint8`` array of codes; encoders take a 1-D
``int16`` array or little-endian 16-bit bytes-like (see :mod:`audiocodecs.pcm`).
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from .pcm import BytesLike, Int16Array, as_int16

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "UInt8Array",
    "alaw_decode",
    "alaw_encode",
    "alaw_silence",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_silence",
]

UInt8Array: TypeAlias = npt.NDArray[np.uint8]
"""A 1-D ``uint8`` array of G.711 codes, shape ``(n,)``."""

ULAW_SILENCE = 0xFF
"""μ-law code of a zero sample."""
ALAW_SILENCE = 0xD5
"""A-law code of a zero sample (decodes to +8: A-law has no zero level)."""

# --- table construction (import time) ------------------------------------------------

# Upper end of each of the 8 segments, on the biased 14-bit magnitude (μ-law) and on the
# 13-bit magnitude (A-law); G.711 Tables 2a and 1a, as in audioop.
_ULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
_ULAW_BIAS = 0x84  # 132: μ-law's offset, which makes segment boundaries powers of two
_ULAW_CLIP = 8159  # largest 14-bit magnitude μ-law represents


def _all_samples() -> npt.NDArray[np.int64]:
    """Every int16 value, at the index equal to its bit pattern read as uint16."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int64)


def _ulaw_encode_table() -> UInt8Array:
    s = _all_samples() >> 2  # 14-bit sample
    negative = s < 0
    mag = np.minimum(np.where(negative, -s, s), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEGMENT_ENDS, mag)  # 8 means beyond the last segment
    seg7 = np.minimum(seg, 7)
    code = (seg7 << 4) | ((mag >> (seg7 + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    mask = np.where(negative, 0x7F, 0xFF)
    return (code ^ mask).astype(np.uint8)


def _alaw_encode_table() -> UInt8Array:
    s = _all_samples() >> 3  # 13-bit sample
    negative = s < 0
    mag = np.where(negative, -s - 1, s)  # one's-complement magnitude for negatives
    seg = np.searchsorted(_ALAW_SEGMENT_ENDS, mag)
    seg7 = np.minimum(seg, 7)
    shift = np.where(seg7 < 2, 1, seg7)
    code = (seg7 << 4) | ((mag >> shift) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    mask = np.where(negative, 0x55, 0xD5)  # sign bit set for non-negative; even bits inverted
    return (code ^ mask).astype(np.uint8)


def _ulaw_decode_table() -> Int16Array:
    u = ~np.arange(256, dtype=np.int64) & 0xFF
    exponent = (u >> 4) & 0x07
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << exponent
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _alaw_decode_table() -> Int16Array:
    a = np.arange(256, dtype=np.int64) ^ 0x55
    seg = (a >> 4) & 0x07
    t = ((a & 0x0F) << 4) + np.where(seg == 0, 8, 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _pair_table(single: Int16Array) -> npt.NDArray[np.uint32]:
    """65,536 entries: entry ``i`` holds the decodes of the two bytes of ``uint16(i)``.

    Built through the same memory views the decoder uses, so it is right on either
    byte order: byte ``k`` of index ``i`` decodes to int16 ``k`` of entry ``i``.
    """
    byte_pairs = np.arange(65536, dtype=np.uint16).view(np.uint8).reshape(65536, 2)
    return np.ascontiguousarray(single[byte_pairs]).view(np.uint32).reshape(65536)


_ULAW_ENCODE = _ulaw_encode_table()
_ALAW_ENCODE = _alaw_encode_table()
_ULAW_DECODE = _ulaw_decode_table()
_ALAW_DECODE = _alaw_decode_table()
_ULAW_DECODE_PAIRS = _pair_table(_ULAW_DECODE)
_ALAW_DECODE_PAIRS = _pair_table(_ALAW_DECODE)
for _table in (
    _ULAW_ENCODE,
    _ALAW_ENCODE,
    _ULAW_DECODE,
    _ALAW_DECODE,
    _ULAW_DECODE_PAIRS,
    _ALAW_DECODE_PAIRS,
):
    _table.flags.writeable = False
del _table

# --- conversions ----------------------------------------------------------------------

# Hot-path bindings: a 20 ms frame costs about a microsecond, so lookups count.
_frombuffer = np.frombuffer
_U16 = np.dtype(np.uint16)
_I16 = np.dtype(np.int16)
_ndarray = np.ndarray
_SLICE_BYTES = 1 << 17  # decode long inputs in slices of this many codes


def _as_codes(data: BytesLike | UInt8Array) -> UInt8Array:
    """Return G.711 codes as a contiguous 1-D uint8 array (a view when possible)."""
    if isinstance(data, bytes | bytearray | memoryview):
        codes: UInt8Array = np.frombuffer(data, dtype=np.uint8)
        return codes
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise TypeError(
                f"G.711 codes must be a uint8 array or bytes-like, got dtype {data.dtype}"
            )
        if data.ndim != 1:
            raise ValueError(f"G.711 code array must be 1-D, got shape {data.shape}")
        return np.ascontiguousarray(data)
    raise TypeError(f"G.711 codes must be bytes-like or a uint8 array, got {type(data).__name__}")


def _decode(
    data: BytesLike | UInt8Array, pairs: npt.NDArray[np.uint32], single: Int16Array
) -> Int16Array:
    if type(data) is bytes and len(data) <= _SLICE_BYTES and not len(data) & 1:
        # The wire's case (a frame of bytes): straight to the table.  mode="wrap" is a
        # no-op for uint16 indices into 65,536 entries and skips the bounds check.
        return pairs.take(_frombuffer(data, _U16), mode="wrap").view(_I16)
    codes = _as_codes(data)
    n = codes.shape[0]
    out = np.empty(n, dtype=np.int16)
    pair_codes = codes[: n & ~1].view(np.uint16)
    pair_out = out[: n & ~1].view(np.uint32)
    # take() converts indices to intp first; in cache-sized slices that temporary stays
    # in L2, which makes long inputs ~10% faster than one call.
    for i in range(0, pair_codes.shape[0], _SLICE_BYTES // 2):
        j = i + _SLICE_BYTES // 2
        pairs.take(pair_codes[i:j], out=pair_out[i:j], mode="wrap")
    if n & 1:
        out[-1] = single[codes[-1]]
    return out


def ulaw_decode(data: BytesLike | UInt8Array) -> Int16Array:
    """Decode G.711 μ-law codes to linear PCM, as ``audioop.ulaw2lin(data, 2)``.

    Args:
        data: ``n`` codes: bytes-like or a 1-D ``uint8`` array.

    Returns:
        A new ``int16`` array of shape ``(n,)``.

    Raises:
        TypeError: wrong type or dtype.  ValueError: array not 1-D.
    """
    return _decode(data, _ULAW_DECODE_PAIRS, _ULAW_DECODE)


def alaw_decode(data: BytesLike | UInt8Array) -> Int16Array:
    """Decode G.711 A-law codes to linear PCM, as ``audioop.alaw2lin(data, 2)``.

    Args:
        data: ``n`` codes: bytes-like or a 1-D ``uint8`` array.

    Returns:
        A new ``int16`` array of shape ``(n,)``.

    Raises:
        TypeError: wrong type or dtype.  ValueError: array not 1-D.
    """
    return _decode(data, _ALAW_DECODE_PAIRS, _ALAW_DECODE)


def ulaw_encode(pcm: Int16Array | BytesLike) -> UInt8Array:
    """Encode linear PCM to G.711 μ-law, as ``audioop.lin2ulaw(pcm, 2)``.

    Args:
        pcm: ``n`` samples: a 1-D ``int16`` array or little-endian 16-bit bytes-like.

    Returns:
        A new ``uint8`` array of shape ``(n,)``; ``.tobytes()`` gives the wire payload.

    Raises:
        TypeError: wrong type or dtype.  ValueError: array not 1-D, or odd byte count.
    """
    if type(pcm) is _ndarray and pcm.dtype is _I16 and pcm.ndim == 1:
        return _ULAW_ENCODE.take(pcm.view(_U16))
    return _ULAW_ENCODE.take(as_int16(pcm).view(_U16), mode="wrap")


def alaw_encode(pcm: Int16Array | BytesLike) -> UInt8Array:
    """Encode linear PCM to G.711 A-law, as ``audioop.lin2alaw(pcm, 2)``.

    Args:
        pcm: ``n`` samples: a 1-D ``int16`` array or little-endian 16-bit bytes-like.

    Returns:
        A new ``uint8`` array of shape ``(n,)``; ``.tobytes()`` gives the wire payload.

    Raises:
        TypeError: wrong type or dtype.  ValueError: array not 1-D, or odd byte count.
    """
    if type(pcm) is _ndarray and pcm.dtype is _I16 and pcm.ndim == 1:
        return _ALAW_ENCODE.take(pcm.view(_U16))
    return _ALAW_ENCODE.take(as_int16(pcm).view(_U16), mode="wrap")


def ulaw_silence(n: int) -> bytes:
    """Return ``n`` μ-law codes of silence (``0xFF`` each)."""
    if n < 0:
        raise ValueError(f"sample count must be >= 0, got {n}")
    return bytes([ULAW_SILENCE]) * n


def alaw_silence(n: int) -> bytes:
    """Return ``n`` A-law codes of silence (``0xD5`` each)."""
    if n < 0:
        raise ValueError(f"sample count must be >= 0, got {n}")
    return bytes([ALAW_SILENCE]) * n
