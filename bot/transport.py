"""A Pipecat transport over one mediastream :class:`~mediastream.call.Call`.

``MediaStreamTransport(call)`` gives a Pipecat pipeline the caller's audio and keys and
plays the pipeline's audio back, so a Pipecat bot runs on mediastream unchanged apart
from its transport::

    async def run_bot(transport: MediaStreamTransport, call: CallInfo) -> None:
        pipeline = Pipeline([transport.input(), ..., transport.output()])
        ...

What it does differently from Pipecat's websocket transports, and why:

* **No second resampling.** The session decodes and resamples the provider's audio once,
  to ``call.sample_rate``; input frames carry that rate and the input transport's rate is
  forced to it. Output frames of any rate and size go straight to ``call.send_audio``: no
  re-chunking into 40 ms pieces, no resampler, no sleep-per-chunk "clock" (the session
  paces against the provider's playout, which is the only clock that matters).
* **Speaking state from the playout ledger.** ``BotStartedSpeakingFrame`` /
  ``BotStoppedSpeakingFrame`` follow the session's ``PlayoutStarted`` / ``PlayoutStopped``
  events, i.e. what the caller heard, not when bytes left the process.
* **Interruptions clear the provider's buffer** (``InterruptionFrame`` -> ``call.clear()``).
* **Utterances end explicitly**: ``TTSStoppedFrame``, or a gap of ``utterance_gap`` seconds
  in the output audio, calls ``call.end_utterance()`` so the resampler tail is flushed and a
  playout mark is placed; nothing is withheld.
* **Ending waits for playout**: ``EndFrame`` / ``CancelFrame`` wait until the caller has heard
  the last audio (``call.wait_played``, bounded by ``end_timeout``), then hang up
  (``call.hangup()``: provider REST when configured, else close; idempotent).
* **Messages from outside become frames.** A :class:`~mediastream.call.BotMessage`
  (``POST /calls/{id}/message``: "the customer's order shipped") is pushed downstream as
  Pipecat's ``InputTransportMessageFrame(message=<the JSON object>)``: the frame Pipecat's
  own transports use for an application message arriving from outside the pipeline, a
  system frame, so it is not queued behind audio. A processor reacts to it by type.
* When the call ends from the far side the transport fires ``on_client_disconnected`` and
  cancels the pipeline: nobody is left to talk to.
* **Both tracks of a listen-only call as tagged frames.** On a listen-only call
  (``call.listen_only``: a both-tracks fork for transcription, agent assist, analytics)
  every input frame is a ``UserAudioRawFrame`` whose ``user_id`` is the track:
  ``"caller"`` or ``"other"`` (the other party). Tagged frames rather than two input
  streams because a Pipecat pipeline has one input transport and one frame order: one
  stream keeps the two voices on one timeline, is Pipecat's own convention for several
  speakers on one transport (Daily tags each participant's audio the same way), and a
  bot that wants them apart splits or filters on ``user_id``
  (:func:`bot.tracks.only_track`). A talking call keeps plain ``InputAudioRawFrame``s.

Event handlers: ``on_client_connected(transport, call)``, ``on_client_disconnected(transport,
call)``, where ``call`` is the :class:`~mediastream.call.Call`.

:func:`pipecat_runner` adapts a two-argument Pipecat bot ``run_bot(transport, call_info)``
into the server's :data:`~mediastream.call.BotRunner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    BotSpeakingFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    CancelWorkerFrame,
    ClientConnectedFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputDTMFFrame,
    OutputDTMFUrgentFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
    SystemFrame,
    TTSStoppedFrame,
    UserAudioRawFrame,
)
from pipecat.pipeline.pipeline import PipelineSink
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from bot.logs import CALL_ID, route_pipecat_logs
from bot.tones import dtmf_tone
from mediastream.call import (
    BotMessage,
    BotRunner,
    Call,
    CallEnded,
    CallEvent,
    CallListener,
    DtmfPressed,
    InboundAudio,
    PlayoutStarted,
    PlayoutStopped,
)
from mediastream.protocols.events import CallInfo, Capabilities

__all__ = [
    "MediaStreamInputTransport",
    "MediaStreamOutputTransport",
    "MediaStreamTransport",
    "PipecatBot",
    "pipecat_runner",
]

log = logging.getLogger(__name__)

#: A Pipecat bot as mediastream loads it: ``async def run_bot(transport, call_info)``.
PipecatBot = Callable[["MediaStreamTransport", CallInfo], Awaitable[None]]

#: Pipecat's own period for BotSpeakingFrame (BaseOutputTransport.MediaSender).
_BOT_SPEAKING_PERIOD = 0.2
#: KeypadEntry has no A-D (the fourth DTMF column, RFC 4733 §3.2 events 12-15).
_KEYPAD = {entry.value: entry for entry in KeypadEntry}


class _EndedCall(Call):
    """What a detached transport's processors hold instead of the call: its description
    and rate, ended, every action a no-op (so a frame that still arrives is dropped the
    way it would be after the call ended)."""

    def __init__(self, call: Call) -> None:
        self.info = call.info
        self.sample_rate = call.sample_rate
        self._capabilities = call.capabilities

    async def receive(self) -> CallEvent:
        return CallEnded("detached")

    def set_listener(self, listener: CallListener | None) -> None:
        pass

    def send_audio(self, pcm: bytes, sample_rate: int) -> None:
        pass

    def end_utterance(self) -> None:
        pass

    def clear(self) -> None:
        pass

    async def wait_played(self, timeout: float | None = None) -> bool:
        return True

    def send_dtmf(self, digits: str) -> None:
        pass

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def hangup(self, reason: str = "bot") -> None:
        pass

    @property
    def bot_speaking(self) -> bool:
        return False

    @property
    def ended(self) -> bool:
        return True


class MediaStreamInputTransport(BaseInputTransport):
    """Pushes the caller's audio and keys into the pipeline, and the ledger's speaking state.

    One task reads :meth:`Call.receive` for the life of the pipeline. Audio frames are
    pushed downstream directly from it: the base class's extra queue and task would add a
    hop and a 0.5 s ``wait_for`` timer per call for nothing, since reading the call is
    already a task of its own.
    """

    def __init__(self, transport: MediaStreamTransport, params: TransportParams, **kwargs: Any):
        super().__init__(params, **kwargs)
        self._transport = transport
        self._call = transport.call
        self._receive_task: asyncio.Task[None] | None = None
        #: Set once an EndFrame/CancelFrame went by: events are drained, not pushed.
        self._closing = False

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        await super().setup(setup)
        if setup.audio_in_sample_rate != self._call.sample_rate:
            # VAD and STT read the pipeline's rate, not the frame's: a mismatch would
            # make them misread every frame. Pipecat must not resample a second time,
            # so the fix is in the bot's PipelineParams, not here.
            log.warning(
                "[call %s] PipelineParams.audio_in_sample_rate=%d but the call delivers "
                "%d Hz; set audio_in_sample_rate=transport.sample_rate, or have the "
                "server deliver %d Hz: mediastream serve --bot-sample-rate %d "
                "(Config(bot_sample_rate=%d))",
                self._call.info.call_id,
                setup.audio_in_sample_rate,
                self._call.sample_rate,
                setup.audio_in_sample_rate,
                setup.audio_in_sample_rate,
                setup.audio_in_sample_rate,
            )

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._closing = False
        if self._receive_task is None:
            await self._transport._client_connected()
            await self.push_frame(ClientConnectedFrame())
            self._receive_task = self.create_task(self._receive(), "receive")
        # set_transport_ready() is deliberately not called: all it does in the base
        # class is start the audio queue task this class does without.

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        self._closing = True

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        self._closing = True

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]
        if self._receive_task is not None:
            await self.cancel_task(self._receive_task)
            self._receive_task = None

    def _detach(self, ended: _EndedCall) -> None:
        """Drop the links to the transport and the call (see MediaStreamTransport.detach)."""
        self._closing = True
        self._transport = None  # type: ignore[assignment]
        self._call = ended

    async def push_audio_frame(self, frame: InputAudioRawFrame) -> None:
        """Push caller audio downstream now (also used for audio pushed in from upstream)."""
        if not self._params.audio_in_enabled or self._paused or self._closing:
            return
        if self._params.audio_in_filter:
            frame.audio = await self._params.audio_in_filter.filter(frame.audio)
            if not frame.audio:
                return
        if self._params.audio_in_passthrough:
            await self.push_frame(frame)

    async def _receive(self) -> None:
        try:
            await self._receive_events()
        except Exception:
            # Without this task the bot is deaf and would never learn that the call
            # ended: end the pipeline (the server then ends the call) rather than hang.
            log.exception("[call %s] the transport stopped receiving; ending the pipeline",
                          self._call.info.call_id)
            await self.push_frame(CancelWorkerFrame(reason="transport failure"),
                                  FrameDirection.UPSTREAM)

    async def _receive_events(self) -> None:
        call = self._call
        output = self._transport.output()
        rate = call.sample_rate
        tagged = call.listen_only  # both tracks: frames say whose voice (module doc)
        while True:
            event = await call.receive()
            if isinstance(event, InboundAudio):
                if tagged:
                    await self.push_audio_frame(UserAudioRawFrame(
                        audio=event.pcm, sample_rate=rate, num_channels=1, user_id=event.track
                    ))
                    continue
                await self.push_audio_frame(
                    InputAudioRawFrame(audio=event.pcm, sample_rate=rate, num_channels=1)
                )
                await output.maybe_bot_speaking()
            elif isinstance(event, PlayoutStarted):
                await output.bot_started_speaking()
            elif isinstance(event, PlayoutStopped):
                await output.bot_stopped_speaking(event)
            elif isinstance(event, DtmfPressed):
                await self._push_dtmf(event.digit)
            elif isinstance(event, BotMessage):
                if not self._closing:
                    await self.push_frame(InputTransportMessageFrame(message=event.data))
            elif isinstance(event, CallEnded):
                await self._call_ended(event.reason)
                return

    async def _push_dtmf(self, digit: str) -> None:
        if self._closing:
            return
        entry = _KEYPAD.get(digit)
        if entry is None:
            log.info("[call %s] DTMF %r has no Pipecat KeypadEntry; ignored",
                     self._call.info.call_id, digit)
            return
        await self.push_frame(InputDTMFFrame(button=entry))

    async def _call_ended(self, reason: str) -> None:
        if self._closing:
            return  # we are the ones ending it
        log.info("[call %s] call ended (%s); cancelling the pipeline", self._call.info.call_id,
                 reason)
        await self._transport._client_disconnected()
        # Upstream from the first processor reaches the pipeline worker, which answers
        # with a CancelFrame down the whole pipeline.
        await self.push_frame(CancelWorkerFrame(reason=f"call ended: {reason}"),
                              FrameDirection.UPSTREAM)


class MediaStreamOutputTransport(BaseOutputTransport):
    """Hands the pipeline's audio to the call as it comes, and ends the call after playout.

    ``process_frame`` replaces :class:`BaseOutputTransport`'s: its MediaSender re-chunks
    audio into ``audio_out_10ms_chunks`` pieces, resamples them to the output rate and
    writes them from a task that (in the websocket transports) sleeps half a chunk per
    write to imitate a sound card, all of which adds latency the session already avoids.
    Frame order is kept: data and control frames are handled in this processor's process
    task, in the order they arrive.
    """

    def __init__(
        self,
        transport: MediaStreamTransport,
        params: TransportParams,
        *,
        end_timeout: float,
        utterance_gap: float,
        **kwargs: Any,
    ):
        # Direct mode: frames are handled in the task of the processor that pushed them,
        # with no input queue and process task of our own. Handling is synchronous and
        # cheap (send_audio never blocks), so the two queue hops per frame a queued
        # processor costs would only add latency and CPU.
        super().__init__(params, enable_direct_mode=True, **kwargs)
        self._transport = transport
        self._call = transport.call
        self._end_timeout = end_timeout
        self._utterance_gap = utterance_gap
        self._utterance_open = False
        self._last_audio = 0.0
        self._gap_timer: asyncio.TimerHandle | None = None
        self._speaking = False
        self._speaking_frame_time = 0.0
        self._finish_task: asyncio.Task[None] | None = None
        self._timed: list[tuple[int, int, Frame]] = []
        self._timed_order = itertools.count()
        self._timed_task: asyncio.Task[None] | None = None
        self._timed_wake = asyncio.Event()
        for name, value in (("audio_out_mixer", params.audio_out_mixer),
                            ("audio_out_filter", params.audio_out_filter)):
            if value is not None:
                log.warning("[call %s] MediaStreamTransport ignores %s",
                            self._call.info.call_id, name)

    # ------------------------------------------------------------------ frames

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        # FrameProcessor's own bookkeeping (observers, metrics, the cancelling flag),
        # without BaseOutputTransport's MediaSender.
        await FrameProcessor.process_frame(self, frame, direction)

        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            await self.start(frame)
        elif isinstance(frame, EndFrame):
            await self._finish(frame)
            await self._release_timed(everything=True)  # the words were heard: release them
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            self._drop_timed(keep_uninterruptible=False)
            await self._finish(frame)
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            self._interrupt()
            self._drop_timed(keep_uninterruptible=True)
            await self.push_frame(frame, direction)
        elif isinstance(frame, OutputDTMFUrgentFrame):
            await self.write_dtmf(frame)
        elif isinstance(frame, OutputTransportMessageUrgentFrame):
            pass  # a phone call has no data channel
        elif isinstance(frame, SystemFrame) or direction == FrameDirection.UPSTREAM:
            await self.push_frame(frame, direction)
        elif isinstance(frame, OutputAudioRawFrame):
            self._send_audio(frame)
            # Like BaseOutputTransport, audio that was taken goes on downstream for a
            # processor placed after the output (a recorder such as AudioBufferProcessor),
            # but not into the bare end of the pipeline, where it would only cost a
            # chain of calls per frame.
            if not isinstance(self._next, PipelineSink):
                await self.push_frame(frame, direction)
        elif isinstance(frame, TTSStoppedFrame):
            self._end_utterance()
            await self.push_frame(frame, direction)
        elif isinstance(frame, OutputDTMFFrame):
            await self.write_dtmf(frame)
        elif isinstance(frame, OutputTransportMessageFrame):
            pass
        elif frame.pts:
            self._schedule_timed(frame)
        else:
            await self.push_frame(frame, direction)

    # ------------------------------------------------------------ timed frames
    #
    # TTS services with word timestamps (Cartesia) give each TTSTextFrame, and the
    # reply's LLMFullResponseEndFrame, a presentation time on the pipeline clock: when
    # the caller hears that word. Released then, not at once, the assistant aggregator
    # after the output keeps only words actually spoken when the caller barges in
    # (BaseOutputTransport's clock task does the same).

    def _schedule_timed(self, frame: Frame) -> None:
        pts: int = frame.pts or 0
        heapq.heappush(self._timed, (pts, next(self._timed_order), frame))
        if self._timed_task is None:
            self._timed_task = self.create_task(self._timed_loop(), "timed")
        self._timed_wake.set()

    async def _timed_loop(self) -> None:
        clock = self.get_clock()
        while True:
            self._timed_wake.clear()
            if not self._timed:
                await self._timed_wake.wait()
                continue
            delay = (self._timed[0][0] - clock.get_time()) / 1e9
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._timed_wake.wait(), delay)
                continue
            await self._release_timed(everything=False)

    async def _release_timed(self, *, everything: bool) -> None:
        now = self.get_clock().get_time()
        while self._timed and (everything or self._timed[0][0] <= now):
            _, _, frame = heapq.heappop(self._timed)
            await self.push_frame(frame)

    def _drop_timed(self, *, keep_uninterruptible: bool) -> None:
        kept = [item for item in self._timed if keep_uninterruptible and not item[2].interruptible]
        heapq.heapify(kept)
        self._timed = kept
        self._timed_wake.set()

    def _send_audio(self, frame: OutputAudioRawFrame) -> None:
        audio = frame.audio
        if not audio or self._call.ended:
            return
        if frame.num_channels > 1:
            samples = np.frombuffer(audio, dtype="<i2").reshape(-1, frame.num_channels)
            audio = samples.mean(axis=1).astype("<i2").tobytes()
        self._call.send_audio(audio, frame.sample_rate)
        self._last_audio = time.monotonic()
        if not self._utterance_open:
            self._utterance_open = True
            self._arm_gap_timer(self._utterance_gap)

    def _arm_gap_timer(self, delay: float) -> None:
        self._gap_timer = asyncio.get_running_loop().call_later(delay, self._on_gap_timer)

    def _on_gap_timer(self) -> None:
        # One timer per utterance, re-armed for the remainder instead of being
        # rescheduled on every frame.
        self._gap_timer = None
        if not self._utterance_open:
            return
        idle = time.monotonic() - self._last_audio
        if idle >= self._utterance_gap:
            self._end_utterance()
        else:
            self._arm_gap_timer(self._utterance_gap - idle)

    def _end_utterance(self) -> None:
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None
        if self._utterance_open:
            self._utterance_open = False
            if not self._call.ended:
                self._call.end_utterance()

    def _interrupt(self) -> None:
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None
        self._utterance_open = False
        if not self._call.ended:
            log.debug("[call %s] interruption, clearing playout", self._call.info.call_id)
            self._call.clear()

    async def write_dtmf(self, frame: OutputDTMFFrame | OutputDTMFUrgentFrame) -> None:
        """Play keys into the call: on the socket where the provider can (Plivo's
        ``sendDTMF``), else as their dual tones."""
        digits = "".join(button.value for button in frame.buttons or ())
        if not digits or self._call.ended:
            return
        if self._call.capabilities.send_dtmf:
            self._call.send_dtmf(digits)
            return
        rate = self._call.sample_rate
        for digit in digits:
            self._send_audio(OutputAudioRawFrame(audio=dtmf_tone(digit, rate), sample_rate=rate,
                                                 num_channels=1))

    # ---------------------------------------------------------- speaking state

    async def bot_started_speaking(self) -> None:
        """The ledger says the caller started hearing the bot."""
        if self._speaking:
            return
        self._speaking = True
        self._speaking_frame_time = time.monotonic()
        await self.broadcast_frame(BotStartedSpeakingFrame)
        await self.broadcast_frame(BotSpeakingFrame)

    async def bot_stopped_speaking(self, event: PlayoutStopped | None = None) -> None:
        """The ledger says the caller stopped hearing the bot (played out, or cut)."""
        if not self._speaking:
            return
        self._speaking = False
        await self.broadcast_frame(BotStoppedSpeakingFrame)

    async def maybe_bot_speaking(self) -> None:
        """While the bot is heard, a BotSpeakingFrame every 200 ms (keeps idle timers off)."""
        if self._speaking:
            now = time.monotonic()
            if now - self._speaking_frame_time >= _BOT_SPEAKING_PERIOD:
                self._speaking_frame_time = now
                await self.broadcast_frame(BotSpeakingFrame)

    @property
    def bot_speaking(self) -> bool:
        """True between the ledger's PlayoutStarted and PlayoutStopped."""
        return self._speaking

    # ------------------------------------------------------------------ ending

    async def _finish(self, frame: EndFrame | CancelFrame) -> None:
        if self._transport is None:
            return  # detached: the call is over
        reason = getattr(frame, "reason", None) or type(frame).__name__
        await self._transport.hangup(str(reason))

    async def finish_call(self, reason: str) -> None:
        """Flush the last utterance, wait until it was heard, then hang up. Idempotent.

        The work runs in one shielded task, so a CancelFrame that cancels an EndFrame
        half-way through waiting joins the same hang-up instead of skipping it.
        """
        if self._finish_task is None:
            self._end_utterance()
            self._finish_task = asyncio.get_running_loop().create_task(
                self._finish_call(reason), name=f"hangup-{self._call.info.call_id}"
            )
        await asyncio.shield(self._finish_task)

    async def _finish_call(self, reason: str) -> None:
        call = self._call
        if call.ended:
            return  # the caller (or the server) already ended it
        played = await call.wait_played(self._end_timeout)
        if call.ended:
            return
        if not played:
            log.warning("[call %s] playout not confirmed within %.1f s; hanging up anyway",
                        call.info.call_id, self._end_timeout)
        log.info("[call %s] hanging up (%s)", call.info.call_id, reason)
        await call.hangup(reason)

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None
        if self._timed_task is not None:
            await self.cancel_task(self._timed_task)
            self._timed_task = None

    def _detach(self, ended: _EndedCall) -> None:
        """Drop the links to the transport and the call (see MediaStreamTransport.detach)."""
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None
        self._timed = []
        self._transport = None  # type: ignore[assignment]
        self._call = ended


