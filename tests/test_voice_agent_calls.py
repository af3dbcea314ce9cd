"""The voice agent holds real conversations: the real server, ``mediastream call``, and
local stand-ins for Deepgram, OpenAI and Cartesia (bench/voice_standins.py).

The bot is ``bot.voice_agent`` as shipped, pointed at the stand-ins through its endpoint
settings (``DEEPGRAM_BASE_URL``, ``OPENAI_BASE_URL``, ``CARTESIA_URL``). The caller is the
simulated Twilio caller saying the bundled ``caller-demo.wav`` words at chosen moments; it
plays what it receives on the provider's 20 ms clock and records what it heard. The
stand-in TTS makes each word a tone burst followed by a short silence, so counting bursts
in the recording counts the words the caller heard. Every stand-in checks what it
receives (auth header, encoding, sample rate, message shapes): ``problems`` must stay empty.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import pytest_asyncio

from bench.voice_standins import Delays, Script, VoiceServices, word_seconds
from bot.transport import pipecat_runner
from mediastream.caller import CallReport, run_calls
from mediastream.caller.audio import read_wav
from mediastream.config import Config
from mediastream.server import MediaStreamServer

pytest.importorskip("deepgram", reason="needs pipecat-ai[deepgram] (deepgram-sdk)")

# deepgram-sdk connects with websockets' legacy client, which websockets deprecates; the
# suite turns warnings into errors, which would fail every STT connection.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:websockets\.\S+ is deprecated:DeprecationWarning")

ASSETS = Path(__file__).resolve().parent.parent / "bot" / "assets"
RATE = 8000
#: caller-demo.wav is 4.2 s of silence, then "Hello parrot! Can you hear me?"; the
#: caller here says its last words, "Can you hear me?" (0.8 s, no pause inside, so that
#: the bot's VAD cannot end the turn in the middle).
SPEECH_FROM_S = 5.2
GREETING = "Hi there!"
LONG_REPLY = ("Sure, I can hear you very clearly, and I am happy to help you with "
              "anything you need today.")


def caller_speech() -> np.ndarray:
    pcm, rate = read_wav(ASSETS / "caller-demo.wav")
    assert rate == RATE
    return pcm[round(SPEECH_FROM_S * RATE):]


def write_caller(path: Path, seconds: float, at: tuple[float, ...]) -> Path:
    """A WAV of ``seconds`` with the caller's words starting at each time in ``at``."""
    speech = caller_speech()
    signal = np.zeros(round(seconds * RATE), dtype=np.int16)
    for start in at:
        i = round(start * RATE)
        n = min(len(speech), len(signal) - i)
        signal[i:i + n] = speech[:n]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(signal.tobytes())
    return path


def heard_words(recording: str | None) -> list[tuple[float, float]]:
    """(start, end) in seconds of each word the caller heard: a run of loud 10 ms blocks."""
    assert recording is not None
    pcm, rate = read_wav(recording)
    block = rate // 100
    blocks = pcm[: len(pcm) // block * block].astype(np.float64).reshape(-1, block)
    loud = np.sqrt(np.mean(blocks ** 2, axis=1)) > 1000
    runs: list[list[int]] = []
    for i in np.flatnonzero(loud):
        if runs and i == runs[-1][1]:
            runs[-1][1] = int(i) + 1
        else:
            runs.append([int(i), int(i) + 1])
    return [(start / 100, end / 100) for start, end in runs]


def heard_replies(recording: str | None) -> list[int]:
    """Words per bot utterance in what the caller heard: words less than 0.3 s apart
    belong to one utterance (the stand-in's words are 60 ms apart)."""
    replies: list[int] = []
    last_end = -1.0
    for start, end in heard_words(recording):
        if start - last_end >= 0.3:
            replies.append(0)
        replies[-1] += 1
        last_end = end
    return replies


@dataclass
class Conversation:
    services: VoiceServices
    server: MediaStreamServer
    agent: ModuleType
    tmp: Path

    async def call(self, seconds: float, speak_at: tuple[float, ...],
                   dtmf: str = "") -> CallReport:
        wav = write_caller(self.tmp / "caller.wav", seconds, speak_at)
        report = await run_calls(f"ws://127.0.0.1:{self.server.port}/ws/twilio",
                                 provider="twilio", seconds=seconds, wav=wav, dtmf=dtmf,
                                 record_dir=self.tmp / "calls")
        call = report.calls[0]
        assert call.protocol_errors == 0, call.protocol_error_samples
        return call

    def requests(self) -> list[list[tuple[str, str]]]:
        """(role, content) of each LLM request's conversation (without the system prompt
        and the greeting instruction), first attempts only."""
        return [[(m["role"], m["content"]) for m in r["body"]["messages"]
                 if m["role"] not in ("system", "developer")]
                for r in self.services.llm_requests if r["attempt"] == 0]


@pytest_asyncio.fixture
async def conversation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                       tmp_path: Path) -> AsyncIterator[Conversation]:
    script, delays = getattr(request, "param", None) or (Script(), Delays())
    async with VoiceServices(script, delays) as services:
        for name, value in services.environ().items():
            monkeypatch.setenv(name, value)
        sys.modules.pop("bot.voice_agent", None)
        with warnings.catch_warnings():
            # Pipecat's tts_service module subclasses a class it deprecated; the warning
            # fires on import and is not about anything this project calls.
            warnings.filterwarnings("ignore", "`AudioContextTTSService` is deprecated",
                                    DeprecationWarning)
            agent = importlib.import_module("bot.voice_agent")
        bot = pipecat_runner(agent.run_bot)
        async with MediaStreamServer(Config(port=0, drain_timeout=1.0), bot=bot) as server:
            yield Conversation(services, server, agent, tmp_path)
        assert services.problems == []


