"""Design of the resampler's low-delay polyphase FIR filters (numpy only, cached).

A rational resampler by ``up/down`` (``L/M``) conceptually inserts ``L - 1`` zeros between
input samples, low-pass filters at the intermediate rate ``in_rate * L``, and keeps every
``M``-th sample.  The low-pass here is designed in three steps:

1. A linear-phase prototype: Kaiser-windowed sinc, passband edge ``0.85 * f_n``,
   stopband edge ``f_n`` where ``f_n`` is the lower of the two Nyquist frequencies (so
   3.4 kHz / 4 kHz whenever 8 kHz is involved), Kaiser attenuation ``ATTENUATION_DB``.
2. Minimum-phase conversion by the homomorphic (real-cepstrum) method on a zero-padded
   FFT: same magnitude response, but the energy moves to the start of the impulse
   response.  A linear-phase filter this sharp delays everything by half its length
   (≈4 ms at 8 kHz); the minimum-phase one delays low frequencies ≈0.25 ms and the
   passband edge ≈1.3 ms.  The price is phase distortion within the passband, which is
   inaudible for speech at these magnitudes.
3. Polyphase matrix: taps rearranged so that one matrix product yields ``B * L`` outputs
   from each window of the input (see :func:`polyphase_matrix`).  Coefficients are
   rounded to multiples of ``2**-FRACTION_BITS`` so that with int16 inputs every partial
   sum is an exactly representable float64: results do not depend on summation order,
   which is what makes streaming bit-identical to one-shot under any chunking.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "ATTENUATION_DB",
    "FRACTION_BITS",
    "PASSBAND_FRACTION",
    "SUPPORTED_RATES",
    "PolyphaseDesign",
    "design",
    "group_delay",
    "kaiser_lowpass",
    "minimum_phase",
    "polyphase_matrix",
]

FloatArray = npt.NDArray[np.float64]

SUPPORTED_RATES = (8000, 16000, 24000, 44100, 48000)
"""Sample rates (Hz) the resampler designs filters for, in any pair."""
ATTENUATION_DB = 80.0
"""Kaiser design attenuation; measured stopband is ≈79.5 dB (spec: ≥ 70 dB)."""
PASSBAND_FRACTION = 0.85
"""Passband edge as a fraction of the lower Nyquist frequency (3.4 kHz of 4 kHz)."""
FRACTION_BITS = 32
"""Coefficients are integer multiples of ``2**-FRACTION_BITS``."""
_BLOCK_INPUTS = 64  # aim for this many input samples per matrix row (see _choose_block)
_CEPSTRUM_FLOOR = 10.0 ** (-150.0 / 20.0)  # keeps log|H| finite at stopband zeros


def kaiser_lowpass(rate: float, pass_hz: float, stop_hz: float, atten_db: float) -> FloatArray:
    """Linear-phase Kaiser-windowed-sinc low-pass with unit DC gain.

    The length and window shape come from Kaiser's empirical formulas for the given
    transition band and attenuation.

    Returns:
        float64 taps, shape ``(N,)``.
    """
    if atten_db > 50.0:
        beta = 0.1102 * (atten_db - 8.7)
    else:
        beta = 0.5842 * (atten_db - 21.0) ** 0.4 + 0.07886 * (atten_db - 21.0)
    transition = 2.0 * math.pi * (stop_hz - pass_hz) / rate
    n_taps = math.ceil((atten_db - 7.95) / (2.285 * transition)) + 1
    cutoff = 0.5 * (pass_hz + stop_hz) / rate  # cycles per sample
    t = np.arange(n_taps) - 0.5 * (n_taps - 1)
    taps: FloatArray = np.sinc(2.0 * cutoff * t) * np.kaiser(n_taps, beta)
    taps /= taps.sum()
    return taps


def minimum_phase(taps: FloatArray) -> FloatArray:
    """Minimum-phase FIR with (nearly) the same magnitude response, same length.

    Homomorphic method: fold the real cepstrum of ``log|H|`` onto positive quefrencies
    and exponentiate.  The FFT is padded 16x (to a power of two) so that cepstral
    aliasing stays far below the stopband.

    Args:
        taps: float64 taps, shape ``(N,)``.

    Returns:
        float64 taps, shape ``(N,)``, unit DC gain.
    """
    n = taps.shape[0]
    nfft = 1 << max(10, math.ceil(math.log2(16 * n)))
    log_magnitude = np.log(np.maximum(np.abs(np.fft.rfft(taps, nfft)), _CEPSTRUM_FLOOR))
    cepstrum = np.fft.irfft(log_magnitude, nfft)
    cepstrum[1 : nfft // 2] *= 2.0
    cepstrum[nfft // 2 + 1 :] = 0.0
    result: FloatArray = np.fft.irfft(np.exp(np.fft.rfft(cepstrum)), nfft)[:n]
    result /= result.sum()
    return result


def group_delay(taps: FloatArray, rate: float, max_hz: float) -> tuple[FloatArray, FloatArray]:
    """Group delay of an FIR on a uniform grid from 0 to ``max_hz`` (at least 256 points).

    Uses ``tau(w) = Re(DTFT(n h[n]) / DTFT(h[n]))``, which needs no phase unwrapping,
    evaluated by zero-padded FFTs.

    Args:
        taps: float64, shape ``(N,)``.  rate: sample rate of ``taps`` in Hz.

    Returns:
        ``(freqs_hz, delay_seconds)``, both float64 of shape ``(F,)``.
    """
    n_taps = taps.shape[0]
    nfft = 1 << math.ceil(math.log2(max(2 * n_taps, 256 * rate / max_hz)))
    h = np.fft.rfft(taps, nfft)
    nh = np.fft.rfft(np.arange(n_taps) * taps, nfft)
    bins = int(max_hz * nfft / rate) + 1
    freqs = np.arange(bins, dtype=np.float64) * (rate / nfft)
    delays: FloatArray = np.real(nh[:bins] / h[:bins]) / rate
    return freqs, delays


def polyphase_matrix(taps: FloatArray, up: int, down: int, block: int) -> FloatArray:
    """Arrange a prototype (at ``in_rate * up``) into a ``(window, block * up)`` matrix.

    Row ``r`` of the strided input view holds the ``window`` inputs ending at input
    ``(r + 1) * block * down - 1``; its product with this matrix gives outputs
    ``r * block * up`` .. ``(r + 1) * block * up - 1``.  Output ``n`` depends only on inputs
    up to ``floor(n * down / up)``: the filter is causal, with no look-ahead.

    Args:
        taps: prototype, float64, shape ``(N,)``, unit DC gain at the high rate.

    Returns:
        float64, shape ``(window, block * up)`` with
        ``window = ceil(N / up) + down - 1 + (block - 1) * down``; entries are multiples
        of ``2**-FRACTION_BITS`` and each column sums to ≈1.
    """
    phase_len = -(-taps.shape[0] // up)
    span = block * down
    window = phase_len + down - 1 + (block - 1) * down
    matrix = np.zeros((window, block * up), dtype=np.float64)
    scaled = taps * up  # zero-stuffing by `up` divides the gain by `up`
    for o in range(block * up):
        newest = (o * down) // up  # newest input this output uses, relative to the row
        phase = scaled[(o * down) % up :: up]
        rows = newest + window - span - np.arange(phase.shape[0])
        matrix[rows, o] = phase
    scale = float(1 << FRACTION_BITS)
    quantized: FloatArray = np.round(matrix * scale) / scale
    return quantized


def _choose_block(down: int) -> int:
    """Input blocks per matrix row: larger rows mean fewer overlapping copies (faster)."""
    return max(1, min(8, _BLOCK_INPUTS // down))


@dataclass(frozen=True, slots=True)
class PolyphaseDesign:
    """Everything the resampler needs for one rate pair; immutable and shared."""

    in_rate: int
    out_rate: int
    up: int
    """L: output samples per ``down`` input samples."""
    down: int
    """M."""
    block: int
    """B: base blocks (``down`` inputs, ``up`` outputs) per matrix row."""
    taps: FloatArray
    """Prototype at ``in_rate * up``, gain ``up``, on the coefficient grid; read-only."""
    matrix: FloatArray
    """``(window, block * up)`` coefficients, read-only."""
    trim: int
    """Output samples held back at the start (and released by flush)."""
    pass_hz: float
    stop_hz: float
    group_delay_min: float
    """Minimum group delay over ``[0, pass_hz]``, seconds."""
    group_delay_max: float
    """Maximum group delay over ``[0, pass_hz]``, seconds."""
    group_delay_mean: float
    """Mean group delay over ``[0, pass_hz]``, seconds (``trim`` is this, rounded)."""
    peak_gain: float
    """Largest column L1 norm of ``matrix``: no output exceeds ``peak_gain`` times the
    largest input magnitude (≈3.1–3.3 for the supported pairs)."""

    @property
    def window(self) -> int:
        """Input samples per matrix row."""
        return int(self.matrix.shape[0])


@functools.cache
def design(in_rate: int, out_rate: int) -> PolyphaseDesign:
    """Design (once per pair, then cached) the filter for ``in_rate -> out_rate``.

    Rates must differ and both be in :data:`SUPPORTED_RATES` (checked by the caller).
    First use of a 44.1 kHz pair costs tens of milliseconds; the others about one.
    """
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    proto_rate = float(in_rate * up)
    nyquist = 0.5 * min(in_rate, out_rate)
    pass_hz, stop_hz = PASSBAND_FRACTION * nyquist, nyquist
    taps = minimum_phase(kaiser_lowpass(proto_rate, pass_hz, stop_hz, ATTENUATION_DB))
    block = _choose_block(down)
    matrix = polyphase_matrix(taps, up, down, block)
    scale = float(1 << FRACTION_BITS)
    grid_taps = np.round(taps * up * scale) / scale  # exactly the values in `matrix`
    grid_taps.flags.writeable = False
    # Exactness: |x| <= 2**15 and every |partial sum| < 2**15 * column L1 norm must fit
    # the 53-bit mantissa at a resolution of 2**-FRACTION_BITS.
    worst = float(np.abs(matrix).sum(axis=0).max())
    if math.log2(worst) + 15 + FRACTION_BITS >= 52:
        raise AssertionError("filter coefficients too large for exact float64 sums")
    matrix.flags.writeable = False
    _, delays = group_delay(taps, proto_rate, pass_hz)
    mean = float(delays.mean())
    return PolyphaseDesign(
        in_rate=in_rate,
        out_rate=out_rate,
        up=up,
        down=down,
        block=block,
        taps=grid_taps,
        matrix=matrix,
        trim=round(mean * out_rate),
        pass_hz=pass_hz,
        stop_hz=stop_hz,
        group_delay_min=float(delays.min()),
        group_delay_max=float(delays.max()),
        group_delay_mean=mean,
        peak_gain=worst,
    )
