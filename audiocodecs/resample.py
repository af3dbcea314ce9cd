"""Streaming sample-rate conversion for int16 mono PCM, low delay, chunking-exact.

:class:`StreamResampler` converts between any two of 8, 16, 24, 44.1 and 48 kHz with a
causal minimum-phase polyphase FIR (designed once per rate pair, see
:mod:`audiocodecs._fir`).  What a caller can rely on:

* **Chunking-exact.**  Feeding a signal in any chunking (1 sample at a time, 20 ms frames,
  all at once) gives exactly the same int16 samples as :func:`resample` on the whole.
* **Nothing withheld but the delay.**  After ``N`` input samples in total, exactly
  ``max(0, ceil(N * out / in) - d)`` output samples have been returned, where ``d`` is
  :attr:`StreamResampler.delay_samples` (``delay * out_rate``, 3 to 23 samples:
  0.375 ms for 8↔16 kHz).  :meth:`StreamResampler.flush` returns the rest, bringing the
  total to ``round(N * out / in)`` (halves rounded up): the output is exactly as long as
  the input in time, like a one-shot resample.  The first ``d`` samples of the filter's
  response (the rise before its mean group delay) fall before time zero and are not
  emitted; no other sample is ever dropped, and nothing depends on a clock.
* **Quality.**  Passband (0 to 0.85 x the lower Nyquist, i.e. 0–3.4 kHz whenever 8 kHz is
  involved) flat within ±0.01 dB; everything above the lower Nyquist (aliases when
  downsampling, images when upsampling) at least ≈79 dB down, 44.1 kHz pairs included.
* **Delay.**  Group delay grows across the passband from ≈0.24 ms (DC) to ≈1.2 ms
  (3.4 kHz) for 8↔16 kHz, ≈0.28–1.26 ms for 8↔24 kHz; :attr:`StreamResampler.delay` is
  the passband mean (0.39 / 0.44 ms) rounded to whole output samples (0.375 ms both
  ways for 8↔16 kHz; 0.458 ms for 8→24 kHz, 0.5 ms for 24→8 kHz).
* **Cost.**  Arithmetic is float64 on integer-valued data with coefficients on a 2**-32
  grid, so every sum is exact and order-independent: that is what makes the chunking
  free.  A stream fed equal chunks (20 ms frames) reuses views prepared for that chunk
  size, so a frame costs one copy in, one matrix product, one history copy and the
  rounding: 2.5–3.3 µs for the telephony pairs with OpenBLAS's AVX-512 kernels,
  3.5–4.7 µs with its AVX2 ones, most of it the product itself (see
  ``python -m bench codecs``).  Other chunkings take a general path, equal in result.
* **Fused G.711.**  :meth:`StreamResampler.process_ulaw` / :meth:`~StreamResampler.process_alaw`
  decode codes straight into the filter's input (``process(ulaw_decode(codes))`` in one
  step) and :meth:`~StreamResampler.process_to_ulaw` /
  :meth:`~StreamResampler.process_to_alaw` encode the filter's output straight to codes
  (``ulaw_encode(process(pcm))``); results are identical to the two-step forms, and the
  forms may be mixed on one stream.
"""

from __future__ import annotations

import importlib
import numbers
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from ._fir import SUPPORTED_RATES, PolyphaseDesign, design
from .g711 import (
    _ALAW_DECODE,
    _ALAW_ENCODE,
    _ULAW_DECODE,
    _ULAW_ENCODE,
    UInt8Array,
    _as_codes,
    alaw_decode,
    ulaw_decode,
)
from .pcm import BytesLike, Int16Array, as_int16

__all__ = [
    "SUPPORTED_RATES",
    "StreamResampler",
    "process_alaw_many",
    "process_many",
    "process_to_alaw_many",
    "process_to_ulaw_many",
    "process_ulaw_many",
    "resample",
]

_MAX_STEP = 2048  # input samples per internal step: bounds per-stream memory (~20 KB)
_SCRATCH_OUTPUTS = 1024  # product results up to this size reuse a per-stream buffer
_FAST_MAX_OUTPUTS = 4096  # chunk sizes with prepared views: outputs per chunk at most
_FAST_SIZES = 4  # chunk sizes a stream keeps prepared views for
_F64 = np.dtype(np.float64)
_I16 = np.dtype(np.int16)
_U8 = np.dtype(np.uint8)
_U16 = np.dtype(np.uint16)
_EMPTY = np.zeros(0, dtype=np.int16)
_EMPTY.flags.writeable = False

