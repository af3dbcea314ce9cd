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
* **Cost.**  One strided matrix product per call plus four elementwise numpy calls; a
  20 ms frame takes a few microseconds.  Arithmetic is float64 on integer-valued data
  with coefficients on a 2**-32 grid, so every sum is exact and order-independent.
"""

from __future__ import annotations

import numbers

import numpy as np
import numpy.typing as npt

from ._fir import SUPPORTED_RATES, PolyphaseDesign, design
from .pcm import BytesLike, Int16Array, as_int16

__all__ = ["SUPPORTED_RATES", "StreamResampler", "resample"]

_MAX_STEP = 2048  # input samples per internal step: bounds per-stream memory (~20 KB)
_SCRATCH_OUTPUTS = 1024  # product results up to this size reuse a per-stream buffer
_F64 = np.dtype(np.float64)
_EMPTY = np.zeros(0, dtype=np.int16)
_EMPTY.flags.writeable = False


def _check_rate(name: str, rate: object) -> int:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"{name} must be an int (Hz), got {type(rate).__name__}")
    for supported in SUPPORTED_RATES:  # accepts 8000, 8000.0, numpy.int64(8000), ...
        if rate == supported:
            return supported
    listed = ", ".join(str(r) for r in SUPPORTED_RATES)
    raise ValueError(f"unsupported {name} {rate!r} Hz; supported rates: {listed}")


def _to_int16(y: npt.NDArray[np.float64]) -> Int16Array:
    """Round a scratch float64 vector to a new int16 array, saturating (overwrites ``y``)."""
    _minimum(y, 32767.0, out=y)
    _maximum(y, -32768.0, out=y)
    _rint(y, out=y)
    return y.astype(_I16)


# Module-level bindings: each saves a global+attribute lookup on the per-frame path.
_minimum, _maximum, _rint, _dot, _ndarray = np.minimum, np.maximum, np.rint, np.dot, np.ndarray
_I16 = np.dtype(np.int16)


class StreamResampler:
    """Resample one continuous int16 mono stream from ``in_rate`` to ``out_rate``.

    Not thread-safe; use one instance per stream.  ``in_rate == out_rate`` is allowed and
    passes samples through (copied) with zero delay.

    Args:
        in_rate: input sample rate in Hz, one of :data:`SUPPORTED_RATES`.
        out_rate: output sample rate in Hz, one of :data:`SUPPORTED_RATES`.

    Raises:
        ValueError: unsupported rate.  TypeError: rate is not a number.
    """

    __slots__ = (
        "_base",
        "_block_in",
        "_block_out",
        "_buf",
        "_design",
        "_down",
        "_in_rate",
        "_matrix",
        "_n_in",
        "_n_out",
        "_out_rate",
        "_scratch",
        "_trim",
        "_up",
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
        # History of float64 inputs: buf[i] is input sample number base + i.  Negative
        # sample numbers are the zeros before the stream starts.  Slack for one full
        # step plus partial rows at both ends.
        self._buf = np.zeros(self._window + _MAX_STEP + 3 * self._block_in, dtype=np.float64)
        rows = _SCRATCH_OUTPUTS // self._block_out + 2
        self._scratch = np.empty((rows, self._block_out), dtype=np.float64)
        self._base = 0
        self._n_in = 0
        self._n_out = 0
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

    # --- streaming ---------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all input: the next :meth:`process` starts a new, independent stream."""
        self._buf.fill(0.0)
        self._base = self._block_in - self._window  # input 0 sits after window-1 zeros
        self._n_in = 0
        self._n_out = 0

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
        if type(x) is np.ndarray and x.dtype is _I16 and x.ndim == 1:
            samples: Int16Array = x  # fast path for the common case
        else:
            samples = as_int16(x)
        n = samples.shape[0]
        if self._design is None:
            self._n_in += n
            self._n_out += n
            return samples.copy()
        if n <= _MAX_STEP:
            return self._step(samples)
        parts = [self._step(samples[i : i + _MAX_STEP]) for i in range(0, n, _MAX_STEP)]
        return np.concatenate(parts)

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

    def _step(self, samples: Int16Array) -> Int16Array:
        """Append up to ``_MAX_STEP`` samples and compute the outputs they complete."""
        n = samples.shape[0]
        n_in = self._n_in + n
        n_out = self._n_out
        up, down = self._up, self._down
        n_avail = (n_in * up + down - 1) // down  # outputs whose newest input has arrived
        block_in, block_out, window = self._block_in, self._block_out, self._window
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