def script(*replies: str, tts_speed: float = 10.0, **kwargs: object) -> tuple[Script, Delays]:
    """The conversation's script, with the stand-ins' own delays at zero."""
    return (Script(transcripts=("Can you hear me?", "What time is it?"),
                   replies=(GREETING, *replies), **kwargs),  # type: ignore[arg-type]
            Delays(tts_speed=tts_speed))


@pytest.mark.asyncio
@pytest.mark.parametrize("conversation", [script("Yes, I hear you.", "It is noon.")],
                         indirect=True)
async def test_a_two_turn_conversation(conversation: Conversation) -> None:
    call = await conversation.call(7.5, speak_at=(1.2, 4.5))
    assert call.end == "completed" and call.close_code == 1000
    # The caller heard the greeting, then one reply after each of its turns, whole.
    assert heard_replies(call.recording) == [2, 4, 3]
    # Pipecat interrupts at the start of every user turn; nothing was playing then (the
    # caller spoke after each reply), so no clear reached the provider.
    assert call.clears == 0
    # Each reply came after the caller's words ended: two turn latencies measured.
    assert len(call.latencies_ms) == 2 and min(call.latencies_ms) > 0
    # The LLM got the persona's prompt first, then the greeting instruction; then each
    # transcript in turn, and its earlier replies in full.
    first = conversation.services.llm_requests[0]["body"]["messages"]
    assert [m["role"] for m in first] == ["system", "developer"]
    assert first[0]["content"].startswith(conversation.agent.PERSONAS["general"].system_prompt)
    assert conversation.requests() == [
        [],
        [("assistant", GREETING), ("user", "Can you hear me?")],
        [("assistant", GREETING), ("user", "Can you hear me?"),
         ("assistant", "Yes, I hear you."), ("user", "What time is it?")],
    ]
    # The services were asked for what the call carries: 16 kHz linear16 into the STT
    # (the session's rate), 8 kHz PCM out of the TTS (Twilio's wire rate).
    stt = conversation.services.stt_connections
    assert [(c["query"]["encoding"], c["query"]["sample_rate"]) for c in stt] == [
        ("linear16", "16000")]
    assert {r["output_format"]["sample_rate"] for r in conversation.services.tts_requests} == {
        8000}


@pytest.mark.asyncio
# The TTS makes audio only a little faster than real time here, so that the reply is
# still being made when the caller barges in and its context must be cancelled.
@pytest.mark.parametrize("conversation", [script(LONG_REPLY, "It is noon.", tts_speed=1.5)],
                         indirect=True)
async def test_a_barge_in_cuts_the_reply_and_the_llm_keeps_only_what_was_heard(
    conversation: Conversation,
) -> None:
    call = await conversation.call(7.5, speak_at=(1.2, 4.0))
    long_words = LONG_REPLY.split()
    replies = heard_replies(call.recording)
    assert len(replies) == 3, replies
    heard = replies[1]
    assert 0 < heard < len(long_words)
    # The interruption cleared the provider's buffer and cancelled the reply's TTS
    # context, which then made no more audio...
    assert call.clears >= 1
    reply_context = next(r["context_id"] for r in conversation.services.tts_requests
                         if r["transcript"] == LONG_REPLY)
    assert conversation.services.tts_cancels == [reply_context]
    # ...and once cleared, no more of the reply was heard than the bounded lead.
    assert max(call.clear_to_silence_ms) <= conversation.server.config.playout_lead * 1000 + 20
    # The next request carries the reply only as far as the caller heard it: a prefix
    # of the reply, the words heard (the last one maybe only begun).
    requests = conversation.requests()
    assert len(requests) == 3
    role, said = requests[2][2]
    assert role == "assistant"
    said_words = said.split()
    assert said_words == long_words[: len(said_words)]
    assert heard - 1 <= len(said_words) <= heard
    assert requests[2][3] == ("user", "What time is it?")