# Hot-path bindings: at a few microseconds per frame, each global+attribute lookup and
# each Python float -> array conversion (~0.25 µs per ufunc call) shows.
_rint, _add, _dot, _ndarray, _frombuffer = np.rint, np.add, np.dot, np.ndarray, np.frombuffer
# The clip ufunc itself: np.clip wraps it in ~1 µs of Python argument handling.
# It moved with numpy 2's core -> _core rename (importing the old name warns there).
_clip: np.ufunc = importlib.import_module(
    "numpy._core.umath" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core.umath"
).clip
_LO = np.array(-32768.0)
_HI = np.array(32767.0)
# Adding 1.5 * 2**52 to a float64 of magnitude < 2**51 rounds it to an integer, ties to
# even exactly like np.rint, and leaves that integer in the low 32 bits of the result's
# bit pattern (the exponent and leading mantissa bits are constant above them).
_ROUNDING_MAGIC = np.array(1.5 * 2.0**52)
_LOW_WORD = slice(0, None, 2) if sys.byteorder == "little" else slice(1, None, 2)

# G.711 decode tables as float64: decoding writes straight into the filter's input.
_ULAW_F64 = _ULAW_DECODE.astype(np.float64)
_ALAW_F64 = _ALAW_DECODE.astype(np.float64)
_ULAW_F64.flags.writeable = False
_ALAW_F64.flags.writeable = False

_WIDE_BITS = 18  # index bits of the saturating encode tables below


def _wide_encode_table(table: UInt8Array) -> UInt8Array:
    """The G.711 encode ``table`` indexed by any integer of ``_WIDE_BITS`` bits.

    Entry ``i`` encodes ``v`` saturated to int16, where ``v`` is ``i`` read as a signed
    ``_WIDE_BITS``-bit number; "wrap" indexing with a rounded filter output (up to
    ±2**17) thus encodes it saturated, which saves a clip per frame.  256 KiB per law.
    """
    half = 1 << (_WIDE_BITS - 1)
    signed = np.arange(2 * half, dtype=np.int64)
    signed[half:] -= 2 * half
    wide: UInt8Array = table[np.clip(signed, -32768, 32767).astype(np.int16).view(np.uint16)]
    wide.flags.writeable = False
    return wide


_ULAW_WIDE = _wide_encode_table(_ULAW_ENCODE)
_ALAW_WIDE = _wide_encode_table(_ALAW_ENCODE)

F64Array: TypeAlias = npt.NDArray[np.float64]
# Views prepared for one chunk size (see StreamResampler._make_layout): input slot,
# the windowed input's bound ``dot`` (the method skips np.dot's dispatch, ~0.15 µs),
# product (2-D, then flat), history destination and source, outputs
# per chunk, the rounded product's low 32-bit words, and the history as one row
# (what the batch functions gather).
_Layout: TypeAlias = tuple[
    F64Array,
    Callable[..., object],
    F64Array,
    F64Array,
    F64Array,
    F64Array,
    int,
    npt.NDArray[np.int32],
    F64Array,
]


def _check_rate(name: str, rate: object) -> int:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"{name} must be an int (Hz), got {type(rate).__name__}")
    for supported in SUPPORTED_RATES:  # accepts 8000, 8000.0, numpy.int64(8000), ...
        if rate == supported:
            return supported
    listed = ", ".join(str(r) for r in SUPPORTED_RATES)
    raise ValueError(f"unsupported {name} {rate!r} Hz; supported rates: {listed}")


def _to_int16(y: F64Array) -> Int16Array:
    """Round a scratch float64 array to a new int16 array, saturating (overwrites ``y``)."""
    _clip(y, _LO, _HI, out=y)
    _rint(y, out=y)
    return y.astype(_I16)


