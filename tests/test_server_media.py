"""Media through the real server, per provider: handshake, echo, marks, clear, DTMF, stop.

Every test runs a real :class:`MediaStreamServer` on 127.0.0.1:0 and a real websockets
client playing the provider (tests/_util_server.py), which checks every message the
server sends against the provider's documented format.
"""

from __future__ import annotations

import asyncio
import base64
import re

import numpy as np
import pytest
from _util_server import (
    PROVIDERS,
    FakeProvider,
    RecordingBot,
    failing_call_beside_a_good_one,
    running_server,
    scaled,
    ulaw_payload,
)

from audiocodecs.g711 import ulaw_decode
from mediastream.call import Call, DtmfPressed, InboundAudio, PlayoutStarted, PlayoutStopped
from mediastream.echo import echo_bot
from mediastream.errors import LocalProtocolError


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_echo_returns_the_callers_audio_exactly(provider: str) -> None:
    bot = RecordingBot()
    async with running_server(bot) as server:
        fake = FakeProvider(provider)
        async with fake.connect(server):
            await fake.open()
            fake.start_pump()
            sent = ulaw_payload(25, seed=len(provider))
            for i in range(25):
                await fake.send(fake.media(sent[i * 160 : (i + 1) * 160]))
            # 8 kHz bot: decode -> PCM -> encode is the identity for every code but 0x7F.
            assert await fake.wait_audio(len(sent)) == sent
            await bot.wait_for(PlayoutStarted)
            # A mark every mark_interval (0.2 s = 10 frames) of outbound audio.
            await fake.wait_until(lambda f: f.kinds().count("mark") >= 2)
            await fake.send(fake.stop())
            code, reason = await fake.closed()
    assert code == 1000, reason
    assert len(bot.of(InboundAudio)) == 25
    assert bot.calls[0].info.call_id == fake.call_id
    assert bot.calls[0].ended


@pytest.mark.asyncio
async def test_sixteen_khz_bot_hears_and_returns_the_audio() -> None:
    # Twilio's μ-law 8 kHz resampled to a 16 kHz bot and back: the tone survives.
    rate = 8000
    t = np.arange(rate) / rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2")
    from audiocodecs.g711 import ulaw_encode

    wire = ulaw_encode(pcm)
    async with running_server(echo_bot, bot_sample_rate=16000) as server:
        fake = FakeProvider("twilio")
        async with fake.connect(server):
            await fake.open()
            fake.start_pump()
            for i in range(50):
                await fake.send(fake.media(wire[i * 160 : (i + 1) * 160]))
            got = await fake.wait_audio(len(wire))
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000
    back = ulaw_decode(got[: len(wire)]).astype(np.float64)
    sent = pcm.astype(np.float64)
    # Align on the resamplers' delay, then compare: a clean tone, not noise.
    corr = np.correlate(back[2000:6000], sent[2000:2400], mode="valid")
    lag = int(np.argmax(corr))
    segment = back[2000 + lag : 2400 + lag]
    coef = np.corrcoef(segment, sent[2000:2400])[0, 1]
    assert coef > 0.99, coef


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_auto_detection_on_the_shared_path(provider: str) -> None:
    async with running_server(echo_bot) as server:
        fake = FakeProvider(provider)
        async with fake.connect(server, fake.path(auto=True)):
            await fake.open()
            fake.start_pump()
            sent = ulaw_payload(5, seed=7)
            for i in range(5):
                await fake.send(fake.media(sent[i * 160 : (i + 1) * 160]))
            assert await fake.wait_audio(len(sent)) == sent
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000


@pytest.mark.asyncio
@pytest.mark.parametrize(("provider", "encoding", "rate"), [("plivo", "l16", 16000),
                                                            ("telnyx", "pcma", 8000),
                                                            ("telnyx", "l16", 16000)])
