"""MediaStreamTransport driven by real Pipecat pipelines over an in-memory Call.

The Call here (tests/_util_bot.py) has a real-time playout ledger like the session's, so
speaking state, interruption and hang-up-after-playout are exercised for real; the
end-to-end tests over a WebSocket live in test_bot_server.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from _util_bot import MemoryCall, make_info, scaled, tone
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputDTMFFrame,
    TextFrame,
    TTSStoppedFrame,
    UserAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from bot import echo
from bot.tones import DTMF_FREQUENCIES, dtmf_tone
from bot.tracks import only_track
from bot.transport import MediaStreamTransport, pipecat_runner
from mediastream.call import BotMessage, DtmfPressed
from mediastream.protocols.events import CallInfo


@dataclass
class Seen:
    frame: Frame
    direction: FrameDirection
    at: float


class Recorder(FrameProcessor):
    """Passes every frame on and remembers it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Seen] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.seen.append(Seen(frame, direction, time.monotonic()))
        await self.push_frame(frame, direction)

    def of(self, kind: type[Frame], direction: FrameDirection | None = None) -> list[Seen]:
        return [s for s in self.seen
                if isinstance(s.frame, kind) and direction in (None, s.direction)]


class Harness:
    """One pipeline ``input -> recorder -> output`` over a MemoryCall, run in the background."""

    def __init__(self, call: MemoryCall, **worker_args: Any) -> None:
        self.call = call
        self.transport = MediaStreamTransport(call)
        self.recorder = Recorder()
        params = worker_args.pop(
            "params", PipelineParams(audio_in_sample_rate=call.sample_rate,
                                     audio_out_sample_rate=call.sample_rate))
        self.worker = PipelineWorker(
            Pipeline([self.transport.input(), self.recorder, self.transport.output()]),
            params=params, enable_rtvi=False, enable_turn_tracking=False,
            idle_timeout_secs=None, **worker_args,
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        self.task = asyncio.create_task(runner.run())
        await until(lambda: bool(self.recorder.seen))  # StartFrame went by
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.call.end("test over")  # teardown need not sit through the playout
        await asyncio.wait_for(self.task, scaled(10))

    async def push(self, *frames: Frame) -> None:
        await self.worker.queue_frames(frames)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def audio(seconds: float, rate: int = 16000, freq: float = 440.0) -> OutputAudioRawFrame:
    return OutputAudioRawFrame(audio=tone(freq, seconds, rate), sample_rate=rate, num_channels=1)


def dominant_frequencies(pcm: bytes, rate: int, count: int = 2) -> list[float]:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    peaks: list[float] = []
    for index in np.argsort(spectrum)[::-1]:
        f = float(freqs[index])
        if all(abs(f - p) > 60 for p in peaks):
            peaks.append(f)
        if len(peaks) == count:
            break
    return sorted(peaks)


# ----------------------------------------------------------------------------- input


@pytest.mark.asyncio
async def test_echo_bot_returns_the_callers_audio_unchanged_at_the_call_rate() -> None:
    call = MemoryCall()
    bot = asyncio.create_task(pipecat_runner(echo.run_bot)(call))
    pcm = tone(440, 0.5, 16000) + tone(1000, 0.3, 16000)
    call.feed(pcm)
    await until(lambda: len(call.sent_pcm()) >= len(pcm))
    # Same bytes, same 20 ms framing, same rate: nothing resampled or re-chunked.
    assert call.sent_pcm() == pcm
    assert {s.rate for s in call.sent} == {16000}
    assert {len(s.pcm) for s in call.sent} == {640}
    call.end()
    await asyncio.wait_for(bot, scaled(5))


@pytest.mark.asyncio
@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_input_frames_carry_the_call_rate(rate: int) -> None:
    call = MemoryCall(sample_rate=rate)
    async with Harness(call) as h:
        assert h.transport.sample_rate == rate
        call.feed(tone(300, 0.1, rate))
        await until(lambda: len(h.recorder.of(InputAudioRawFrame)) == 5)
        frames = [s.frame for s in h.recorder.of(InputAudioRawFrame)]
        assert all(isinstance(f, InputAudioRawFrame) and f.sample_rate == rate
                   and f.num_channels == 1 for f in frames)
        assert b"".join(f.audio for f in frames) == tone(300, 0.1, rate)  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_a_pipeline_rate_that_differs_from_the_call_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    call = MemoryCall(sample_rate=16000)
    with caplog.at_level(logging.WARNING, logger="bot.transport"):
        async with Harness(call, params=PipelineParams(audio_in_sample_rate=8000)):
            pass
    assert any("CA-test" in r.getMessage() and "audio_in_sample_rate=8000" in r.getMessage()
               for r in caplog.records)


@pytest.mark.asyncio
async def test_dtmf_becomes_input_dtmf_frames() -> None:
    call = MemoryCall()
    async with Harness(call) as h:
        for digit in "1#*A9":
            call.press(digit)
        await until(lambda: len(h.recorder.of(InputDTMFFrame)) == 4)
        await asyncio.sleep(0.05)
        buttons = [s.frame.button for s in h.recorder.of(InputDTMFFrame)]  # type: ignore[attr-defined]
        # A-D have no KeypadEntry in Pipecat: logged and dropped, the rest in order.
        assert buttons == [KeypadEntry.ONE, KeypadEntry.POUND, KeypadEntry.STAR, KeypadEntry.NINE]


@pytest.mark.asyncio
async def test_a_bot_message_becomes_an_input_transport_message_frame() -> None:
    """POST /calls/{id}/message reaches a Pipecat pipeline as a frame it can react to."""
    call = MemoryCall()
    async with Harness(call) as h:
        news = {"event": "order_shipped", "order": 42}
        call._put(BotMessage(news))
        call.press("5")
        await until(lambda: len(h.recorder.of(InputDTMFFrame)) == 1)
        frames = [s.frame for s in h.recorder.of(InputTransportMessageFrame)]
        assert [f.message for f in frames] == [news]  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_client_connected_gets_the_call_and_the_bot_sees_its_description() -> None:
    call = MemoryCall(info=make_info("telnyx", session_type="sales", caller_id="42"))
    transport = MediaStreamTransport(call)
    got: list[Any] = []

    @transport.event_handler("on_client_connected")
    async def connected(t: MediaStreamTransport, client: Any) -> None:
        got.append((t, client, t.get_client_id(client)))

    worker = echo.build_worker(transport, call.sample_rate)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    await until(lambda: bool(got))
    assert got == [(transport, call, "CA-test")]
    assert transport.info.provider == "telnyx"
    assert dict(transport.info.custom_parameters) == {"session_type": "sales", "caller_id": "42"}
    call.end()
    await asyncio.wait_for(run, scaled(5))


# ---------------------------------------------------------------------------- output


@pytest.mark.asyncio
async def test_output_of_any_rate_and_size_goes_straight_to_the_call() -> None:
    call = MemoryCall()
    async with Harness(call) as h:
        chunks = [(tone(500, 2.0, 24000), 24000), (b"\x01\x00", 24000),
                  (tone(700, 0.0137, 22050), 22050), (tone(900, 1.0, 8000), 8000)]
        await h.push(*[OutputAudioRawFrame(audio=a, sample_rate=r, num_channels=1)
                       for a, r in chunks])
        await until(lambda: len(call.sent) == len(chunks))
        # Not re-chunked, not resampled: exactly what the pipeline produced.
        assert [(s.pcm, s.rate) for s in call.sent] == chunks
        # And not paced by a sleep per chunk: all of it was handed over while the
        # first 2 s chunk was still playing.
        assert call.sent[-1].at - call.sent[0].at < 2.0
        assert call.bot_speaking


@pytest.mark.asyncio
async def test_stereo_output_is_mixed_down_to_mono() -> None:
    call = MemoryCall()
    async with Harness(call) as h:
        left = np.full(160, 1000, dtype="<i2")
        right = np.full(160, 3000, dtype="<i2")
        stereo = np.stack([left, right], axis=1).astype("<i2").tobytes()
        await h.push(OutputAudioRawFrame(audio=stereo, sample_rate=8000, num_channels=2))
        await until(lambda: len(call.sent) == 1)
        assert call.sent[0].pcm == np.full(160, 2000, dtype="<i2").tobytes()


@pytest.mark.asyncio
async def test_speaking_frames_follow_the_playout_ledger() -> None:
    call = MemoryCall()
    async with Harness(call) as h:
        await h.push(audio(0.3))
        await until(lambda: bool(h.recorder.of(BotStoppedSpeakingFrame, FrameDirection.UPSTREAM)))
        started = h.recorder.of(BotStartedSpeakingFrame, FrameDirection.UPSTREAM)
        stopped = h.recorder.of(BotStoppedSpeakingFrame, FrameDirection.UPSTREAM)
        assert len(started) == 1 and len(stopped) == 1
        # Stopped comes when the ledger says the 300 ms were heard, not when the bytes
        # were handed over.
        assert stopped[0].at - call.sent[0].at >= 0.3 - 0.01
        assert started[0].at <= stopped[0].at


@pytest.mark.asyncio
async def test_interruption_clears_the_call_and_drops_queued_audio() -> None:
    call = MemoryCall()
    async with Harness(call) as h:
        await h.push(audio(3.0))
        await until(lambda: call.bot_speaking)
        await h.push(InterruptionFrame())
        await until(lambda: len(call.clears) == 1)
        await until(lambda: bool(h.recorder.of(BotStoppedSpeakingFrame)))
        assert not call.bot_speaking
        # After the interruption the next utterance plays normally.
        await h.push(audio(0.1, freq=900))
        await until(lambda: len(call.sent) == 2)
        assert len(call.clears) == 1


@pytest.mark.asyncio
async def test_an_idle_gap_or_tts_stopped_ends_the_utterance() -> None:
    call = MemoryCall()
    async with Harness(call) as h:
        await h.push(audio(0.02), audio(0.02), audio(0.02))
        await until(lambda: len(call.utterance_ends) == 1, timeout=2)
        # One end for the whole run of frames, placed after the last of them.
        assert call.utterance_ends[0] >= call.sent[-1].at + 0.1 - 0.01
        await h.push(audio(0.02), TTSStoppedFrame())
        await until(lambda: len(call.utterance_ends) == 2)
        assert call.utterance_ends[1] - call.sent[-1].at < 0.1
        await asyncio.sleep(0.2)
        assert len(call.utterance_ends) == 2  # the gap timer did not fire a second end


@pytest.mark.asyncio
async def test_output_dtmf_plays_dual_tones() -> None:
    call = MemoryCall()
    async with Harness(call) as h:
        await h.push(OutputDTMFFrame(buttons=[KeypadEntry.FIVE, KeypadEntry.POUND]))
        await until(lambda: len(call.sent) == 2)
        for sent, digit in zip(call.sent, "5#", strict=True):
            assert sent.rate == 16000
            low, high = DTMF_FREQUENCIES[digit]
            got = dominant_frequencies(sent.pcm, sent.rate)
            assert abs(got[0] - low) < 15 and abs(got[1] - high) < 15
        assert call.dtmf_sent == []


@pytest.mark.asyncio
async def test_output_dtmf_on_plivo_uses_the_socket() -> None:
    call = MemoryCall(info=make_info("plivo"))
    async with Harness(call) as h:
        await h.push(OutputDTMFFrame(buttons=[KeypadEntry.ONE, KeypadEntry.STAR]))
        await until(lambda: call.dtmf_sent == ["1*"])
        assert call.sent == []


def test_dtmf_tone_rejects_what_is_not_a_key() -> None:
    with pytest.raises(ValueError):
        dtmf_tone("x", 8000)
    with pytest.raises(ValueError):
        dtmf_tone("1", 2000)
    assert len(dtmf_tone("d", 8000)) == 2 * 960


# ---------------------------------------------------------------------------- ending


@pytest.mark.asyncio
async def test_end_frame_hangs_up_after_the_last_audio_was_heard() -> None:
    call = MemoryCall()
    async with Harness(call) as h:
        await h.push(audio(0.4), EndFrame(reason="done"))
        await asyncio.wait_for(h.task, scaled(5))  # type: ignore[arg-type]
    assert [r for r, _ in call.hangups] == ["done"]
    assert len(call.utterance_ends) == 1
    # The tail was flushed before waiting, and the hang-up came once 400 ms had played.
    assert call.utterance_ends[0] <= call.hangups[0][1]
    assert call.hangups[0][1] - call.sent[0].at >= 0.4 - 0.01


@pytest.mark.asyncio
async def test_cancel_also_waits_for_playout_and_hangs_up_once() -> None:
    call = MemoryCall()
    async with Harness(call) as h:
        await h.push(audio(0.3))
        await until(lambda: call.bot_speaking)
        await h.worker.cancel(reason="bot cancelled")
        await asyncio.wait_for(h.task, scaled(5))  # type: ignore[arg-type]
        await h.transport.hangup("again")  # idempotent: no second hang-up
    assert [r for r, _ in call.hangups] == ["bot cancelled"]
    assert call.hangups[0][1] - call.sent[0].at >= 0.3 - 0.01


@pytest.mark.asyncio
async def test_hangup_does_not_wait_forever_for_a_ledger_that_never_confirms() -> None:
    call = MemoryCall()
    transport = MediaStreamTransport(call, end_timeout=0.2)
    worker = echo.build_worker(transport, 16000)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    await until(lambda: transport.output().sample_rate != 0)
    await worker.queue_frames([audio(30.0), EndFrame()])
    await asyncio.wait_for(run, scaled(5))
    assert len(call.hangups) == 1


@pytest.mark.asyncio
async def test_the_caller_hanging_up_fires_disconnected_and_ends_the_bot() -> None:
    call = MemoryCall()
    transport = MediaStreamTransport(call)
    disconnected: list[Any] = []

    @transport.event_handler("on_client_disconnected")
    async def gone(t: MediaStreamTransport, client: Any) -> None:
        disconnected.append(client)

    bot = asyncio.create_task(echo.run_bot(transport, call.info))
    call.feed(tone(440, 0.1, 16000))
    await until(lambda: len(call.sent) == 5)
    call.end("stop")
    await asyncio.wait_for(bot, scaled(5))
    assert disconnected == [call]


@pytest.mark.asyncio
async def test_pipecat_runner_ends_the_call_when_the_bot_returns() -> None:
    call = MemoryCall()

    async def run_bot(transport: MediaStreamTransport, info: CallInfo) -> None:
        assert info is call.info and transport.call is call

    await asyncio.wait_for(pipecat_runner(run_bot)(call), scaled(5))
    assert [r for r, _ in call.hangups] == ["bot finished"]


@pytest.mark.asyncio
async def test_pipecat_runner_lets_a_crash_reach_the_server() -> None:
    call = MemoryCall()

    async def run_bot(transport: MediaStreamTransport, info: CallInfo) -> None:
        raise RuntimeError("boom")

    runner: Callable[[MemoryCall], Awaitable[None]] = pipecat_runner(run_bot)
    with pytest.raises(RuntimeError, match="boom"):
        await runner(call)
    assert call.hangups == []  # the server's error boundary closes it with 1011


# ---------------------------------------------------------------------- timed frames


class After:
    """input -> output -> recorder: what the output lets through, and when."""

    def __init__(self, call: MemoryCall) -> None:
        self.call = call
        self.transport = MediaStreamTransport(call)
        self.recorder = Recorder()
        self.worker = PipelineWorker(
            Pipeline([self.transport.input(), self.transport.output(), self.recorder]),
            params=PipelineParams(audio_in_sample_rate=16000), enable_rtvi=False,
            enable_turn_tracking=False, idle_timeout_secs=None)

    def now(self) -> int:
        return int(self.transport.output().get_clock().get_time())

    def texts(self) -> list[str]:
        return [s.frame.text for s in self.recorder.of(TextFrame)]  # type: ignore[attr-defined]


def text(value: str, pts: int | None = None, interruptible: bool = True) -> TextFrame:
    frame = TextFrame(text=value)
    frame.pts = pts
    frame.interruptible = interruptible
    return frame


@pytest.mark.asyncio
async def test_timed_frames_are_released_when_heard_and_dropped_on_interruption() -> None:
    call = MemoryCall()
    a = After(call)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(a.worker)
    run = asyncio.create_task(runner.run())
    await until(lambda: bool(a.recorder.seen))
    t0 = time.monotonic()
    now = a.now()
    await a.worker.queue_frames([text("later", now + 300_000_000), text("now")])
    await until(lambda: a.texts() == ["now"])
    await until(lambda: a.texts() == ["now", "later"])
    later = next(s for s in a.recorder.of(TextFrame) if s.frame.text == "later")  # type: ignore[attr-defined]
    assert later.at - t0 >= 0.3 - 0.01

    now = a.now()
    await a.worker.queue_frames([text("cut", now + 400_000_000),
                                 text("kept", now + 300_000_000, interruptible=False)])
    await asyncio.sleep(0.05)
    await a.worker.queue_frames([InterruptionFrame()])
    await asyncio.sleep(0.5)
    assert a.texts() == ["now", "later", "kept"]

    await a.worker.queue_frames([text("at the end", a.now() + 5_000_000_000), EndFrame()])
    await asyncio.wait_for(run, scaled(3))  # released before the EndFrame, not in 5 s
    assert a.texts()[-1] == "at the end"


@pytest.mark.asyncio
async def test_a_failing_call_ends_the_pipeline_instead_of_hanging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenCall(MemoryCall):
        async def receive(self) -> Any:
            event = await super().receive()
            if isinstance(event, DtmfPressed):
                raise RuntimeError("session bug")
            return event

    call = BrokenCall()
    with caplog.at_level(logging.ERROR, logger="bot.transport"):
        bot = asyncio.create_task(pipecat_runner(echo.run_bot)(call))
        call.feed(tone(440, 0.1, 16000))
        await until(lambda: len(call.sent) == 5)
        call.press("1")
        await asyncio.wait_for(bot, scaled(5))
    assert any("stopped receiving" in r.getMessage() and "CA-test" in r.getMessage()
               for r in caplog.records)


# ------------------------------------------------------------------ listen-only calls


@pytest.mark.asyncio
async def test_a_listen_only_call_gives_the_pipeline_both_tracks_as_tagged_frames() -> None:
    # issue 14: the bridge exposes both tracks of a listen-only call as
    # UserAudioRawFrame(user_id="caller" | "other") on the one input stream.
    call = MemoryCall(listening=True)
    async with Harness(call) as h:
        call.feed(tone(440, 0.06, 16000))
        call.feed(tone(1000, 0.04, 16000), track="other")
        await until(lambda: len(h.recorder.of(InputAudioRawFrame)) == 5)
        frames = [s.frame for s in h.recorder.of(InputAudioRawFrame)]
        assert all(isinstance(f, UserAudioRawFrame) for f in frames)
        users = [f.user_id for f in frames]  # type: ignore[attr-defined]
        assert users == ["caller"] * 3 + ["other"] * 2
        assert b"".join(f.audio for f in frames[3:]) == tone(1000, 0.04, 16000)  # type: ignore[attr-defined]
    assert call.sent == [] and call.clears == []


@pytest.mark.asyncio
async def test_only_track_keeps_one_voice() -> None:
    call = MemoryCall(listening=True)
    transport = MediaStreamTransport(call)
    recorder = Recorder()
    worker = PipelineWorker(
        Pipeline([transport.input(), only_track("other"), recorder]),
        params=PipelineParams(audio_in_sample_rate=16000), enable_rtvi=False,
        enable_turn_tracking=False, idle_timeout_secs=None,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: bool(recorder.seen))  # StartFrame went by
        call.feed(tone(440, 0.04, 16000))
        call.feed(tone(1000, 0.06, 16000), track="other")
        call.press("5")
        await until(lambda: len(recorder.of(InputDTMFFrame)) == 1)
        frames = [s.frame for s in recorder.of(InputAudioRawFrame)]
        assert [f.user_id for f in frames] == ["other"] * 3  # type: ignore[attr-defined]
    finally:
        call.end("test over")
        await asyncio.wait_for(task, scaled(10))


@pytest.mark.asyncio
async def test_a_talking_call_keeps_plain_input_frames() -> None:
    call = MemoryCall()
    async with Harness(call) as h:
        call.feed(tone(440, 0.04, 16000))
        await until(lambda: len(h.recorder.of(InputAudioRawFrame)) == 2)
        assert not any(isinstance(s.frame, UserAudioRawFrame)
                       for s in h.recorder.of(InputAudioRawFrame))
