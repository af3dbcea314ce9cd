"""Telnyx L16 byte order, decided per call from the audio (issue 14).

Telnyx documents no byte order for L16 and public bridges disagree (protocols.md §5.4).
These tests stream real speech, the bundled bot/assets recordings, in both byte orders
and check that every call reads its audio right, sends back in the same order, and counts
the decision in /metrics; ``big``/``little`` force the order both ways.
"""

from __future__ import annotations

import asyncio
import base64
import json
import wave
from pathlib import Path

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from _util_server import FakeProvider, RecordingBot, running_server

from mediastream.call import InboundAudio
from mediastream.protocols import AudioReceived, MediaFormat, SendAudio, protocol_for
from mediastream.protocols.telnyx import L16OrderDetector, TelnyxProtocol

ASSETS = Path(__file__).resolve().parent.parent / "bot" / "assets"
START = {
    "event": "start", "sequence_number": "1", "stream_id": "S1",
    "start": {"call_control_id": "v3:l16", "media_format":
              {"encoding": "L16", "sample_rate": 16000, "channels": 1}},
}


def _speech(name: str = "greeting.wav") -> npt.NDArray[np.int16]:
    with wave.open(str(ASSETS / name)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").copy()


def _frames(pcm: npt.NDArray[np.int16], order: str) -> list[bytes]:
    dtype = ">i2" if order == "big" else "<i2"
    return [pcm[i : i + 320].astype(dtype).tobytes() for i in range(0, len(pcm) - 319, 320)]


def _media(n: int, payload: bytes) -> str:
    return json.dumps({
        "event": "media", "sequence_number": str(n + 2), "stream_id": "S1",
        "media": {"track": "inbound", "chunk": str(n + 1), "timestamp": str(20 * n),
                  "payload": base64.b64encode(payload).decode()},
    }, separators=(",", ":"))


@pytest.mark.parametrize("name", ["greeting.wav", "goodbye.wav", "caller-demo.wav"])
def test_every_speech_frame_that_decides_decides_right(name: str) -> None:
    with wave.open(str(ASSETS / name)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        spf = w.getframerate() // 50
    decided = 0
    for i in range(0, len(pcm) - spf + 1, spf):
        frame = pcm[i : i + spf]
        big = L16OrderDetector.decide(frame.astype(">i2").tobytes())
        little = L16OrderDetector.decide(frame.astype("<i2").tobytes())
        assert big in (None, "big") and little in (None, "little"), i // spf
        decided += big is not None
    assert decided >= 20  # speech decides; only quiet frames abstain


@pytest.mark.parametrize("order", ["big", "little"])
def test_a_telnyx_l16_call_reads_and_answers_in_the_order_its_audio_shows(order: str) -> None:
    pcm = _speech()
    protocol = protocol_for("telnyx")
    assert isinstance(protocol, TelnyxProtocol)
    protocol.receive(json.dumps(START))
    events = [e for n, f in enumerate(_frames(pcm, order)) for e in protocol.receive(_media(n, f))]
    assert protocol.l16_decision == (order, "detected")
    audio = [e for e in events if isinstance(e, AudioReceived)]
    decided_at = next(i for i, e in enumerate(audio) if e.format.byteorder == order)
    assert all(e.format == MediaFormat("l16", 16000, 1, order) for e in audio[decided_at:])
    # Before the decision the audio was quiet (it could not decide): read either way it
    # is near silence; after it every frame decodes to the recording exactly.
    dtype = ">i2" if order == "big" else "<i2"
    got = np.concatenate([np.frombuffer(e.payload, dtype) for e in audio[decided_at:]])
    assert np.array_equal(got, pcm[decided_at * 320 : decided_at * 320 + len(got)])
    assert decided_at < 25  # within the first half second of the greeting
    assert protocol._template is not None  # the fast path is back once decided
    # Back to the caller in the same order: the session encodes big-endian (the RFC
    # order); a little-endian stream gets each payload byte-swapped.
    [frame] = protocol.send(SendAudio(np.array([1, -2], ">i2").tobytes()))
    wire = base64.b64decode(json.loads(frame)["media"]["payload"])
    assert np.frombuffer(wire, dtype).tolist() == [1, -2]


def test_a_forced_order_needs_no_audio() -> None:
    protocol = protocol_for("telnyx", l16_byteorder="little")
    [started] = protocol.receive(json.dumps(START))
    assert started.call.inbound_format.byteorder == "little"  # type: ignore[attr-defined]
    assert started.call.outbound_format.byteorder == "little"  # type: ignore[attr-defined]
    assert isinstance(protocol, TelnyxProtocol)
    assert protocol.l16_decision == ("little", "forced")
    with pytest.raises(ValueError, match="auto, big or little"):
        protocol_for("telnyx", l16_byteorder="middle")


def test_silence_leaves_the_order_to_the_default_after_a_second() -> None:
    protocol = protocol_for("telnyx")
    assert isinstance(protocol, TelnyxProtocol)
    protocol.receive(json.dumps(START))
    for n in range(L16OrderDetector.MAX_FRAMES):
        assert protocol.l16_order_in_use == ("big", "default")  # undecided: read big
        protocol.receive(_media(n, bytes(640)))
    assert protocol.l16_decision == ("big", "default")


@pytest.mark.asyncio
@pytest.mark.parametrize("order", ["big", "little"])
async def test_the_server_hears_speech_in_either_order_and_counts_it(order: str) -> None:
    pcm = _speech("goodbye.wav")
    bot = RecordingBot(echo=False)
    async with running_server(bot, bot_sample_rate=16000) as server:
        fake = FakeProvider("telnyx", encoding="l16", sample_rate=16000)
        async with fake.connect(server):
            await fake.open()
            frames = _frames(pcm, order)
            for frame in frames:
                await fake.send(fake.media(frame))
            await bot.wait_for(InboundAudio, len(frames) - 2)
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000
        await asyncio.wait_for(bot.ended.wait(), 5)
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{server.port}/metrics") as r:
            metrics = await r.text()
    heard = np.frombuffer(b"".join(e.pcm for e in bot.of(InboundAudio)), "<i2")
    # The bot rate is the wire rate (16 kHz): after the first few (quiet, undecided)
    # frames the bot hears the recording sample for sample.
    assert len(heard) == len(frames) * 320
    tail = heard[-6400:]  # the last 0.4 s: speech, long after the decision
    assert np.abs(tail).max() > 3000
    assert np.array_equal(tail, pcm[len(heard) - 6400 : len(heard)])
    line = (f'mediastream_telnyx_l16_byteorder_total{{how="detected",order="{order}"}} 1.0')
    assert line in metrics
