"""Both-tracks forks end to end (issue 14): ``mediastream call --tracks both`` dials in
through each provider's webhook, follows the listen-only answer document (Twilio/TeXML
``<Start><Stream track="both_tracks">``, Plivo ``<Stream bidirectional="false"
audioTrack="both">``) and streams the caller's probes on the inbound track and the other
party (a steady tone) on the outbound one; the listen-only bot hears both, apart."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import numpy as np
import pytest
from _util_caller import scaled

from mediastream.agents import AgentRegistry
from mediastream.call import Call, InboundAudio
from mediastream.caller import run_calls
from mediastream.caller.audio import OTHER_PARTY_HZ
from mediastream.config import Config
from mediastream.echo import echo_bot
from mediastream.server import MediaStreamServer

PROVIDERS = ("twilio", "telnyx", "plivo")


def _peak_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, np.int16).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum[1:]) + 1) * rate / len(x)


@pytest.mark.asyncio
async def test_a_both_tracks_call_reaches_a_listen_only_bot_per_provider() -> None:
    heard: dict[str, dict[str, list[bytes]]] = defaultdict(lambda: defaultdict(list))
    refused: list[str] = []

    async def notes(call: Call) -> None:
        try:
            call.send_audio(b"\x00" * 320, 8000)
        except Exception as exc:  # ListenOnlyError: recorded, the bot goes on listening
            refused.append(type(exc).__name__)
        async for event in call:
            if isinstance(event, InboundAudio):
                heard[call.info.provider][event.track].append(event.pcm)

    registry = AgentRegistry(echo_bot, {"notes": notes})
    config = Config(host="127.0.0.1", port=0, listen_only_agents="notes",
                    listen_continue="+15550001111")
    async with MediaStreamServer(config, bot=registry) as server:
        base = f"http://127.0.0.1:{server.port}"
        reports = await asyncio.wait_for(asyncio.gather(*(
            run_calls(f"{base}/{p}?agent=notes", provider=p, seconds=2.0,  # type: ignore[arg-type]
                      tracks="both")
            for p in PROVIDERS)), scaled(20))
    for provider, report in zip(PROVIDERS, reports, strict=True):
        call = report.calls[0]
        assert not call.handshake_failed, call.failure
        assert call.end == "completed", (provider, call.end, call.close_reason)
        # A listen-only stream: nothing came back, and nothing was expected to.
        assert call.frames_received == 0 and call.protocol_errors == 0, provider
        tracks = heard[provider]
        assert set(tracks) == {"caller", "other"}, provider
        assert len(tracks["caller"]) >= 90 and len(tracks["other"]) >= 90, provider
        rate = 16000  # the server's default bot rate
        other = b"".join(tracks["other"][10:-10])
        assert abs(_peak_hz(other, rate) - OTHER_PARTY_HZ) < 10, provider
        caller = np.frombuffer(b"".join(tracks["caller"]), np.int16)
        # The caller's track holds the probes (600-1800 Hz bursts), not the other party.
        loud = caller[np.abs(caller) > 3000]
        assert len(loud) > 0
        assert _peak_hz(b"".join(tracks["caller"]), rate) < 2000, provider
    assert refused == ["ListenOnlyError"] * 3
