"""Linear 16-bit PCM ("L16") helpers and the input normaliser shared by the codecs.

Telephony providers send G.711, but bots and TTS engines produce linear PCM, and the
providers that accept L16 disagree on byte order: RFC 3551 §4.5.11 defines ``audio/L16``
as big-endian (network order), while WAV files, most SDKs and numpy on every common CPU
use little-endian.  Hence one decoder and one encoder per byte order.

Conventions used throughout :mod:`audiocodecs`:

* A *PCM array* is a 1-D ``numpy.ndarray`` of dtype ``int16`` (native byte order),
  shape ``(n,)``: one channel, one element per sample.
* Where a function accepts *bytes-like* PCM (``bytes``, ``bytearray``, ``memoryview``),
  the bytes are little-endian 16-bit samples, so an odd byte count is an error.
* Decoders return new, writable arrays; :func:`as_int16` is the one function that
  returns a view of its input when it can (it exists to avoid copies on hot paths).
"""

from __future__ import annotations

import sys
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = [
    "BytesLike",
    "Int16Array",
    "as_int16",
    "l16be_decode",
    "l16be_encode",
    "l16le_decode",
    "l16le_encode",
    "pcm_silence",
]

BytesLike: TypeAlias = bytes | bytearray | memoryview
"""Raw bytes accepted wherever the API says *bytes-like*."""

Int16Array: TypeAlias = npt.NDArray[np.int16]
"""A 1-D ``int16`` array of samples, shape ``(n,)``."""

_LE_INT16 = np.dtype("<i2")
_BE_INT16 = np.dtype(">i2")
_NATIVE_IS_LE = sys.byteorder == "little"


def _nbytes(data: BytesLike) -> int:
    return data.nbytes if isinstance(data, memoryview) else len(data)


def _from_bytes(data: BytesLike, dtype: np.dtype[np.int16], what: str) -> Int16Array:
    """View 16-bit samples in ``data`` with the given byte order (read-only if bytes)."""
    if _nbytes(data) % 2:
        raise ValueError(
            f"{what}: odd byte count {_nbytes(data)}; 16-bit samples need 2 bytes each"
        )
    arr: Int16Array = np.frombuffer(data, dtype=dtype)
    return arr


def as_int16(pcm: Int16Array | BytesLike) -> Int16Array:
    """Return ``pcm`` as a 1-D native ``int16`` array, without copying when possible.

    Args:
        pcm: an ``int16`` array of shape ``(n,)``, or little-endian 16-bit bytes-like.

    Returns:
        An ``int16`` array of shape ``(n,)``.  For an array input this is ``pcm`` itself;
        for bytes it is a view of the bytes (read-only for ``bytes``) on little-endian
        machines.  Do not write to the result unless you own ``pcm``.

    Raises:
        TypeError: ``pcm`` is neither an array nor bytes-like, or the dtype is not int16.
        ValueError: the array is not 1-D, or the byte count is odd.
    """
    if isinstance(pcm, np.ndarray):
        if pcm.dtype != np.int16:
            raise TypeError(
                f"PCM array must have dtype int16 (native byte order), got {pcm.dtype}; "
                "convert with .astype(numpy.int16)"
            )
        if pcm.ndim != 1:
            raise ValueError(f"PCM array must be 1-D (mono), got shape {pcm.shape}")
        return pcm
    if isinstance(pcm, bytes | bytearray | memoryview):
        arr = _from_bytes(pcm, _LE_INT16, "PCM bytes")
        return arr if _NATIVE_IS_LE else arr.astype(np.int16)
    raise TypeError(
        f"PCM must be an int16 numpy array or little-endian bytes-like, got {type(pcm).__name__}"
    )


def l16le_decode(data: BytesLike) -> Int16Array:
    """Decode little-endian 16-bit PCM bytes.

    Args:
        data: bytes-like, even length.

    Returns:
        A new writable ``int16`` array of shape ``(len(data) // 2,)``.

    Raises:
        ValueError: odd byte count.  TypeError: not bytes-like.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"L16 data must be bytes-like, got {type(data).__name__}")
    return _from_bytes(data, _LE_INT16, "L16 little-endian data").astype(np.int16)


def l16be_decode(data: BytesLike) -> Int16Array:
    """Decode big-endian (network order, RFC 3551 ``audio/L16``) 16-bit PCM bytes.

    Args:
        data: bytes-like, even length.

    Returns:
        A new writable native ``int16`` array of shape ``(len(data) // 2,)``.

    Raises:
        ValueError: odd byte count.  TypeError: not bytes-like.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"L16 data must be bytes-like, got {type(data).__name__}")
    return _from_bytes(data, _BE_INT16, "L16 big-endian data").astype(np.int16)


def l16le_encode(pcm: Int16Array | BytesLike) -> bytes:
    """Encode PCM as little-endian 16-bit bytes.

    Args:
        pcm: ``int16`` array of shape ``(n,)`` (or little-endian bytes, returned as bytes).

    Returns:
        ``bytes`` of length ``2 * n``.
    """
    return as_int16(pcm).astype(_LE_INT16, copy=False).tobytes()


def l16be_encode(pcm: Int16Array | BytesLike) -> bytes:
    """Encode PCM as big-endian (network order) 16-bit bytes.

    Args:
        pcm: ``int16`` array of shape ``(n,)`` (or little-endian bytes).

    Returns:
        ``bytes`` of length ``2 * n``.
    """
    return as_int16(pcm).astype(_BE_INT16, copy=False).tobytes()


def pcm_silence(n: int) -> Int16Array:
    """Return ``n`` samples of digital silence: a new zeroed ``int16`` array, shape ``(n,)``."""
    if n < 0:
        raise ValueError(f"sample count must be >= 0, got {n}")
    return np.zeros(n, dtype=np.int16)
