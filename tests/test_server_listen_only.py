"""Listen-only agents over a real server: both tracks reach the bot, tagged; the bot
cannot send; nothing at all goes back to the provider (issue 14).

The streams are the providers' documented forks: Twilio ``<Start><Stream
track="both_tracks">`` (``start.tracks`` ``["inbound", "outbound"]``, protocols.md §1.2),
Telnyx ``stream_track=both_tracks`` (media ``track`` ``inbound``/``outbound``, §2.2) and
Plivo ``<Stream bidirectional="false" audioTrack="both">`` (§3.4).
"""

from __future__ import annotations

import asyncio

import pytest
from _util_server import FakeProvider, RecordingBot, running_server, ulaw_payload

from mediastream.agents import AgentRegistry
from mediastream.call import Call, InboundAudio
from mediastream.errors import ListenOnlyError


class ListeningBot(RecordingBot):
    """Records events and, on the first frame, tries every way of talking back."""

    def __init__(self) -> None:
        super().__init__(echo=False)
        self.refusals: list[str] = []

    async def __call__(self, call: Call) -> None:
        assert call.listen_only and not call.capabilities.send_audio
        for attempt in (lambda: call.send_audio(b"\x00" * 640, 16000),
                        lambda: call.send_dtmf("1")):
            try:
                attempt()
            except ListenOnlyError as exc:
                self.refusals.append(str(exc))
        call.clear()  # nothing to clear: no clear message may go out
        call.end_utterance()  # nothing to mark
        await super().__call__(call)


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", ["twilio", "telnyx", "plivo"])
async def test_a_listen_only_agent_hears_both_tracks_and_sends_nothing(provider: str) -> None:
    bot, talker = ListeningBot(), RecordingBot()
    registry = AgentRegistry(talker, {"notes": bot}, listen_only=["notes"])
    async with running_server(registry) as server:
        fake = FakeProvider(provider, tracks=("inbound", "outbound"))
        async with fake.connect(server, fake.path("notes")):
            await fake.open()
            fake.start_pump()
            caller, other = ulaw_payload(10, seed=1), ulaw_payload(10, seed=2)
            for i in range(10):
                await fake.send(fake.media(caller[i * 160 : (i + 1) * 160]))
                await fake.send(fake.media(other[i * 160 : (i + 1) * 160], "outbound"))
            frames = await bot.wait_for(InboundAudio, 19)
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000
            await bot.ended.wait()
    frames = bot.of(InboundAudio)
    tracks = [f.track for f in frames]
    assert tracks.count("caller") >= 9 and tracks.count("other") >= 9
    assert set(tracks) == {"caller", "other"}
    assert bot.ended.is_set() and bot.calls[0].ended
    assert len(bot.refusals) == 2 and all("listen-only" in r for r in bot.refusals)
    assert fake.call_id in bot.refusals[0]
    # Not one message went back: no media, no mark/checkpoint, no clear.
    assert fake.received == []
    assert not talker.calls


@pytest.mark.asyncio
async def test_a_talking_agent_still_ignores_its_own_echoed_track() -> None:
    bot = RecordingBot(echo=False)
    async with running_server(AgentRegistry(bot)) as server:
        fake = FakeProvider("telnyx", tracks=("inbound", "outbound"))
        async with fake.connect(server):
            await fake.open()
            payload = ulaw_payload(2, seed=3)
            await fake.send(fake.media(payload[:160], "outbound"))
            await fake.send(fake.media(payload[160:]))
            await bot.wait_for(InboundAudio, 1)
            await asyncio.sleep(0)
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000
    assert {f.track for f in bot.of(InboundAudio)} == {"caller"}


def test_listen_only_names_must_be_agents() -> None:
    with pytest.raises(ValueError, match="not agents"):
        AgentRegistry(None, {"a": RecordingBot()}, listen_only=["b"])
