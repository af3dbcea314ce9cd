"""DTMF dual tones, synthesised with numpy (no bundled audio, any sample rate).

The frequency pairs are ITU-T Q.23's keypad: a row tone (697, 770, 852, 941 Hz) plus a
column tone (1209, 1336, 1477, 1633 Hz). ITU-T Q.24 asks receivers to accept tones of
40 ms or more; 120 ms with short raised-cosine ramps is clearly audible, detected by any
receiver, and free of clicks.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["DTMF_FREQUENCIES", "dtmf_tone"]

_ROWS = (697.0, 770.0, 852.0, 941.0)
_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYS = ("123A", "456B", "789C", "*0#D")

#: digit -> (row Hz, column Hz), ITU-T Q.23 Table 1.
DTMF_FREQUENCIES: dict[str, tuple[float, float]] = {
    key: (_ROWS[r], _COLS[c]) for r, row in enumerate(_KEYS) for c, key in enumerate(row)
}


@lru_cache(maxsize=128)
def dtmf_tone(digit: str, sample_rate: int, duration: float = 0.12, level: float = 0.3) -> bytes:
    """The dual tone of ``digit`` as int16 little-endian mono PCM bytes.

    ``level`` is each tone's peak as a fraction of full scale (the sum peaks at twice it).
    Raises ``ValueError`` for a key that is not on the DTMF keypad or a rate too low to
    carry the column tones.
    """
    try:
        low, high = DTMF_FREQUENCIES[digit.upper()]
    except KeyError:
        raise ValueError(f"not a DTMF key: {digit!r}") from None
    if sample_rate < 2 * high:
        raise ValueError(f"sample rate {sample_rate} Hz cannot carry {high:.0f} Hz")
    n = round(duration * sample_rate)
    t = np.arange(n) / sample_rate
    wave = np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)
    ramp = min(n // 2, round(0.005 * sample_rate))
    if ramp:
        edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        wave[:ramp] *= edge
        wave[n - ramp:] *= edge[::-1]
    return np.round(wave * level * 32767).astype("<i2").tobytes()
