"""Pipecat bots end to end: the real server on 127.0.0.1:0, a Twilio-dialect phone, real
pipelines. What the phone hears is what a caller would: audio is played out in real time,
marks come back when it has played, ``clear`` cuts it.
"""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from _util_bot import TwilioPhone, load_wav, scaled
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    EndWorkerFrame,
    Frame,
    InputDTMFFrame,
    OutputAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from audiocodecs.resample import resample
from bot import echo, parrot
from bot.transport import MediaStreamTransport, pipecat_runner
from mediastream.agents import AgentRegistry
from mediastream.config import Config
from mediastream.protocols.events import CallInfo
from mediastream.server import MediaStreamServer


def tone8k(freq: float, seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * 8000)) / 8000
    return np.round(np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


def peak_hz(pcm: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(spectrum)])


def loud(pcm: np.ndarray, threshold: int = 800) -> np.ndarray:
    return np.nonzero(np.abs(pcm.astype(np.int32)) > threshold)[0]


def loud_seconds(pcm: np.ndarray) -> float:
    """From the first to the last sample above the threshold, in seconds."""
    where = loud(pcm)
    return 0.0 if not len(where) else (where[-1] - where[0] + 1) / 8000


class KeyScript(FrameProcessor):
    """A test bot's brain: keys drive it. 1 = play 2 s of 600 Hz, 2 = interrupt,
    3 = play 0.5 s of 900 Hz then end the pipeline. Every key is recorded."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__()
        self.keys = keys

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if not isinstance(frame, InputDTMFFrame):
            return
        self.keys.append(frame.button.value)
        if frame.button == KeypadEntry.ONE:
            await self.push_frame(_audio(tone8k(600, 2.0)))
        elif frame.button == KeypadEntry.TWO:
            await self.broadcast_interruption()  # type: ignore[no-untyped-call]
        elif frame.button == KeypadEntry.THREE:
            await self.push_frame(_audio(tone8k(900, 0.5)))
            await self.push_frame(EndWorkerFrame(reason="script done"))


def _audio(pcm: np.ndarray) -> OutputAudioRawFrame:
    return OutputAudioRawFrame(audio=pcm.tobytes(), sample_rate=8000, num_channels=1)


def scripted_bot(keys: list[str]) -> Any:
    async def run_bot(transport: MediaStreamTransport, call: CallInfo) -> None:
        pipeline = Pipeline([transport.input(), KeyScript(keys), transport.output()])
        worker = PipelineWorker(
            pipeline, enable_rtvi=False, idle_timeout_secs=None,
            params=PipelineParams(audio_in_sample_rate=transport.sample_rate))
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()

    return run_bot


async def crashing_bot(transport: MediaStreamTransport, call: CallInfo) -> None:
    await asyncio.sleep(0.2)
    raise RuntimeError("the bot fell over")


class Server:
    def __init__(self, server: MediaStreamServer, keys: list[str]) -> None:
        self.server = server
        self.keys = keys

    def url(self, agent: str | None = None) -> str:
        path = "/ws/twilio" + (f"/{agent}" if agent else "")
        return f"ws://127.0.0.1:{self.server.port}{path}"


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    keys: list[str] = []
    registry = AgentRegistry(
        pipecat_runner(echo.run_bot),
        {
            "script": pipecat_runner(scripted_bot(keys)),
            "crash": pipecat_runner(crashing_bot),
            "parrot": pipecat_runner(parrot.run_bot),
        },
    )
    async with MediaStreamServer(Config(port=0, drain_timeout=1.0), bot=registry) as srv:
        yield Server(srv, keys)


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_echo_returns_the_callers_audio_at_the_right_rate_and_length(server: Server) -> None:
    async with TwilioPhone(server.url()) as phone:
        await phone.send_silence(0.2)
        await phone.send_pcm(tone8k(600, 1.0))
        await phone.send_silence(0.6)
        heard = phone.heard()
        tone_samples = loud(heard)
        assert len(tone_samples)
        # The whole second came back (8 kHz -> 16 kHz pipeline -> 8 kHz, nothing lost
        # or added), at the pitch it was sent: the rates are right end to end.
        assert abs(loud_seconds(heard) - 1.0) < 0.03
        assert abs(peak_hz(heard[tone_samples[0]:tone_samples[-1]]) - 600) < 5
        await phone.stop()
        code, _ = await phone.wait_closed(scaled(5))
        assert code == 1000


@pytest.mark.asyncio
async def test_dtmf_reaches_the_pipeline_as_input_dtmf_frames(server: Server) -> None:
    async with TwilioPhone(server.url("script")) as phone:
        await phone.send_silence(0.1)
        for digit in "9*#":
            await phone.press(digit)
        await phone.send_silence(0.1)
        await until(lambda: server.keys == ["9", "*", "#"])
        await phone.stop()


@pytest.mark.asyncio
async def test_an_interruption_clears_the_providers_buffer(server: Server) -> None:
    async with TwilioPhone(server.url("script")) as phone:
        await phone.send_silence(0.1)
        await phone.press("1")  # 2 s of tone
        await phone.send_silence(0.5)
        await phone.press("2")  # interrupt
        await phone.send_silence(0.3)
        await until(lambda: len(phone.clears) == 1)
        await phone.send_silence(0.3)
        heard = phone.heard()
        # Cut after about half a second: the rest of the 2 s never played.
        assert 0.2 < loud_seconds(heard) < 1.2
        assert len(phone.clears) == 1
        await phone.stop()


@pytest.mark.asyncio
async def test_the_end_of_the_pipeline_ends_the_call_after_playout(server: Server) -> None:
    async with TwilioPhone(server.url("script")) as phone:
        await phone.send_silence(0.1)
        await phone.press("3")  # 0.5 s of tone, then EndWorkerFrame
        sender = asyncio.create_task(phone.send_silence(3.0))
        code, reason = await phone.wait_closed(scaled(5))
        closed_at = time.monotonic()
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        assert code == 1000, reason
        # Every sample of the goodbye was heard before the hang-up.
        assert abs(loud_seconds(phone.heard()) - 0.5) < 0.03
        assert closed_at >= phone.segments[-1].end - 0.005


@pytest.mark.asyncio
async def test_a_crashing_bot_ends_only_its_own_call(server: Server) -> None:
    async with TwilioPhone(server.url()) as healthy, TwilioPhone(server.url("crash")) as doomed:
        await asyncio.gather(healthy.send_silence(0.4), doomed.send_silence(0.4))
        code, reason = await doomed.wait_closed(scaled(5))
        assert code == 1011
        assert "fell over" not in reason  # no internals in the reason
        await healthy.send_pcm(tone8k(1000, 0.4))
        await healthy.send_silence(0.4)
        assert abs(loud_seconds(healthy.heard()) - 0.4) < 0.03
        assert healthy.closed is None
        await healthy.stop()


@pytest.mark.asyncio
async def test_the_parrot_greets_repeats_and_says_goodbye_on_pound(server: Server) -> None:
    greeting = resample(load_wav("greeting.wav")[0], 16000, 8000)
    words = resample(load_wav("goodbye.wav")[0], 16000, 8000)  # the caller says "Goodbye!"
    goodbye = words  # the parrot's goodbye is the same recording

    async with TwilioPhone(server.url("parrot")) as phone:
        line = asyncio.create_task(phone.line())
        try:
            # The greeting plays at once and is heard in full.
            await until(lambda: len(phone.heard()) >= len(greeting) - 80, timeout=10)
            await asyncio.sleep(0.3)
            heard = phone.heard()
            assert abs(len(heard) - len(greeting)) / 8000 < 0.05
            assert _similarity(heard, greeting) > 0.9
            greeted = len(phone.segments)

            # The caller speaks; after the pause that ends the turn, the words come back.
            said_at = await phone.say(words)
            await until(lambda: _played(phone, greeted) >= len(words) - 800, timeout=8)
            await asyncio.sleep(0.3)
            back = phone.segments[greeted:]
            assert back[0].start >= said_at + parrot.TURN_STOP_SECS - 0.1
            repeated = np.concatenate([s.pcm for s in back])
            assert _similarity(repeated, words) > 0.8
            assert not phone.clears
            repeated_end = len(phone.segments)

            # '#': its tone, the goodbye, and the hang-up once that was heard.
            await phone.press("#")
            code, _ = await phone.wait_closed(scaled(6))
            closed_at = time.monotonic()
        finally:
            line.cancel()
            await asyncio.gather(line, return_exceptions=True)
        assert code == 1000
        tail = np.concatenate([s.pcm for s in phone.segments[repeated_end:]])
        assert len(tail) / 8000 >= len(goodbye) / 8000 + 0.1  # the '#' tone, then goodbye
        assert _similarity(tail, goodbye) > 0.9
        assert closed_at >= phone.segments[-1].end - 0.005


def _played(phone: TwilioPhone, first: int) -> int:
    """Samples of the segments from index ``first`` on that have played by now."""
    now = time.monotonic()
    return sum(len(s.pcm) if s.end <= now else max(0, round((now - s.start) * 8000))
               for s in phone.segments[first:])


def _similarity(heard: np.ndarray, reference: np.ndarray) -> float:
    """Peak normalised cross-correlation of ``reference`` inside ``heard``."""
    r = reference.astype(np.float64)
    margin = np.zeros(800)  # 100 ms of lag either way
    h = np.concatenate([margin, heard.astype(np.float64), margin])
    if len(h) < len(r):
        h = np.concatenate([h, np.zeros(len(r) - len(h))])
    corr = np.correlate(h, r, mode="valid")
    energy = np.sqrt(np.convolve(h * h, np.ones(len(r)), mode="valid") * np.dot(r, r))
    return float(np.max(corr / np.maximum(energy, 1e-9)))


@pytest.mark.asyncio
async def test_a_finished_pipecat_call_is_freed_without_the_cyclic_collector() -> None:
    """A finished Pipecat pipeline is a reference cycle. The bridge detaches from it
    when the bot returns, so the call (its session, resamplers, buffers) and the
    transport are freed by reference counting alone, the moment the server lets go:
    no full collection needed, none to pause the other calls at churn. Pipecat's own
    processors are left to the collector, and they no longer hold the call."""
    refs: dict[str, weakref.ref[Any]] = {}

    async def run_bot(transport: MediaStreamTransport, info: CallInfo) -> None:
        refs["transport"] = weakref.ref(transport)
        refs["input"] = weakref.ref(transport.input())
        await echo.run_bot(transport, info)

    inner = pipecat_runner(run_bot)

    async def runner(call: Any) -> None:
        refs["call"] = weakref.ref(call)
        await inner(call)

    async with MediaStreamServer(Config(port=0), bot=runner) as srv:
        gc.collect()
        gc.disable()
        try:
            async with TwilioPhone(f"ws://127.0.0.1:{srv.port}/ws/twilio") as phone:
                await phone.send_pcm(tone8k(500, 0.3))
                await phone.stop()
                await phone.wait_closed(scaled(5))
            await until(lambda: refs["call"]() is None and refs["transport"]() is None)
            # The processors are Pipecat's cycle: alive until the collector runs...
            assert refs["input"]() is not None
            detached = refs["input"]()
            assert detached is not None and detached._call.ended and detached._transport is None
            del detached
        finally:
            gc.enable()
        gc.collect()
        assert refs["input"]() is None  # ...which then frees them
