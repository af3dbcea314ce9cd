"""The parrot's turn logic in a real Pipecat pipeline with the real Silero VAD.

The caller's "speech" is the committed espeak-ng prompt (speech-like audio Silero hears
as a voice); the greeting and goodbye are short tones here so the tests need not sit
through seconds of real-time playout. The full bot, with its WAV prompts, runs over a
real WebSocket in test_bot_server.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest
from _util_bot import MemoryCall, load_wav, scaled, tone
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.workers.runner import WorkerRunner

from bot import parrot
from bot.tones import DTMF_FREQUENCIES
from bot.transport import MediaStreamTransport

RATE = 16000
GREETING = tone(1500, 0.2, RATE)
GOODBYE = tone(600, 0.3, RATE)
SILENCE = bytes(RATE * 2)  # one second


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


class Parrot:
    """The parrot pipeline over a MemoryCall, with short tone prompts."""

    def __init__(self) -> None:
        self.call = MemoryCall(sample_rate=RATE)
        transport = MediaStreamTransport(self.call)
        vad = parrot.PrimedVADProcessor(vad_analyzer=SileroVADAnalyzer(
            params=VADParams(stop_secs=parrot.TURN_STOP_SECS)))
        self.processor = parrot.ParrotProcessor(
            sample_rate=RATE, greeting=(GREETING, RATE), goodbye=(GOODBYE, RATE))
        self.worker = PipelineWorker(
            Pipeline([transport.input(), vad, self.processor, transport.output()]),
            params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
            enable_rtvi=False, idle_timeout_secs=None,
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Parrot:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        self.task = asyncio.create_task(runner.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.call.end("test over")  # teardown need not sit through the playout
        await asyncio.wait_for(self.task, scaled(10))

    def sent_after(self, index: int) -> bytes:
        return b"".join(s.pcm for s in self.call.sent[index:])


def speech() -> bytes:
    pcm, rate = load_wav("greeting.wav")
    assert rate == RATE
    return pcm


def peak_frequencies(pcm: bytes) -> list[float]:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / RATE)
    low = freqs < 1100
    return [float(freqs[low][np.argmax(spectrum[low])]),
            float(freqs[~low][np.argmax(spectrum[~low])])]


@pytest.mark.asyncio
async def test_greets_then_plays_the_callers_turn_back() -> None:
    async with Parrot() as p:
        await until(lambda: len(p.call.sent) == 1)
        assert p.call.sent[0].pcm == GREETING
        await until(lambda: not p.call.bot_speaking)  # the greeting was heard

        words = speech()
        p.call.feed(SILENCE + words + SILENCE)
        await until(lambda: len(p.call.sent) == 2)
        played = p.call.sent[1]
        assert played.rate == RATE
        # The caller's own samples come back untouched: the whole utterance minus at
        # most the VAD's pre-roll slack at the start and the pause that ended the turn.
        core = words[int(0.25 * RATE) * 2: -int(0.25 * RATE) * 2]
        assert core in played.pcm
        assert abs(len(played.pcm) - len(words)) / 2 / RATE < 0.8
        assert len(p.call.clears) == 0


@pytest.mark.asyncio
async def test_a_caller_who_speaks_at_once_is_heard() -> None:
    # Without priming, Silero and the smoothed volume start from zero and miss a short
    # word in the first half second of the call.
    async with Parrot() as p:
        words, _ = load_wav("goodbye.wav")
        p.call.feed(words + SILENCE)
        await until(lambda: len(p.call.sent) == 2)
        assert words[int(0.1 * RATE) * 2: int(0.4 * RATE) * 2] in p.call.sent[1].pcm


@pytest.mark.asyncio
async def test_speaking_over_the_parrot_interrupts_it() -> None:
    async with Parrot() as p:
        await until(lambda: len(p.call.sent) == 1 and not p.call.bot_speaking)
        words = speech()
        p.call.feed(words + SILENCE)
        await until(lambda: len(p.call.sent) == 2 and p.call.bot_speaking)
        # Talk over the playback (3.5 s long): the parrot stops and listens.
        p.call.feed(words[: RATE * 2 * 2] + SILENCE)
        await until(lambda: len(p.call.clears) == 1)
        # ...and then repeats the interrupting words.
        await until(lambda: len(p.call.sent) == 3)
        assert words[int(0.5 * RATE) * 2: int(1.5 * RATE) * 2] in p.call.sent[2].pcm


@pytest.mark.asyncio
async def test_keys_are_acknowledged_with_their_tone() -> None:
    async with Parrot() as p:
        await until(lambda: len(p.call.sent) == 1)
        p.call.press("5")
        await until(lambda: len(p.call.sent) == 2)
        low, high = peak_frequencies(p.call.sent[1].pcm)
        assert abs(low - DTMF_FREQUENCIES["5"][0]) < 15
        assert abs(high - DTMF_FREQUENCIES["5"][1]) < 15


@pytest.mark.asyncio
async def test_pound_says_goodbye_and_hangs_up_once_it_was_heard() -> None:
    async with Parrot() as p:
        await until(lambda: len(p.call.sent) == 1)
        p.call.press("#")
        assert p.task is not None
        await asyncio.wait_for(asyncio.shield(p.task), scaled(5))
        pcm = [s.pcm for s in p.call.sent]
        # greeting (cut short by the '#'), the '#' tone, then the goodbye.
        assert pcm[0] == GREETING and pcm[-1] == GOODBYE
        low, high = peak_frequencies(pcm[1])
        assert abs(low - DTMF_FREQUENCIES["#"][0]) < 15
        assert abs(high - DTMF_FREQUENCIES["#"][1]) < 15
        assert len(p.call.clears) == 1
        assert [r for r, _ in p.call.hangups] == ["caller pressed #"]
        # Hung up only after the goodbye had played in full.
        goodbye_sent = p.call.sent[-1].at
        assert p.call.hangups[0][1] - goodbye_sent >= len(GOODBYE) / 2 / RATE - 0.01


def test_the_parrot_needs_a_rate_silero_takes() -> None:
    transport = MediaStreamTransport(MemoryCall(sample_rate=24000))
    with pytest.raises(ValueError, match="8000 or 16000"):
        parrot.build_worker(transport)


def test_the_prompts_are_short_16_khz_speech() -> None:
    for name in ("greeting.wav", "goodbye.wav"):
        pcm, rate = parrot.load_asset(name)
        assert rate == 16000
        assert 0.3 < len(pcm) / 2 / rate < 5
        assert np.abs(np.frombuffer(pcm, dtype="<i2")).max() > 10000
