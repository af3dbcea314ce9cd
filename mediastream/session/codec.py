"""Codec selection for one direction of a stream, and the lead-pad rule.

Maps a :class:`~mediastream.protocols.events.MediaFormat` to the :mod:`audiocodecs`
decoder/encoder it needs (μ-law, A-law per ITU-T G.711; L16 little- or big-endian per
protocols.md §5.4), and rejects what we cannot play with :class:`UnsupportedDataError`
(close code 1003) before any audio flows.

When the wire rate differs from the bot's, the resampling is a step of its own (see
:mod:`mediastream.session.batch`); for G.711 it is one fused
:class:`~audiocodecs.resample.StreamResampler` step (codes decoded straight into the
filter, or the filter's output encoded straight to codes), the hot path of every 8 kHz
call with a 16 or 24 kHz bot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeAlias

import numpy as np

from audiocodecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from audiocodecs.pcm import Int16Array, as_int16, l16be_decode, l16be_encode, l16le_encode
from audiocodecs.resample import StreamResampler
from mediastream.errors import UnsupportedDataError
from mediastream.protocols.events import MediaFormat

__all__ = [
    "FRAME_S",
    "SUPPORTED_RATES",
    "Decoder",
    "Encoder",
    "check_format",
    "decoder_for",
    "encoder_for",
    "lead_pad",
]

#: Every frame the session handles, both directions, is 20 ms (protocols.md §0).
FRAME_S: Final = 0.02
#: Rates :class:`audiocodecs.StreamResampler` converts between in any direction.
SUPPORTED_RATES: Final = frozenset({8000, 16000, 24000, 44100, 48000})

Decoder: TypeAlias = Callable[[bytes], Int16Array]
Encoder: TypeAlias = Callable[[Int16Array], bytes]


def check_format(fmt: MediaFormat, direction: str) -> None:
    """Raise :class:`UnsupportedDataError` unless ``fmt`` is mono at a supported rate."""
    if fmt.encoding not in ("pcmu", "pcma", "l16"):
        raise UnsupportedDataError(f"{direction} encoding {fmt.encoding!r} is not supported")
    if fmt.sample_rate not in SUPPORTED_RATES:
        raise UnsupportedDataError(f"{direction} sample rate {fmt.sample_rate} is not supported")
    if fmt.channels != 1:
        raise UnsupportedDataError(
            f"{direction} has {fmt.channels} channels; only mono is supported"
        )


def _l16le_decode(data: bytes) -> Int16Array:
    # A read-only view of the payload: the session only reads decoded samples, so the
    # copy l16le_decode makes is not needed (one numpy call less per frame).
    return as_int16(data)


def decoder_for(fmt: MediaFormat) -> Decoder:
    """The function turning one wire payload of ``fmt`` into native int16 samples."""
    if fmt.encoding == "pcmu":
        return ulaw_decode
    if fmt.encoding == "pcma":
        return alaw_decode
    return _l16le_decode if fmt.byteorder == "little" else l16be_decode


def _g711(encode: Callable[[Int16Array], np.ndarray]) -> Encoder:
    def encoder(pcm: Int16Array) -> bytes:
        return encode(pcm).tobytes()

    return encoder


def encoder_for(fmt: MediaFormat) -> Encoder:
    """The function turning native int16 samples into wire bytes of ``fmt``."""
    if fmt.encoding == "pcmu":
        return _g711(ulaw_encode)
    if fmt.encoding == "pcma":
        return _g711(alaw_encode)
    return l16le_encode if fmt.byteorder == "little" else l16be_encode


def lead_pad(resampler: StreamResampler) -> int:
    """Samples of silence to put before a fresh resampler stream's first output.

    A fresh :class:`~audiocodecs.resample.StreamResampler` withholds exactly
    ``delay_samples`` outputs (after ``N`` inputs it has returned
    ``ceil(N * out / in) - delay_samples``). Putting that much silence first makes 20 ms
    input chunks map onto whole 20 ms output frames from the start; without it every
    frame would wait for the next chunk to complete it: 20 ms of added latency in each
    direction for audio that arrives in 20 ms pieces (the common case). The pad shows the
    filter's own group delay as silence instead of holding audio back.
    """
    return resampler.delay_samples