@pytest.mark.asyncio
@pytest.mark.parametrize("conversation", [script(LONG_REPLY)], indirect=True)
async def test_pound_during_speech_cuts_it_says_goodbye_and_hangs_up(
    conversation: Conversation, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.voice_agent")
    call = await conversation.call(8.0, speak_at=(1.2,), dtmf="#@3.5")
    # The reply was cut at the key, "Goodbye!" was heard whole, then the server ended
    # the call.
    assert call.clears >= 1
    words = heard_words(call.recording)
    before = [w for w in words if w[0] < 3.5]
    assert 2 < len(before) < 2 + len(LONG_REPLY.split()), words
    # The goodbye follows the clear at once, so it may join the cut word into one run of
    # sound; either way nothing else starts after the key, and the last sound heard
    # lasts until the whole goodbye could have played after it.
    assert len([w for w in words if w[0] >= 3.5]) <= 1, words
    goodbye = word_seconds(conversation.agent.GOODBYE)
    assert words[-1][1] >= 3.5 + goodbye - 0.02, words
    assert words[-1][1] - words[-1][0] >= goodbye - 0.02, words
    assert call.end == "server_closed" and call.close_code == 1000
    assert words[-1][1] - 0.02 <= call.duration_s < 6.0  # hung up after the goodbye
    assert any(r["transcript"] == conversation.agent.GOODBYE
               for r in conversation.services.tts_requests)
    assert len(conversation.requests()) == 2  # no new turn after the goodbye
    assert "caller pressed #" in caplog.text


@pytest.mark.asyncio
@pytest.mark.parametrize("conversation", [script("Yes, I hear you.", "It is noon.",
                                                 drop_stt_after=1)], indirect=True)
async def test_the_stt_socket_dropping_mid_call_reconnects_and_the_call_goes_on(
    conversation: Conversation, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.voice_agent")
    # Deepgram's service waits 4 s before it reconnects: the second turn comes after.
    call = await conversation.call(10.0, speak_at=(1.2, 7.3))
    assert conversation.services.stt_drops == 1
    assert len(conversation.services.stt_connections) == 2
    assert call.end == "completed" and call.close_code == 1000
    assert heard_replies(call.recording) == [2, 4, 3]
    assert conversation.requests()[-1][-1] == ("user", "What time is it?")
    assert "speech-to-text connection failed" in caplog.text
    assert "the call goes on" in caplog.text


@pytest.mark.asyncio
@pytest.mark.parametrize("conversation", [script("Yes, I hear you.", "It is noon.",
                                                 fail_llm=frozenset({1}))], indirect=True)
async def test_the_llm_answering_500_gets_an_apology_not_silence(
    conversation: Conversation, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.voice_agent")
    call = await conversation.call(10.5, speak_at=(1.2, 7.5))
    failed = [r["attempt"] for r in conversation.services.llm_requests if r["index"] == 1]
    assert failed == [0, 1, 2]  # the OpenAI client's two retries, then it gave up
    apology = conversation.agent.APOLOGY
    assert any(r["transcript"] == apology for r in conversation.services.tts_requests)
    # The caller heard the greeting, the apology, then the next turn's reply: the call
    # went on. The failed turn's words stay in the context for the next request.
    assert heard_replies(call.recording) == [2, len(apology.split()), 3]
    assert call.end == "completed"
    assert conversation.requests()[-1][-1] == ("user", "What time is it?")
    assert "the LLM failed this turn" in caplog.text


@pytest.mark.asyncio
@pytest.mark.parametrize("conversation", [script("Yes, I hear you.", drop_stt_after=1,
                                                 refuse_stt_reconnect=True)], indirect=True)
async def test_an_stt_that_cannot_come_back_ends_the_call_cleanly(
    conversation: Conversation, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.voice_agent")
    # The socket drops after the first turn and every reconnection is refused: Deepgram's
    # service tries twice, 4 s apart, then gives up; the bot says so and hangs up.
    call = await conversation.call(15.0, speak_at=(1.2,))
    assert conversation.services.stt_drops == 1
    assert len(conversation.services.stt_connections) == 3
    out_of_order = conversation.agent.OUT_OF_ORDER
    assert any(r["transcript"] == out_of_order for r in conversation.services.tts_requests)
    # Greeting, the answer, then the whole apology; then the server ended the call.
    assert heard_replies(call.recording) == [2, 4, len(out_of_order.split())]
    assert call.end == "server_closed" and call.close_code == 1000
    assert heard_words(call.recording)[-1][1] - 0.02 <= call.duration_s < 14.5
    assert "speech-to-text connection failed" in caplog.text
    assert "speech-to-text is out of order" in caplog.text
    assert "ending the call" in caplog.text


@pytest.mark.asyncio
@pytest.mark.parametrize("conversation", [script()], indirect=True)
async def test_a_tts_that_rejects_the_key_ends_the_call_at_once(
    conversation: Conversation, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.voice_agent")
    monkeypatch.setenv("CARTESIA_API_KEY", "ca-revoked")  # read by each call
    call = await conversation.call(6.0, speak_at=(1.2,))
    # Nothing can be said, so nothing is heard, and the call does not linger silent.
    assert heard_words(call.recording) == []
    assert call.end == "server_closed" and call.close_code == 1000
    assert call.duration_s < 5.0
    assert "text-to-speech is out of order" in caplog.text
    assert conversation.services.problems == ["cartesia: bad X-API-Key"]
    conversation.services.problems.clear()  # the refusal was the point