class MediaStreamTransport(BaseTransport):
    """A Pipecat transport for one mediastream call.

    ``params`` defaults to audio in and out enabled; whatever is passed, audio in/out are
    enabled and ``audio_in_sample_rate`` is forced to ``call.sample_rate`` (the session
    already resampled). ``end_timeout`` bounds the wait for playout before hanging up;
    ``utterance_gap`` is the pause in output audio taken as the end of an utterance.
    """

    def __init__(
        self,
        call: Call,
        params: TransportParams | None = None,
        *,
        end_timeout: float = 10.0,
        utterance_gap: float = 0.1,
        name: str | None = None,
        input_name: str | None = None,
        output_name: str | None = None,
    ):
        super().__init__(name=name, input_name=input_name, output_name=output_name)
        self._call = call
        base = params if params is not None else TransportParams()
        self._params = base.model_copy(
            update={
                "audio_in_enabled": True,
                "audio_out_enabled": True,
                "audio_in_sample_rate": call.sample_rate,
                "audio_in_channels": 1,
                "audio_out_channels": 1,
            }
        )
        self._input = MediaStreamInputTransport(self, self._params, name=self._input_name)
        self._output = MediaStreamOutputTransport(
            self, self._params, end_timeout=end_timeout, utterance_gap=utterance_gap,
            name=self._output_name,
        )
        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")

    @property
    def call(self) -> Call:
        """The call this transport carries."""
        return self._call

    @property
    def info(self) -> CallInfo:
        """The call's description: provider, ids, numbers, custom parameters, agent."""
        return self._call.info

    @property
    def sample_rate(self) -> int:
        """Rate of the input audio; use it as ``PipelineParams.audio_in_sample_rate``."""
        return self._call.sample_rate

    def input(self) -> MediaStreamInputTransport:
        """The processor that feeds the caller's audio and keys into the pipeline."""
        return self._input

    def output(self) -> MediaStreamOutputTransport:
        """The processor that plays the pipeline's audio to the caller."""
        return self._output

    def get_client_id(self, client: Any) -> str:
        """The call id (the ``client`` of this transport's events is the call)."""
        return self._call.info.call_id

    async def hangup(self, reason: str = "bot") -> None:
        """End the call once the caller has heard everything sent. Idempotent."""
        await self._output.finish_call(reason)

    def detach(self) -> None:
        """The bot is done with this call: cut what ties Pipecat's objects to it.

        A finished pipeline is a reference cycle (processors link both ways, tasks and
        event handlers point back), left to Python's cyclic collector. Our processors
        sit in it, and through them the call, its session, resamplers and buffers: a
        few hundred objects per call that only a full collection frees, and at call
        churn those collections pause every live call. Dropping the processors' links
        to the transport and the call lets reference counting free the call's state
        the moment the server lets go of it; Pipecat's own graph stays for the
        collector, without our call in it. :func:`pipecat_runner` calls this when the
        bot returns; the transport must not be used afterwards.
        """
        if isinstance(self._call, _EndedCall):
            return
        ended = _EndedCall(self._call)
        self._input._detach(ended)
        self._output._detach(ended)
        self._call = ended

    async def _client_connected(self) -> None:
        await self._call_event_handler("on_client_connected", self._call)

    async def _client_disconnected(self) -> None:
        await self._call_event_handler("on_client_disconnected", self._call)


def pipecat_runner(run_bot: PipecatBot, params: TransportParams | None = None) -> BotRunner:
    """Adapt ``async def run_bot(transport, call_info)`` into a server :data:`BotRunner`.

    The runner builds a :class:`MediaStreamTransport` over the call, awaits the bot and,
    when the bot returns without having ended the call, ends it after playout; then it
    detaches the transport (:meth:`MediaStreamTransport.detach`) so that the call's state
    is freed without the cyclic collector. Exceptions propagate: the server closes that
    call alone with 1011 and logs it.
    """

    route_pipecat_logs()  # Pipecat's loguru lines follow --log-level, with the call id

    async def runner(call: Call) -> None:
        CALL_ID.set(call.info.call_id)  # this task's context: the pipeline inherits it
        transport = MediaStreamTransport(call, params)
        try:
            await run_bot(transport, call.info)
            if not call.ended:
                await transport.hangup("bot finished")
        finally:
            transport.detach()

    runner.__name__ = getattr(run_bot, "__name__", "run_bot")
    runner.__qualname__ = f"pipecat_runner({runner.__name__})"
    return runner
