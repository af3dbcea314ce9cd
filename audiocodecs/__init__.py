"""Audio codecs for telephony media streams: G.711, L16 and sample-rate conversion.

Pure functions and one streaming class on numpy arrays; imports nothing else of ours.

* :mod:`audiocodecs.g711`: μ-law / A-law <-> int16, bit-exact with ``audioop``.
* :mod:`audiocodecs.pcm`: 16-bit linear PCM in either byte order, input normalising.
* :mod:`audiocodecs.resample`: low-delay streaming resampler, chunking-exact; its
  ``process_ulaw``/``process_alaw`` and ``process_to_ulaw``/``process_to_alaw`` fuse
  G.711 decoding or encoding into the resampling step; ``process_many`` and its G.711
  forms (``process_ulaw_many`` ...) feed one chunk to each of many streams at once.

PCM is always a 1-D native ``int16`` array (mono); G.711 codes are a 1-D ``uint8``
array.  Bytes-like inputs are accepted everywhere (PCM bytes are little-endian).
Errors are plain ``ValueError`` (bad value, shape or length) and ``TypeError`` (bad
type or dtype).
"""

from __future__ import annotations

from .g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_decode,
    alaw_encode,
    alaw_silence,
    ulaw_decode,
    ulaw_encode,
    ulaw_silence,
)
from .pcm import (
    as_int16,
    l16be_decode,
    l16be_encode,
    l16le_decode,
    l16le_encode,
    pcm_silence,
)
from .resample import (
    SUPPORTED_RATES,
    StreamResampler,
    process_alaw_many,
    process_many,
    process_to_alaw_many,
    process_to_ulaw_many,
    process_ulaw_many,
    resample,
)

__all__ = [
    "ALAW_SILENCE",
    "SUPPORTED_RATES",
    "ULAW_SILENCE",
    "StreamResampler",
    "alaw_decode",
    "alaw_encode",
    "alaw_silence",
    "as_int16",
    "l16be_decode",
    "l16be_encode",
    "l16le_decode",
    "l16le_encode",
    "pcm_silence",
    "process_alaw_many",
    "process_many",
    "process_to_alaw_many",
    "process_to_ulaw_many",
    "process_ulaw_many",
    "resample",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_silence",
]