async def test_other_codecs_round_trip(provider: str, encoding: str, rate: int) -> None:
    rng = np.random.default_rng(3)
    async with running_server(echo_bot, bot_sample_rate=rate) as server:
        fake = FakeProvider(provider, encoding=encoding, sample_rate=rate)
        if encoding == "l16":
            sent = rng.integers(-20000, 20000, rate // 50 * 10, dtype=np.int16)
            order = ">i2" if provider == "telnyx" else "<i2"  # protocols.md §5.4
            sent_bytes = sent.astype(order).tobytes()
        else:
            sent_bytes = bytes(rng.integers(0, 256, 1600, dtype=np.uint8))
        step = fake.frame_bytes
        async with fake.connect(server):
            await fake.open()
            fake.start_pump()
            for i in range(0, len(sent_bytes), step):
                await fake.send(fake.media(sent_bytes[i : i + step]))
            assert await fake.wait_audio(len(sent_bytes)) == sent_bytes
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000


class TalkThenBargeIn:
    """Speaks 2 s of audio; on DTMF "1" interrupts itself (clear) and records what happened."""

    def __init__(self) -> None:
        self.bot = RecordingBot(echo=False)
        self.speaking_when_pressed: bool | None = None

    async def __call__(self, call: Call) -> None:
        call.send_audio(b"\x10\x00" * 16000, 8000)  # 2 s
        call.end_utterance()
        async for event in call:
            self.bot.events.append(event)
            self.bot._changed.set()
            self.bot._changed.clear()
            if isinstance(event, DtmfPressed) and event.digit == "1":
                self.speaking_when_pressed = call.bot_speaking
                call.clear()


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_dtmf_and_clear(provider: str) -> None:
    talker = TalkThenBargeIn()
    async with running_server(talker, mark_interval=0.1) as server:
        fake = FakeProvider(provider)
        async with fake.connect(server):
            await fake.open()
            fake.start_pump()
            await fake.wait_audio(160 * 10)  # 200 ms played out
            await talker.bot.wait_for(PlayoutStarted)
            await fake.send(fake.dtmf("1"))
            await fake.wait_until(lambda f: "clear" in f.kinds())
            stopped = await talker.bot.wait_for(PlayoutStopped)
            kinds = fake.kinds()
            after_clear = kinds[kinds.index("clear") + 1 :]
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000
        metrics = server.metrics.render()[0].decode()
    assert [e.digit for e in talker.bot.of(DtmfPressed)] == ["1"]
    assert talker.speaking_when_pressed is True
    assert stopped[0].cut is True
    # 200 ms were sent (lead 80 ms), so about 120 ms had played when the key was pressed.
    assert 0.05 < stopped[0].played_s < 1.0
    # Nothing of the interrupted utterance is sent after the clear.
    assert "media" not in after_clear
    # Paced: at most the lead (80 ms) plus a frame ahead of what played when cut.
    assert len(fake.audio) < 2 * 8000
    # The provider's acknowledgement timed the clear.
    assert "mediastream_clear_to_silence_seconds_count 1.0" in metrics
    pattern = rf'mediastream_frames_cleared_total{{provider="{provider}"}} (\S+)'
    cleared = re.search(pattern, metrics)
    assert cleared is not None and float(cleared.group(1)) > 50  # most of 2 s never went out


class DtmfSender:
    def __init__(self) -> None:
        self.error: Exception | None = None
        self.done = asyncio.Event()

    async def __call__(self, call: Call) -> None:
        try:
            call.send_dtmf("12#")
        except LocalProtocolError as exc:
            self.error = exc
        self.done.set()
        async for _ in call:
            pass


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_send_dtmf_only_where_the_socket_carries_it(provider: str) -> None:
    sender = DtmfSender()
    async with running_server(sender) as server:
        fake = FakeProvider(provider)
        async with fake.connect(server):
            await fake.open()
            fake.start_pump()
            async with asyncio.timeout(scaled(5)):
                await sender.done.wait()
            if provider == "plivo":
                await fake.wait_until(lambda f: "dtmf" in f.kinds())
                message = next(m for m in fake.received if m["event"] == "sendDTMF")
                assert message["dtmf"] == "12#"
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000
    if provider == "plivo":
        assert sender.error is None
    else:
        assert sender.error is not None and "DTMF" in str(sender.error)


class Goodbye:
    """Says 0.3 s and returns: the call must end after the caller heard it (1000)."""

    async def __call__(self, call: Call) -> None:
        call.send_audio(b"\x20\x00" * 2400, 8000)
        call.end_utterance()


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_bot_returning_ends_the_call_after_playout(provider: str) -> None:
    async with running_server(Goodbye()) as server:
        fake = FakeProvider(provider)
        async with fake.connect(server):
            await fake.open()
            fake.start_pump()
            code, reason = await fake.closed()
    assert code == 1000, reason
    assert len(fake.audio) == 2400  # every frame, then the close
    # The close came only after the final mark was acknowledged.
    assert fake.kinds()[-1] == "mark"


class SpeakAndWait:
    """Speaks 0.3 s, then records when wait_played() says the caller heard it."""

    def __init__(self) -> None:
        self.played: bool | None = None
        self.done = asyncio.Event()
        self.bot = RecordingBot(echo=False)

    async def __call__(self, call: Call) -> None:
        call.send_audio(b"\x20\x00" * 2400, 8000)
        call.end_utterance()
        self.played = await call.wait_played(scaled(10))
        self.done.set()
        await self.bot(call)


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_mark_echoes_drive_the_playout_ledger(provider: str) -> None:
    speaker = SpeakAndWait()
    async with running_server(speaker) as server:
        fake = FakeProvider(provider)
        async with fake.connect(server):
            await fake.open()
            audio = bytearray()
            marks: list[str] = []
            # Read like the provider but hold every acknowledgement back.
            while len(audio) < 2400 or len(marks) < 2:
                message = await fake.recv()
                kind = fake.check(message)
                if kind == "media":
                    audio += fake.payload_of(message)
                elif kind == "mark":
                    marks.append(fake.mark_name(message))
            # Everything was sent, nothing acknowledged: the caller has not heard it yet.
            assert not speaker.done.is_set()
            for name in marks:
                await fake.send(fake.mark_echo(name))
            async with asyncio.timeout(scaled(5)):
                await speaker.done.wait()
            assert speaker.played is True
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000
    # 0.2 s mark interval: one mark after 10 frames, the final one after 15.
    assert len(marks) == 2 and marks[0] != marks[1]


class Crasher:
    async def __call__(self, call: Call) -> None:
        await call.receive()
        raise RuntimeError("secret internals /etc/passwd")


@pytest.mark.asyncio
async def test_a_crashing_bot_ends_only_its_own_call(caplog: pytest.LogCaptureFixture) -> None:
    crasher = Crasher()
    healthy = RecordingBot()
    from mediastream.agents import AgentRegistry

    registry = AgentRegistry(healthy, {"crash": crasher})
    async with running_server(registry) as server:
        bad, (code, reason) = await failing_call_beside_a_good_one(server, "crash", bad_frames=1)
    assert code == 1011
    assert reason == "bot error"  # no internals on the wire
    failures = [r for r in caplog.records if "bot failed" in r.getMessage()]
    assert failures and bad.call_id in failures[0].getMessage()
    assert failures[0].exc_info is not None


@pytest.mark.asyncio
async def test_custom_parameters_reach_the_bot_and_numbers_are_read() -> None:
    bot = RecordingBot()
    async with running_server(bot) as server:
        fake = FakeProvider("twilio", params={"tenant": "acme", "from_number": "+15551230001"})
        async with fake.connect(server):
            await fake.open()
            await bot.started.wait()
            info = bot.calls[0].info
            assert info.custom_parameters["tenant"] == "acme"
            assert info.from_number == "+15551230001"
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000


def test_payload_helper_never_uses_negative_zero() -> None:
    assert 0x7F not in ulaw_payload(50)
    assert base64.b64decode(base64.b64encode(ulaw_payload(1))) == ulaw_payload(1)


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_finished_call_leaves_no_reference_cycles_of_ours(provider: str) -> None:
    # Reference counting must free a finished call: what is left to the cyclic
    # collector makes its full collections long, a pause every live call hears.
    import gc

    async with running_server(echo_bot, bot_sample_rate=16000) as server:
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(2):
                fake = FakeProvider(provider)
                async with fake.connect(server):
                    await fake.open()
                    fake.start_pump()
                    sent = ulaw_payload(10, seed=3)
                    for i in range(10):
                        await fake.send(fake.media(sent[i * 160 : (i + 1) * 160]))
                    await fake.wait_audio(len(sent))
                    await fake.send(fake.stop())
                    assert (await fake.closed())[0] == 1000
            async with asyncio.timeout(scaled(5)):
                while server.media_connections:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            gc.collect()
            ours = sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage
                           if type(o).__module__.split(".")[0] in ("mediastream", "audiocodecs")})
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert ours == []