class StreamResampler:
    """Resample one continuous int16 mono stream from ``in_rate`` to ``out_rate``.

    Not thread-safe; use one instance per stream.  ``in_rate == out_rate`` is allowed and
    passes samples through (copied) with zero delay.

    Besides int16 PCM, a stream takes G.711 codes in (:meth:`process_ulaw`,
    :meth:`process_alaw`) and gives G.711 codes out (:meth:`process_to_ulaw`,
    :meth:`process_to_alaw`), each fused into one step; all of them feed the same stream.

    Args:
        in_rate: input sample rate in Hz, one of :data:`SUPPORTED_RATES`.
        out_rate: output sample rate in Hz, one of :data:`SUPPORTED_RATES`.

    Raises:
        ValueError: unsupported rate.  TypeError: rate is not a number.
    """

    __slots__ = (
        "_aligned",
        "_base",
        "_block_in",
        "_block_out",
        "_buf",
        "_design",
        "_down",
        "_fast",
        "_fast_n",
        "_in_rate",
        "_layouts",
        "_matrix",
        "_n_in",
        "_n_out",
        "_out_rate",
        "_scratch",
        "_trim",
        "_up",
        "_wide",
        "_window",
    )

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self._in_rate = _check_rate("in_rate", in_rate)
        self._out_rate = _check_rate("out_rate", out_rate)
        self._design: PolyphaseDesign | None = None
        if self._in_rate == self._out_rate:
            self._up = self._down = self._block_in = self._block_out = 1
            self._window = 1
            self._trim = 0
            self._matrix = np.ones((1, 1))
        else:
            d = design(self._in_rate, self._out_rate)
            self._design = d
            self._up, self._down = d.up, d.down
            self._block_in, self._block_out = d.block * d.down, d.block * d.up
            self._window = d.window
            self._trim = d.trim
            self._matrix = d.matrix
        # Rounded outputs stay within ±2**17 (inputs are int16): the wide encode tables
        # saturate them.  True for every supported pair; checked, not assumed.
        self._wide = (
            self._design is None or self._design.peak_gain * 32768.0 < (1 << (_WIDE_BITS - 1)) - 1
        )
        # History of float64 inputs: buf[i] is input sample number base + i.  Negative
        # sample numbers are the zeros before the stream starts.  Slack for one full
        # step plus partial rows at both ends.
        self._buf = np.zeros(self._window + _MAX_STEP + 3 * self._block_in, dtype=np.float64)
        rows = _SCRATCH_OUTPUTS // self._block_out + 2
        self._scratch = np.empty((rows, self._block_out), dtype=np.float64)
        self._base = 0
        self._n_in = 0
        self._n_out = 0
        # Fast path (see _make_layout): prepared views per chunk size, the current one,
        # and whether the buffer is laid out for it (history at buf[0:window-block_in],
        # next input at a row boundary, start-up trim done).
        self._layouts: dict[int, _Layout] = {}
        self._fast_n = -1  # no chunk size matches: _fast is an empty placeholder
        self._fast: _Layout = self._make_layout(0)
        self._aligned = False
        self.reset()

    # --- properties --------------------------------------------------------------------

    @property
    def in_rate(self) -> int:
        """Input sample rate, Hz."""
        return self._in_rate

    @property
    def out_rate(self) -> int:
        """Output sample rate, Hz."""
        return self._out_rate

    @property
    def delay(self) -> float:
        """Delay of the output stream behind the input, in seconds.

        Defined as the filter's group delay averaged over its passband (0–3.4 kHz for
        pairs involving 8 kHz), rounded to whole output samples: exactly
        ``delay_samples / out_rate``.  It is also exactly how much output the stream
        withholds until :meth:`flush`.  The true group delay varies with frequency
        between :attr:`group_delay_range` bounds (minimum-phase filter); 0.0 for
        ``in_rate == out_rate``.
        """
        return self._trim / self._out_rate

    @property
    def delay_samples(self) -> int:
        """:attr:`delay` in output samples (an integer)."""
        return self._trim

    @property
    def group_delay_range(self) -> tuple[float, float]:
        """(min, max) group delay over the passband, seconds, from the design.

        The minimum is at DC, the maximum at the passband edge.  ``(0.0, 0.0)`` for
        ``in_rate == out_rate``.
        """
        if self._design is None:
            return (0.0, 0.0)
        return (self._design.group_delay_min, self._design.group_delay_max)

    def prepared(self, n: int) -> bool:
        """True when a chunk of ``n`` samples would take the prepared path now.

        That is the steady state of a stream fed equal chunks (from its second chunk
        on, once the start-up trim is behind it), and what the batch functions
        (:func:`process_many` and friends) require of every stream they are given.
        Always False for ``in_rate == out_rate``.
        """
        return n == self._fast_n and self._aligned and self._design is not None

    # --- streaming ---------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all input: the next :meth:`process` starts a new, independent stream."""
        self._buf.fill(0.0)
        self._base = self._block_in - self._window  # input 0 sits after window-1 zeros
        self._n_in = 0
        self._n_out = 0
        self._aligned = False  # the first outputs are trimmed: general path

    def process(self, x: Int16Array | BytesLike) -> Int16Array:
        """Feed input samples; return every output sample that is now determined.

        Args:
            x: ``n`` input samples: 1-D ``int16`` array, or little-endian 16-bit bytes.

        Returns:
            A new ``int16`` array of shape ``(k,)``; over the stream, the returned counts
            add up to ``max(0, ceil(N * out_rate / in_rate) - delay_samples)`` after
            ``N`` inputs.

        Raises:
            TypeError: not an int16 array or bytes-like.  ValueError: array not 1-D, or
            odd byte count.
        """
        if type(x) is _ndarray and x.dtype is _I16 and x.ndim == 1:
            samples: Int16Array = x  # fast path for the common case
        else:
            samples = as_int16(x)
        n = samples.shape[0]
        if n == self._fast_n and self._aligned:
            dst, dot, out, y, hist_dst, hist_src, n_out, _, _ = self._fast
            dst[...] = samples
            dot(self._matrix, out=out)
            hist_dst[...] = hist_src
            self._n_in += n
            self._n_out += n_out
            _clip(y, _LO, _HI, out=y)
            _rint(y, out=y)
            return y.astype(_I16)
        return self._general(samples)

    def process_ulaw(self, codes: BytesLike | UInt8Array) -> Int16Array:
        """Decode G.711 μ-law codes and feed them: ``process(ulaw_decode(codes))``.

        One step instead of two: on the prepared path the codes are decoded by a table
        lookup that writes straight into the filter's input.

        Args:
            codes: ``n`` μ-law codes: bytes-like or a 1-D ``uint8`` array.

        Returns:
            A new ``int16`` array, exactly what ``process(ulaw_decode(codes))`` returns.

        Raises:
            TypeError: wrong type or dtype.  ValueError: array not 1-D.
        """
        return self._process_codes(codes, _ULAW_F64, ulaw_decode)

    def process_alaw(self, codes: BytesLike | UInt8Array) -> Int16Array:
        """Decode G.711 A-law codes and feed them: ``process(alaw_decode(codes))``.

        Args:
            codes: ``n`` A-law codes: bytes-like or a 1-D ``uint8`` array.

        Returns:
            A new ``int16`` array, exactly what ``process(alaw_decode(codes))`` returns.

        Raises:
            TypeError: wrong type or dtype.  ValueError: array not 1-D.
        """
        return self._process_codes(codes, _ALAW_F64, alaw_decode)

    def process_to_ulaw(self, x: Int16Array | BytesLike) -> UInt8Array:
        """Feed samples and encode the output to G.711 μ-law: ``ulaw_encode(process(x))``.

        One step instead of two: on the prepared path the rounded filter output indexes
        the encoding table directly.

        Args:
            x: ``n`` input samples: 1-D ``int16`` array, or little-endian 16-bit bytes.

        Returns:
            A new ``uint8`` array of codes (``.tobytes()`` is the wire payload), exactly
            what ``ulaw_encode(process(x))`` returns.

        Raises:
            TypeError: not an int16 array or bytes-like.  ValueError: array not 1-D, or
            odd byte count.
        """
        return self._process_to_codes(x, _ULAW_ENCODE, _ULAW_WIDE)

    def process_to_alaw(self, x: Int16Array | BytesLike) -> UInt8Array:
        """Feed samples and encode the output to G.711 A-law: ``alaw_encode(process(x))``.

        Args:
            x: ``n`` input samples: 1-D ``int16`` array, or little-endian 16-bit bytes.

        Returns:
            A new ``uint8`` array of codes, exactly what ``alaw_encode(process(x))``
            returns.

        Raises:
            TypeError: not an int16 array or bytes-like.  ValueError: array not 1-D, or
            odd byte count.
        """
        return self._process_to_codes(x, _ALAW_ENCODE, _ALAW_WIDE)

    def flush(self) -> Int16Array:
        """End the stream: return the held-back tail, then :meth:`reset`.

        The tail is what the filter still holds (the last :attr:`delay` of signal) computed
        against zero input after the end.  It brings the stream's total output to
        ``round(N * out_rate / in_rate)`` samples for ``N`` inputs (halves rounded up).

        Returns:
            A new ``int16`` array of shape ``(k,)``, ``k`` about ``delay_samples``.
        """
        up, down, trim = self._up, self._down, self._trim
        n_in = self._n_in
        total = (2 * n_in * up + down) // (2 * down)
        emitted = max(0, self._n_out - trim)
        missing = total - emitted
        tail = _EMPTY
        if missing > 0 and self._design is not None:
            last = trim + total - 1  # last output needed, counted from the filter's start
            zeros = (last * down) // up + 1 - n_in
            parts = []
            while zeros > 0:
                step = min(zeros, _MAX_STEP)
                parts.append(self._step(np.zeros(step, dtype=np.int16)))
                zeros -= step
            tail = np.concatenate(parts)[:missing] if len(parts) > 1 else parts[0][:missing]
        self.reset()
        return tail.copy() if tail is _EMPTY else tail

    # --- internals ---------------------------------------------------------------------

    def _process_codes(
        self,
        codes: BytesLike | UInt8Array,
        table: F64Array,
        decode: Callable[[BytesLike | UInt8Array], Int16Array],
    ) -> Int16Array:
        idx: UInt8Array = _frombuffer(codes, _U8) if type(codes) is bytes else _as_codes(codes)
        n = idx.shape[0]
        if n == self._fast_n and self._aligned:
            dst, dot, out, y, hist_dst, hist_src, n_out, _, _ = self._fast
            # Decode into the filter input; "wrap" skips the bounds check (uint8 < 256).
            table.take(idx, out=dst, mode="wrap")
            dot(self._matrix, out=out)
            hist_dst[...] = hist_src
            self._n_in += n
            self._n_out += n_out
            _clip(y, _LO, _HI, out=y)
            _rint(y, out=y)
            return y.astype(_I16)
        pcm = decode(codes)  # bytes take the codec's own fast path
        if self._design is None:  # equal rates: the decoded array is already new
            self._n_in += n
            self._n_out += n
            return pcm
        return self._general(pcm)

    def _process_to_codes(
        self, x: Int16Array | BytesLike, table: UInt8Array, wide: UInt8Array
    ) -> UInt8Array:
        if type(x) is _ndarray and x.dtype is _I16 and x.ndim == 1:
            samples: Int16Array = x
        else:
            samples = as_int16(x)
        n = samples.shape[0]
        if n == self._fast_n and self._aligned:
            dst, dot, out, y, hist_dst, hist_src, n_out, low, _ = self._fast
            dst[...] = samples
            dot(self._matrix, out=out)
            hist_dst[...] = hist_src
            self._n_in += n
            self._n_out += n_out
            # Round by the magic constant: the low words of y are now rint(y) as int32.
            if self._wide:  # within ±2**17: the wide table saturates and encodes
                _add(y, _ROUNDING_MAGIC, out=y)
                return wide.take(low, mode="wrap")
            _clip(y, _LO, _HI, out=y)  # within int16: "wrap" gives the uint16 pattern
            _add(y, _ROUNDING_MAGIC, out=y)
            return table.take(low, mode="wrap")
        if self._design is None:  # equal rates: encode the input, no copy first
            self._n_in += n
            self._n_out += n
            return table.take(samples.view(_U16))
        return table.take(self._general(samples).view(_U16))

    def _general(self, samples: Int16Array) -> Int16Array:
        """Any chunk, any state: the reference path (the prepared one gives equal results)."""
        n = samples.shape[0]
        if self._design is None:
            self._n_in += n
            self._n_out += n
            return samples.copy()
        if n <= _MAX_STEP:
            result = self._step(samples)
        else:
            parts = [self._step(samples[i : i + _MAX_STEP]) for i in range(0, n, _MAX_STEP)]
            result = np.concatenate(parts)
        self._align(n)
        return result

    def _align(self, n: int) -> None:
        """After a general step: lay the buffer out for the prepared path if possible.

        Possible when the input ends on a row boundary (then every available output has
        been computed from whole rows) and the start-up trim is behind us.  The history
        the next row needs, ``window - block_in`` inputs, moves to the buffer's start,
        and chunks of ``n`` samples get prepared views if ``n`` is a whole number of rows.
        """
        block_in = self._block_in
        if self._n_in % block_in or self._n_out < self._trim:
            self._aligned = False
            return
        hist = self._window - block_in
        start = self._n_in - hist - self._base
        if start:
            buf = self._buf
            buf[:hist] = buf[start : start + hist]
            self._base += start
        self._aligned = True
        if (
            n != self._fast_n
            and n
            and not n % block_in
            and n <= _MAX_STEP
            and n // block_in * self._block_out <= _FAST_MAX_OUTPUTS
        ):
            layout = self._layouts.get(n)
            if layout is None:
                if len(self._layouts) >= _FAST_SIZES:
                    self._layouts.clear()
                layout = self._layouts[n] = self._make_layout(n)
            self._fast_n, self._fast = n, layout

    def _make_layout(self, n: int) -> _Layout:
        """Views for chunks of ``n`` inputs (a whole number of rows) on an aligned buffer.

        The buffer holds ``hist = window - block_in`` inputs of history, then the chunk:
        row ``r`` of the windowed view is ``buf[r * block_in : r * block_in + window]``,
        and after the product the chunk's last ``hist`` inputs move to the front.  The
        views are made once: creating them costs more than the arithmetic per frame.
        """
        block_in, window = self._block_in, self._window
        hist = window - block_in
        rows = n // block_in
        buf = self._buf
        out = np.empty((rows, self._block_out), dtype=np.float64)
        flat = out.reshape(-1)
        view = _ndarray((rows, window), _F64, buf, 0, (block_in * 8, 8))
        low = flat.view(np.int32)[_LOW_WORD]
        return (
            buf[hist : hist + n],
            view.dot,
            out,
            flat,
            buf[:hist],
            buf[n : n + hist],
            rows * self._block_out,
            low,
            buf[:hist].reshape(1, hist),
        )

    def _step(self, samples: Int16Array) -> Int16Array:
        """Append up to ``_MAX_STEP`` samples and compute the outputs they complete."""
        n = samples.shape[0]
        n_in = self._n_in + n
        n_out = self._n_out
        up, down = self._up, self._down
        n_avail = (n_in * up + down - 1) // down  # outputs whose newest input has arrived
        block_in, block_out, window = self._block_in, self._block_out, self._window
        if self._aligned:
            # The prepared path keeps the history at buf[0] without updating _base;
            # from here on the general path owns the layout (_align may restore it).
            self._base = self._n_in + block_in - window
            self._aligned = False
        base = self._base
        buf = self._buf
        first_row = n_out // block_out
        end = ((n_avail - 1) // block_out + 1) * block_in if n_avail > n_out else n_in
        if end - base > buf.shape[0]:
            # Keep only what the next row still needs; everything after n_in is don't-care
            # (multiplied by zero coefficients for the outputs we keep).
            keep = first_row * block_in + block_in - window
            buf[: self._n_in - keep] = buf[keep - base : self._n_in - base]
            self._base = base = keep
        buf[self._n_in - base : n_in - base] = samples
        self._n_in = n_in
        if n_avail <= n_out:
            return np.zeros(0, dtype=np.int16)
        self._n_out = n_avail
        rows = (n_avail - 1) // block_out + 1 - first_row
        start = first_row * block_in + block_in - window - base
        # Row r of `view` is the window of inputs for matrix row first_row + r; rows
        # overlap (stride block_in < window), so this is a view, not a copy.
        view = _ndarray((rows, window), _F64, buf, start * 8, (block_in * 8, 8))
        scratch = self._scratch
        if rows <= scratch.shape[0]:
            y = _dot(view, self._matrix, out=scratch[:rows]).ravel()
        else:
            y = _dot(view, self._matrix).ravel()
        skip = first_row * block_out
        return _to_int16(y[max(n_out, self._trim) - skip : n_avail - skip])


def resample(x: Int16Array | BytesLike, in_rate: int, out_rate: int) -> Int16Array:
    """Resample a whole signal at once: ``process(x)`` then ``flush()`` of a new stream.

    Args:
        x: ``n`` samples: 1-D ``int16`` array, or little-endian 16-bit bytes.
        in_rate, out_rate: Hz, each one of :data:`SUPPORTED_RATES`.

    Returns:
        A new ``int16`` array of shape ``(round(n * out_rate / in_rate),)``, equal to any
        chunked streaming of the same input through :class:`StreamResampler`.
    """
    stream = StreamResampler(in_rate, out_rate)
    head = stream.process(x)
    tail = stream.flush()
    return np.concatenate((head, tail)) if tail.shape[0] else head


# --- many streams at once --------------------------------------------------------------
#
# At 20 ms per frame the arithmetic of one stream's chunk is small (a 20 x 75 by 75 x 16
# product for 8 -> 16 kHz) and a frame's cost is mostly the half-dozen numpy calls around
# it, which a busy server pays with its caches cold.  The batch functions run the same
# steps once for many streams: gather each stream's history and new chunk into one
# array, one product, one rounding, and hand the history back.  Every sum is exact (see
# the module docstring), so each row equals what the stream's own method returns.


class _Batch:
    """Scratch arrays for batches of up to ``cap`` streams of one rate pair and chunk."""

    __slots__ = ("block_in", "cap", "hist", "matrix", "n", "n_out", "out", "rows", "tails",
                 "views", "windows", "x")

    def __init__(self, stream: StreamResampler, n: int, cap: int) -> None:
        block_in, window = stream._block_in, stream._window
        hist = window - block_in
        rows = n // block_in
        self.cap, self.hist, self.n, self.rows = cap, hist, n, rows
        self.block_in = block_in
        self.n_out = rows * stream._block_out
        self.matrix = stream._matrix
        # Row i: stream i's history then its chunk, laid out like a stream's own buffer.
        self.x = np.empty((cap, hist + n), dtype=np.float64)
        # The product wants contiguous windows: BLAS cannot read the overlapping view.
        self.windows = np.empty((cap * rows, window), dtype=np.float64)
        self.out = np.empty((cap * rows, stream._block_out), dtype=np.float64)
        self.tails = [self.x[i, n : n + hist] for i in range(cap)]
        # Per batch size: the views a batch uses (made once; they cost more than a
        # small batch's arithmetic).
        self.views: dict[int, tuple[F64Array, ...]] = {}

    def views_for(self, b: int) -> tuple[F64Array, ...]:
        """(histories, chunks, overlapping windows, their copy (3-D), the same 2-D,
        product, product as (b, outputs)) for a batch of ``b`` streams."""
        views = self.views.get(b)
        if views is None:
            x, hist, rows, block_in = self.x, self.hist, self.rows, self.block_in
            window = self.windows.shape[1]
            windows = self.windows[: b * rows]
            out = self.out[: b * rows]
            views = self.views[b] = (
                x[:b, :hist],
                x[:b, hist:],
                _ndarray((b, rows, window), _F64, x, 0, (x.strides[0], block_in * 8, 8)),
                windows.reshape(b, rows, window),
                windows,
                out,
                out.reshape(b, self.n_out),
            )
        return views


_batches = threading.local()


def _batch_for(streams: Sequence[StreamResampler], n: int) -> _Batch:
    first = streams[0]
    matrix = first._matrix
    b = len(streams)
    if (
        not all(s._fast_n == n and s._aligned and s._matrix is matrix for s in streams)
        or first._design is None
        or len({id(s) for s in streams}) != b
    ):
        raise ValueError(
            f"every stream must be distinct, resample {first._in_rate} -> {first._out_rate} "
            f"Hz and be prepared for chunks of {n} samples (see StreamResampler.prepared)"
        )
    cache: dict[tuple[int, int, int], _Batch] | None = getattr(_batches, "cache", None)
    if cache is None:
        cache = _batches.cache = {}
    key = (first._in_rate, first._out_rate, n)
    batch = cache.get(key)
    if batch is None or batch.cap < b:
        cap = 16
        while cap < b:
            cap *= 2
        batch = cache[key] = _Batch(first, n, cap)
    return batch


def _run_batch(streams: Sequence[StreamResampler], batch: _Batch) -> F64Array:
    """The product for the chunks already in ``batch.views_for(B)[1]``; returns the
    (B, outputs) float64 result (a view of the scratch)."""
    hists, _, view, windows3, windows, out, result = batch.views_for(len(streams))
    np.concatenate([s._fast[8] for s in streams], axis=0, out=hists)
    windows3[...] = view
    _dot(windows, batch.matrix, out=out)
    n, n_out = batch.n, batch.n_out
    for stream, tail in zip(streams, batch.tails, strict=False):
        stream._fast[4][...] = tail
        stream._n_in += n
        stream._n_out += n_out
    return result


def _check_rows(x: object, b: int) -> None:
    """A 2-D input has one row per stream (flat input is cut into ``b`` equal chunks)."""
    if type(x) is _ndarray and x.ndim != 1 and (x.ndim != 2 or x.shape[0] != b):
        raise ValueError(f"input of shape {x.shape} for {b} streams: give (B, n) or flat")


def _codes_in(
    streams: Sequence[StreamResampler], codes: BytesLike | UInt8Array, table: F64Array
) -> Int16Array:
    if not streams:
        return np.zeros((0, 0), dtype=np.int16)
    b = len(streams)
    _check_rows(codes, b)
    idx = _frombuffer(codes, _U8) if type(codes) is bytes else _as_codes(np.asarray(codes).ravel())
    n, rest = divmod(idx.shape[0], b)
    if rest:
        raise ValueError(f"{idx.shape[0]} codes do not split into {b} equal chunks")
    batch = _batch_for(streams, n)
    table.take(idx.reshape(b, n), out=batch.views_for(b)[1], mode="wrap")
    return _to_int16(_run_batch(streams, batch))


def _samples_in(streams: Sequence[StreamResampler], x: Int16Array | BytesLike) -> F64Array | None:
    """The (B, outputs) product for int16 chunks; ``None`` for no streams."""
    if not streams:
        return None
    b = len(streams)
    _check_rows(x, b)
    if type(x) is _ndarray and x.dtype is _I16:
        samples: Int16Array = x.reshape(-1)
    else:
        samples = as_int16(x if type(x) is not _ndarray else x.reshape(-1))
    n, rest = divmod(samples.shape[0], b)
    if rest:
        raise ValueError(f"{samples.shape[0]} samples do not split into {b} equal chunks")
    batch = _batch_for(streams, n)
    batch.views_for(b)[1][...] = samples.reshape(b, n)
    return _run_batch(streams, batch)


def process_many(streams: Sequence[StreamResampler], x: Int16Array | BytesLike) -> Int16Array:
    """Feed one equal chunk to each of many streams at once.

    Equal, row for row, to ``[s.process(chunk) for s, chunk in zip(streams, chunks)]``
    and cheaper from a few streams on (see ``python -m bench codecs``).

    Args:
        streams: distinct streams of one rate pair, each :meth:`~StreamResampler.prepared`
            for the chunk size.
        x: the chunks in stream order, concatenated: a ``(B, n)`` or ``(B * n,)`` int16
            array, or little-endian 16-bit bytes.

    Returns:
        A new ``(B, k)`` int16 array: row ``i`` is stream ``i``'s output.

    Raises:
        ValueError: a stream of another rate pair or not prepared for the chunk size, or
        input that does not split into ``B`` equal chunks.
    """
    y = _samples_in(streams, x)
    return np.zeros((0, 0), dtype=np.int16) if y is None else _to_int16(y)


def process_ulaw_many(
    streams: Sequence[StreamResampler], codes: BytesLike | UInt8Array
) -> Int16Array:
    """:func:`process_many` for μ-law codes: row ``i`` equals ``streams[i].process_ulaw(chunk)``.

    ``codes`` holds the chunks in stream order, concatenated (bytes or a uint8 array).
    """
    return _codes_in(streams, codes, _ULAW_F64)


def process_alaw_many(
    streams: Sequence[StreamResampler], codes: BytesLike | UInt8Array
) -> Int16Array:
    """:func:`process_many` for A-law codes: row ``i`` equals ``streams[i].process_alaw(chunk)``."""
    return _codes_in(streams, codes, _ALAW_F64)


def _to_codes(
    streams: Sequence[StreamResampler],
    x: Int16Array | BytesLike,
    table: UInt8Array,
    wide: UInt8Array,
) -> UInt8Array:
    y = _samples_in(streams, x)
    if y is None:
        return np.zeros((0, 0), dtype=np.uint8)
    if not streams[0]._wide:
        _clip(y, _LO, _HI, out=y)
        wide = table
    _add(y, _ROUNDING_MAGIC, out=y)
    low = y.view(np.int32)[:, _LOW_WORD]
    return wide.take(low, mode="wrap")


def process_to_ulaw_many(
    streams: Sequence[StreamResampler], x: Int16Array | BytesLike
) -> UInt8Array:
    """:func:`process_many`, encoded to μ-law.

    Row ``i`` equals ``streams[i].process_to_ulaw(chunk)``: a ``(B, k)`` uint8 array.
    """
    return _to_codes(streams, x, _ULAW_ENCODE, _ULAW_WIDE)


def process_to_alaw_many(
    streams: Sequence[StreamResampler], x: Int16Array | BytesLike
) -> UInt8Array:
    """:func:`process_many`, encoded to A-law.

    Row ``i`` equals ``streams[i].process_to_alaw(chunk)``: a ``(B, k)`` uint8 array.
    """
    return _to_codes(streams, x, _ALAW_ENCODE, _ALAW_WIDE)
