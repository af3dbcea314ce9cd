"""``bot_frame_ms``: the bot's input frames may be 20, 40 or 60 ms long.

Longer frames mean fewer frames through a bot's pipeline (a Pipecat bot's cost is per
frame). The audio must be exactly the 20 ms audio, only cut differently, on the session
alone and through the server end to end.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest
from _util_server import echo_call, running_server, ulaw_payload

from mediastream.call import InboundAudio
from mediastream.config import Config
from mediastream.echo import echo_bot
from mediastream.protocols.events import AudioReceived
from mediastream.session import CallSession
from tests._util_session import PCMU_8K, Recorder, call_info


def _bot_frames(frame_ms: int, rate: int, payload: bytes) -> list[InboundAudio]:
    host = Recorder()
    session = CallSession(call_info(), host, bot_sample_rate=rate, bot_frame_ms=frame_ms,
                          now=0.0)
    for i in range(len(payload) // 160):
        session.receive_event(
            AudioReceived(payload[i * 160:(i + 1) * 160], PCMU_8K, sequence=i + 2, chunk=i + 1),
            i * 0.02)
    assert not host.failures
    return [e for e in host.events if isinstance(e, InboundAudio)]


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("frame_ms", [40, 60])
def test_longer_bot_frames_carry_exactly_the_20_ms_audio(frame_ms: int, rate: int) -> None:
    payload = ulaw_payload(24, seed=frame_ms + rate)  # 480 ms: whole frames of 20/40/60
    short = _bot_frames(20, rate, payload)
    long = _bot_frames(frame_ms, rate, payload)
    per_frame = frame_ms // 20
    assert len(short) == 24 and len(long) == 24 // per_frame
    assert {len(f.pcm) for f in long} == {2 * rate * frame_ms // 1000}
    assert all(f.sample_rate == rate for f in long)
    assert b"".join(f.pcm for f in long) == b"".join(f.pcm for f in short)
    assert np.frombuffer(b"".join(f.pcm for f in long), "<i2").any()  # not silence


def test_other_frame_lengths_are_refused_by_config_env_and_session() -> None:
    with pytest.raises(ValueError, match="20, 40 or 60"):
        Config(bot_frame_ms=30)
    assert Config.from_env({"MEDIASTREAM_BOT_FRAME_MS": "40"}).bot_frame_ms == 40
    with pytest.raises(ValueError, match="bot_frame_ms"):
        Config.from_env({"MEDIASTREAM_BOT_FRAME_MS": "25"})
    with pytest.raises(ValueError, match="20, 40 or 60"):
        CallSession(call_info(), Recorder(), bot_frame_ms=10, now=0.0)


def test_serve_refuses_a_bad_bot_frame_ms_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mediastream", "serve", "--bot", "echo", "--bot-frame-ms", "30",
         "--port", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "bot_frame_ms must be 20, 40 or 60" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.asyncio
async def test_an_echo_call_with_40_ms_bot_frames_returns_the_same_audio() -> None:
    """Through the server: 16 kHz bot, 40 ms frames in, the echo's 40 ms chunks out (two
    wire frames each); the caller gets back exactly what a 20 ms server sends."""
    async with (
        running_server(echo_bot, bot_sample_rate=16000, bot_frame_ms=40) as long,
        running_server(echo_bot, bot_sample_rate=16000) as short,
    ):
        got, want = await asyncio.gather(echo_call(long.port, 40, 7), echo_call(short.port, 40, 7))
    assert got == want
    assert len(set(got)) > 16  # real audio, not codec silence
