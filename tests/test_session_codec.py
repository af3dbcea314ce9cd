"""session.codec: the one-step decode+resample / resample+encode callables.

Each must equal the two-step composition it replaces (decoder_for then process;
process then encoder_for) on the same stream, frame after frame, including when the
stream is also fed directly (silence standing in for lost frames).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from audiocodecs.resample import StreamResampler
from mediastream.protocols.events import MediaFormat
from mediastream.session.codec import (
    decoder_for,
    encoder_for,
    resampling_decoder,
    resampling_encoder,
)

FORMATS = {
    "pcmu8k": MediaFormat("pcmu", 8000),
    "pcma8k": MediaFormat("pcma", 8000),
    "l16be16k": MediaFormat("l16", 16000, byteorder="big"),
    "l16le16k": MediaFormat("l16", 16000, byteorder="little"),
}


def noise(n: int, seed: int) -> npt.NDArray[np.int16]:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(rng.standard_normal(n) * 9000.0), -32768, 32767).astype(np.int16)


def pairs(bot_rates: list[int]) -> list[tuple[str, int]]:
    """Format and bot rate combinations that need a resampler (equal rates do not)."""
    return [(n, r) for n in FORMATS for r in bot_rates if FORMATS[n].sample_rate != r]


@pytest.mark.parametrize(("name", "bot_rate"), pairs([16000, 24000, 48000]))
def test_resampling_decoder_equals_decode_then_resample(name: str, bot_rate: int) -> None:
    fmt = FORMATS[name]
    frame = fmt.sample_rate // 50
    x = noise(40 * frame, seed=bot_rate)
    payloads = [encoder_for(fmt)(x[i : i + frame]) for i in range(0, x.shape[0], frame)]
    fused_rs = StreamResampler(fmt.sample_rate, bot_rate)
    fused = resampling_decoder(fmt, fused_rs)
    plain_rs = StreamResampler(fmt.sample_rate, bot_rate)
    decode = decoder_for(fmt)
    silence = np.zeros(frame, dtype=np.int16)
    for k, payload in enumerate(payloads):
        if k % 9 == 4:  # a lost frame: the session feeds silence to the same stream
            assert np.array_equal(fused_rs.process(silence), plain_rs.process(silence))
        got = fused(payload)
        assert got.dtype == np.int16
        assert np.array_equal(got, plain_rs.process(decode(payload))), k
    assert np.array_equal(fused_rs.flush(), plain_rs.flush())


@pytest.mark.parametrize(("name", "bot_rate"), pairs([16000, 24000, 44100]))
def test_resampling_encoder_equals_resample_then_encode(name: str, bot_rate: int) -> None:
    fmt = FORMATS[name]
    frame = bot_rate // 50
    x = noise(40 * frame, seed=bot_rate + 1)
    x[5 * frame : 7 * frame] = 32767  # a full-scale step: the filter overshoots, saturates
    fused = resampling_encoder(fmt, StreamResampler(bot_rate, fmt.sample_rate))
    plain_rs = StreamResampler(bot_rate, fmt.sample_rate)
    encode = encoder_for(fmt)
    sizes = [frame] * 30 + [7, frame - 7, frame, frame]
    pos = 0
    for size in sizes:
        got = fused(x[pos : pos + size])
        assert isinstance(got, bytes)
        assert got == encode(plain_rs.process(x[pos : pos + size])), pos
        pos += size
