"""The session's resampler steps: what a step converts equals the two-step composition.

The inbound path hands out one step per payload (G.711 decoded straight into the
filter; L16 decoded first), the outbound encoder one per chunk (G.711 encoded straight
from the filter; L16 encoded after). Converted by the batcher -- at once here -- the
result must equal decoder_for then process (and process then encoder_for) on the same
stream, frame after frame, including when silence stands in for lost frames.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from audiocodecs.resample import StreamResampler
from mediastream.call import InboundAudio
from mediastream.protocols.events import MediaFormat
from mediastream.session import ResampleBatcher
from mediastream.session.codec import decoder_for, encoder_for, lead_pad
from mediastream.session.inbound import InboundPath
from mediastream.session.outbound import OutboundEncoder
from mediastream.session.stats import SessionStats

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


def _convert(step: object) -> bytes:
    """Run a step the way a session does, through an at-once batcher."""
    assert isinstance(step, tuple), step
    rs, kind, data = step
    got: list[bytes | Exception] = []
    ResampleBatcher().submit(rs, kind, data, got.append)
    assert isinstance(got[0], bytes), got
    return got[0]


@pytest.mark.parametrize(("name", "bot_rate"), pairs([16000, 24000, 48000]))
def test_inbound_steps_equal_decode_then_resample(name: str, bot_rate: int) -> None:
    fmt = FORMATS[name]
    frame = fmt.sample_rate // 50
    x = noise(40 * frame, seed=bot_rate)
    payloads = [encoder_for(fmt)(x[i : i + frame]) for i in range(0, x.shape[0], frame)]
    path = InboundPath(fmt, bot_rate, SessionStats())
    plain_rs = StreamResampler(fmt.sample_rate, bot_rate)
    decode = decoder_for(fmt)
    silence = np.zeros(frame, dtype=np.int16)
    got, want = bytearray(), bytearray(bytes(2 * lead_pad(plain_rs)))
    for k, payload in enumerate(payloads):
        if k % 9 == 4:  # a lost frame: the session feeds silence to the same stream
            got += b"".join(e.pcm for e in path.converted(_convert(path.fill_step())))
            want += plain_rs.process(silence).tobytes()
        events = path.converted(_convert(path.step(payload)))
        assert all(isinstance(e, InboundAudio) for e in events)
        got += b"".join(e.pcm for e in events)
        want += plain_rs.process(decode(payload)).tobytes()
    got += b"".join(e.pcm for e in path.flush())
    want += plain_rs.flush().tobytes()
    assert got == want


@pytest.mark.parametrize(("name", "bot_rate"), pairs([16000, 24000, 44100]))
def test_outbound_steps_equal_resample_then_encode(name: str, bot_rate: int) -> None:
    fmt = FORMATS[name]
    frame = bot_rate // 50
    x = noise(40 * frame, seed=bot_rate + 1)
    x[5 * frame : 7 * frame] = 32767  # a full-scale step: the filter overshoots, saturates
    encoder = OutboundEncoder(fmt)
    plain_rs = StreamResampler(bot_rate, fmt.sample_rate)
    encode = encoder_for(fmt)
    sizes = [frame] * 30 + [7, frame - 7, frame, frame]
    pos = 0
    got = bytearray()
    want = bytearray(encode(np.zeros(lead_pad(plain_rs), dtype=np.int16)))
    for size in sizes:
        chunk = x[pos : pos + size]
        got += b"".join(encoder.converted(_convert(encoder.step(chunk.tobytes(), bot_rate))))
        want += encode(plain_rs.process(chunk))
        pos += size
    wire_frame = fmt.frame_bytes(20)
    whole = len(want) // wire_frame * wire_frame
    assert bytes(got) == bytes(want[:whole])
