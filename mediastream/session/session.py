"""One call's session: protocol events in, bot events out; bot audio in, paced commands out.

Synchronous and clock-free: every method takes ``now`` (the caller's monotonic clock, in
seconds). What the session produces goes to its :class:`SessionHost`: bot events to
``deliver``, and a ``wake`` when paced output became due; the host decides when to call
:meth:`CallSession.poll` from :meth:`CallSession.next_deadline`. The parts, each in its
own module:

* :mod:`~mediastream.session.reorder` puts inbound media back in order (Telnyx does not
  guarantee it), filling true gaps with silence;
* :mod:`~mediastream.session.inbound` decodes, resamples once and cuts bot frames (20 ms,
  or ``bot_frame_ms``);
* :mod:`~mediastream.session.outbound` resamples, encodes and cuts whole 20 ms wire frames;
* :mod:`~mediastream.session.pacer` releases them a bounded lead ahead of real time;
* :mod:`~mediastream.session.ledger` turns mark echoes into what the caller heard;
* :mod:`~mediastream.session.batch` runs every resampler step, at once or batched.

Order. Each direction has one path, whatever the batcher does: a resampler step goes to
the batcher, and the session carries on from its result. While a direction has a step
out, what comes next in that direction waits in the session's queue for it (inbound
events behind the caller's audio; bot audio and utterance ends behind the bot's audio),
so the bot hears everything in the order it came and the caller hears everything in the
order it was sent, with or without batching. Without batching a step's result comes back
before the call that made it returns and nothing ever waits. :attr:`CallSession.accepting`
says when inbound input would wait; a driver that reads a socket stops reading then
(``SessionHost.resume`` tells it to go on), so its protocol parser never runs ahead of
the session.

Driving it (what the server does)::

    session = CallSession(call_info, host, now=loop.time(), batcher=batcher)
    session.receive_event(protocol_event, loop.time())  # bot events go to host.deliver
    session.send_audio(pcm, 24000, loop.time())          # from the bot; then host.wake()
    commands = session.poll(loop.time())                  # send them
    sleep_until(session.next_deadline())                  # None: wait for new input only
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from typing import Final, Protocol

from mediastream.call import CallEnded, CallEvent, DtmfPressed
from mediastream.protocols.events import (
    AudioCleared,
    AudioReceived,
    CallInfo,
    ClearAudio,
    Command,
    DtmfReceived,
    Event,
    MarkPlayed,
    MediaFormat,
    ProviderErrorReported,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    UnknownEventReceived,
)
from mediastream.session.batch import ResampleBatcher
from mediastream.session.codec import FRAME_S, SUPPORTED_RATES
from mediastream.session.inbound import InboundPath
from mediastream.session.ledger import DEFAULT_MARK_GRACE, PlayoutLedger
from mediastream.session.outbound import OutboundEncoder
from mediastream.session.pacer import Pacer
from mediastream.session.reorder import ReorderBuffer
from mediastream.session.stats import SessionStats
from mediastream.session.tracks import OtherTrack

__all__ = ["CallSession", "SessionHost"]

#: Default for ``idle_flush``. A flush pads the tail to a whole 20 ms frame; if the bot was
#: only late (an echo or a streaming TTS under network jitter) rather than paused, that
#: padding sits in the provider's queue ahead of the next audio for the rest of the talk
#: spurt: +20 ms of latency, measured with ``mediastream call`` against the echo bot at
#: a 16 kHz bot rate (audible p50 39 ms instead of 19 ms). 100 ms tells a pause from
#: jitter; the cost is that a paused bot's last fragment (< 20 ms) plays up to 100 ms
#: late. Bots that call ``end_utterance`` (the Pipecat bridge does) never wait for it.
DEFAULT_IDLE_FLUSH: Final = 0.1

logger = logging.getLogger("mediastream.session")

_CHUNK: Final = 1
_SEQUENCE: Final = 2
_NO_KEY: Final = 3
#: Lateness below this is timer noise, not an audible underrun.
_UNDERRUN_SLACK: Final = 0.001
#: Shared by every session built without a batcher: converts each step at once.
_AT_ONCE: Final = ResampleBatcher()


class SessionHost(Protocol):
    """Where a :class:`CallSession` sends what it produces (the server's connection)."""

    def deliver(self, events: list[CallEvent]) -> None:
        """Bot events, in order; :class:`~mediastream.call.CallEnded` comes last, once."""

    def wake(self) -> None:
        """Bot audio (or events) became due: call :meth:`CallSession.poll` soon."""

    def resume(self) -> None:
        """Inbound input waiting on a resampler step was handled: feed more."""

    def failed(self, exc: Exception) -> None:
        """Work the session did off its caller's stack (a batch's result) failed: end
        the call. Errors on the caller's stack are raised to the caller instead."""


class _End:
    """Queued end of the stream (inbound): the buffered audio first, then CallEnded."""

    __slots__ = ("drained", "now", "reason")

    def __init__(self, reason: str, now: float) -> None:
        self.reason = reason
        self.now = now
        self.drained = False


class _Finish:
    """Queued utterance end (outbound): behind the bot audio queued before it."""

    __slots__ = ("now",)

    def __init__(self, now: float) -> None:
        self.now = now


#: Inbound work, in order: a payload or FILL for the inbound path, bot events to deliver,
#: a protocol event not yet handled (with its time), the end of the stream.
_InWork = bytes | None | list[CallEvent] | tuple[Event, float] | _End
#: Outbound work, in order: bot audio (pcm, rate, now), an utterance end.
_OutWork = tuple[bytes, int, float] | _Finish


class CallSession:
    """The per-call media state between a provider protocol and a bot.

    Args:
        call: the call description from the provider's ``start``.
        host: receives bot events and wake-ups (see :class:`SessionHost`).
        bot_sample_rate: rate of the PCM delivered to the bot (and the default it sends).
        bot_frame_ms: length of the bot's input frames: 20, 40 or 60 ms.
        playout_lead: seconds of audio released ahead of its play time (pacing bound).
        mark_interval: seconds of outbound audio between playout marks/checkpoints.
        reorder_window: inbound frames held at most while waiting for a missing one.
        now: the monotonic clock at creation.
        mark_grace: seconds after a mark's play time before the clock counts it as played
            when the provider did not echo it (see :mod:`~mediastream.session.ledger`).
        idle_flush: seconds without bot audio (and with nothing left queued) after which
            the bot counts as paused and the tail is flushed, padded to a whole frame.
        batcher: runs the resampler steps (default: each at once, a batch of one).
        listen_only: the stream is a listen-only fork: its non-inbound track (what the
            caller hears) is the other party, delivered as ``InboundAudio(track="other")``
            (session/tracks.py). Otherwise that track is our own playback and ignored.

    Raises:
        UnsupportedDataError: a codec, rate or channel count the session cannot handle.
        ValueError: a bad setting.
    """

    __slots__ = (
        "_batcher",
        "_bot_rate",
        "_call_id",
        "_encoder",
        "_ended",
        "_events",
        "_events_at",
        "_frames_per_mark",
        "_host",
        "_idle_flush",
        "_in_busy",
        "_in_done",
        "_in_fmt",
        "_in_sync",
        "_in_work",
        "_inbound",
        "_key_mode",
        "_last_send",
        "_ledger",
        "_other",
        "_out_busy",
        "_out_now",
        "_out_step_s",
        "_out_sync",
        "_out_void",
        "_out_work",
        "_out_work_s",
        "_pacer",
        "_reorder",
        "_since_mark",
        "call",
        "stats",
    )

    def __init__(
        self,
        call: CallInfo,
        host: SessionHost,
        *,
        bot_sample_rate: int = 16000,
        bot_frame_ms: int = 20,
        playout_lead: float = 0.08,
        mark_interval: float = 0.2,
        reorder_window: int = 3,
        now: float,
        mark_grace: float = DEFAULT_MARK_GRACE,
        idle_flush: float = DEFAULT_IDLE_FLUSH,
        batcher: ResampleBatcher | None = None,
        listen_only: bool = False,
    ) -> None:
        if mark_interval <= 0:
            raise ValueError(f"mark_interval must be > 0, got {mark_interval}")
        if idle_flush < 0:
            raise ValueError(f"idle_flush must be >= 0, got {idle_flush}")
        self.call = call
        self.stats = SessionStats()
        self._host = host
        self._batcher = _AT_ONCE if batcher is None else batcher
        self._call_id = call.call_id
        self._bot_rate = bot_sample_rate
        self._in_fmt: MediaFormat = call.inbound_format
        self._inbound = InboundPath(call.inbound_format, bot_sample_rate, self.stats,
                                    bot_frame_ms)
        self._encoder = OutboundEncoder(call.outbound_format)
        self._pacer = Pacer(playout_lead, FRAME_S, self.stats)
        self._ledger = PlayoutLedger(call.call_id, self.stats, mark_grace)
        self._reorder = ReorderBuffer(reorder_window, FRAME_S, self.stats)
        #: The other party's track of a listen-only stream, on its own path.
        self._other = (
            OtherTrack(call.inbound_format, bot_sample_rate, self.stats, reorder_window,
                       bot_frame_ms)
            if listen_only
            else None
        )
        self._key_mode = 0
        self._frames_per_mark = max(1, round(mark_interval / FRAME_S))
        self._since_mark = 0
        self._idle_flush = idle_flush
        self._last_send = now
        #: Events from the outbound side (a clear's cut), delivered at the next poll.
        self._events: list[CallEvent] = []
        self._events_at = now
        #: The stream is over for the bot's audio (stop, hang-up, socket gone).
        self._ended = False
        #: ... and CallEnded was delivered: nothing more comes in.
        self._in_done = False
        # Inbound: a step out, the work waiting behind it, and a step being submitted
        # (its result, when it comes back at once, is the submitter's to go on from).
        self._in_busy = False
        self._in_work: deque[_InWork] = deque()
        self._in_sync = False
        # Outbound: the same, plus the time of the audio out, whether a clear voided
        # it, and the seconds of bot audio queued behind it.
        self._out_busy = False
        self._out_work: deque[_OutWork] = deque()
        self._out_now = now
        self._out_sync = False
        self._out_void = False
        self._out_work_s = 0.0
        self._out_step_s = 0.0

    # ------------------------------------------------------------------ properties

    @property
    def bot_sample_rate(self) -> int:
        return self._bot_rate

    @property
    def ended(self) -> bool:
        """True once the stream stopped or :meth:`end` was called."""
        return self._ended

    @property
    def accepting(self) -> bool:
        """False while inbound input would wait behind a resampler step (see the module
        docstring): a driver reading a socket stops until ``SessionHost.resume``."""
        return not self._in_busy and not self._in_work

    @property
    def all_played(self) -> bool:
        """True when the caller has heard (or a clear discarded) everything the bot sent."""
        return (
            self._ledger.idle
            and self._pacer.empty
            and not self._encoder.pending
            and not self._out_busy
            and not self._out_work
        )

    @property
    def played_s(self) -> float:
        """Seconds of bot audio the caller has heard, per the playout ledger."""
        return self._ledger.played_s

    @property
    def sent_s(self) -> float:
        """Seconds of bot audio released to the provider (including audio later cut)."""
        return self.stats.frames_out * FRAME_S

    @property
    def queued_s(self) -> float:
        """Seconds of bot audio accepted but not yet released to the provider."""
        queued = self._pacer.queued_frames * FRAME_S + self._encoder.pending_s + self._out_work_s
        return queued + self._out_step_s if self._out_busy else queued

    @property
    def bot_speaking(self) -> bool:
        """True between PlayoutStarted and PlayoutStopped: the caller hears the bot."""
        return self._ledger.speaking

    # ------------------------------------------------------------------ inbound

    def receive_event(self, event: Event, now: float) -> None:
        """Handle one protocol event; the bot events it produces go to ``host.deliver``.

        Raises a :class:`~mediastream.errors.RemoteProtocolError` for media the session
        cannot take (an odd L16 byte count); ``TypeError`` for what is not an event.
        """
        if self._in_busy or self._in_work:
            self._in_work.append((event, now))
        elif type(event) is AudioReceived:
            self._on_audio(event, now)
        else:
            self._on_event(event, now)

    def _on_event(self, event: Event, now: float) -> None:
        if self._events:
            self._host.deliver(self._take_events())
        if self._in_done:
            return
        kind = type(event)
        out: list[_InWork] = []
        if kind is MarkPlayed:
            assert isinstance(event, MarkPlayed)
            out += self._skip(event.sequence, now)
            out.append(self._ledger.on_echo(event.name, now))
        elif kind is DtmfReceived:
            assert isinstance(event, DtmfReceived)
            out += self._skip(event.sequence, now)
            out.append([DtmfPressed(event.digit)])
        elif kind is StreamStopped:
            assert isinstance(event, StreamStopped)
            out += self._skip(event.sequence, now)
            self._close_outbound(now)
            out.append(_End(event.reason or "stop", now))
        elif kind is AudioCleared:
            assert isinstance(event, AudioCleared)
            self._ledger.on_cleared(now)
            out += self._skip(event.sequence, now)
        elif kind is StreamStarted:
            assert isinstance(event, StreamStarted)
            out += self._skip(event.sequence, now)
        elif kind is ProviderErrorReported:
            assert isinstance(event, ProviderErrorReported)
            logger.warning(
                "call %s: provider reported error code=%s title=%s detail=%s",
                self._call_id, event.code, event.title, event.detail,
            )
        elif kind is not StreamConnected and kind is not UnknownEventReceived:
            raise TypeError(f"not a protocol event: {kind.__name__}")
        if out:
            self._do(out)

    def _on_audio(self, event: AudioReceived, now: float) -> None:
        if self._in_done:
            return
        track = event.track
        if track != "inbound" and not track.startswith("inbound"):
            if self._other is not None:  # listen-only: the other party
                self._on_other(event, now)
                return
            # Our own playback (both_tracks streams): not the caller's audio.
            self.stats.frames_ignored += 1
            return
        self.stats.frames_in += 1
        if self._events:
            self._host.deliver(self._take_events())
        fmt = event.format
        out: list[_InWork] | None = None
        if fmt is not self._in_fmt and fmt != self._in_fmt:
            logger.info("call %s: inbound format changed to %s", self._call_id, fmt)
            self._in_fmt = fmt
            out = [self._inbound.set_format(fmt)]
        key = self._key(event)
        if key is None or self._in_order(key):
            # In order (the common case): straight through, no added latency.
            if out is None:
                self._feed(event.payload)
                return
            out.append(event.payload)
        else:
            out = [*(out or ()), *self._reorder.push(key, event.payload, now)]
        self._do(out)

    def _on_other(self, event: AudioReceived, now: float) -> None:
        """The other party's audio: its own path, converted and delivered at once
        (session/tracks.py); only events received before it go first."""
        assert self._other is not None
        self.stats.frames_other_in += 1
        frames = self._other.receive(event, now)
        if frames:
            self._host.deliver(frames)

    def _feed(self, item: bytes | None) -> None:
        """One payload (or FILL) into the inbound path: frames now, or a step out."""
        inbound = self._inbound
        step = inbound.fill_step() if item is None else inbound.step(item)
        if isinstance(step, list):
            if step:
                self._host.deliver(step)
            return
        rs, kind, data = step
        self._in_busy = True
        self._in_sync = True
        try:
            self._batcher.submit(rs, kind, data, self._on_converted_in)
        finally:
            self._in_sync = False

    def _on_converted_in(self, result: bytes | Exception) -> None:
        self._in_busy = False
        try:
            if type(result) is not bytes:
                assert isinstance(result, Exception)
                raise result
            frames = self._inbound.converted(result)
            if frames:
                self._host.deliver(frames)
            if self._in_sync:
                return  # a step converted at once: its caller goes on with the queue
            if self._in_work:
                self._run_in()
        except Exception as exc:  # off the caller's stack: the host ends the call
            self._in_work.clear()
            self._host.failed(exc)
            return
        if not self._in_busy and not self._in_work:
            self._host.resume()

    def _do(self, work: Sequence[_InWork]) -> None:
        """Inbound work produced by one event, in order: whatever follows a step that
        went out waits at the front of the queue, ahead of later events."""
        for i, item in enumerate(work):
            if self._in_busy:
                self._in_work.extendleft(reversed(work[i:]))
                return
            if self._in_done:  # CallEnded went out (a failure ended the call meanwhile)
                return
            if item is None or isinstance(item, bytes):
                self._feed(item)
            elif isinstance(item, list):
                if item:
                    self._host.deliver(item)
            elif isinstance(item, tuple):
                event, now = item
                if isinstance(event, AudioReceived):
                    self._on_audio(event, now)
                else:
                    self._on_event(event, now)
            else:
                assert isinstance(item, _End)
                self._end_stream(item)

    def _run_in(self) -> None:
        """Handle queued inbound work until a step is out or nothing is left."""
        work = self._in_work
        while work and not self._in_busy:
            self._do([work.popleft()])

    def _key(self, event: AudioReceived) -> int | None:
        """The frame's reorder key (chunk or sequence number) in this stream's key mode."""
        mode = self._key_mode
        if mode == _CHUNK:
            return event.chunk
        if mode == _SEQUENCE:
            return event.sequence
        if mode == 0:
            return self._choose_key_mode(event)
        return None

    def _in_order(self, key: int) -> bool:
        """True when the frame of ``key`` is the next one and nothing is held: it goes
        straight through, and the next key is expected."""
        reorder = self._reorder
        if key != reorder.expected or reorder.holding:
            return False
        reorder.expected = key + 1
        return True

    def _choose_key_mode(self, event: AudioReceived) -> int | None:
        # Twilio and Plivo number chunks per track; Telnyx does too. Sequence numbers count
        # every message, so they are the fallback (non-media keys are skipped, see _skip).
        if event.chunk is not None:
            self._key_mode = _CHUNK
            return event.chunk
        if event.sequence is not None:
            self._key_mode = _SEQUENCE
            return event.sequence
        self._key_mode = _NO_KEY
        return None

    def _skip(self, sequence: int | None, now: float) -> list[bytes | None]:
        if self._key_mode != _SEQUENCE or sequence is None:
            return []
        return self._reorder.skip(sequence, now)

    def end(self, reason: str, now: float) -> None:
        """The stream is over: the caller's buffered audio, then :class:`CallEnded`, go to
        the bot (behind the inbound work received before this).

        Called for the provider's ``stop``; the server calls it itself when the socket
        closes or the call is hung up. Outbound audio still queued is dropped (nobody is
        left to hear it). Idempotent.
        """
        if self._ended:
            return
        self._close_outbound(now)
        end = _End(reason, now)
        if self._in_busy or self._in_work:
            self._in_work.append(end)
        else:
            self._end_stream(end)

    def _close_outbound(self, now: float) -> None:
        self._ended = True
        dropped = self._pacer.clear(now)
        self._out_work.clear()
        self._out_work_s = 0.0
        if self._out_busy:
            self._out_void = True
        else:
            self._encoder.reset()
        if dropped:
            logger.info("call %s: ended with %d outbound frames unplayed", self._call_id, dropped)

    def _end_stream(self, end: _End) -> None:
        if self._in_done:
            return
        if not end.drained:  # what the reorder buffer holds goes first, in order
            end.drained = True
            self._do([*self._reorder.drain(), end])
            return
        self._in_done = True
        out = self._inbound.flush()
        if self._other is not None:
            out += self._other.finish()
        out.append(CallEnded(end.reason))
        if self._events:
            out[:0] = self._take_events()
        self._host.deliver(out)

    # ------------------------------------------------------------------ outbound

    def send_audio(self, pcm: bytes, sample_rate: int, now: float) -> None:
        """Queue bot audio: int16 LE mono at ``sample_rate`` (8000, 16000, 24000, 44100,
        48000), any chunk size. Never drops it; :meth:`poll` releases it paced.

        Raises ``ValueError`` for an unsupported rate, ``TypeError`` for non-bytes.
        """
        if self._ended:
            return
        self._last_send = now
        if self._out_busy or self._out_work:
            # Checked now, as the step would: the bot learns of its mistake on its stack.
            if not isinstance(pcm, bytes | bytearray | memoryview):
                raise TypeError(f"bot audio must be bytes-like, got {type(pcm).__name__}")
            if sample_rate not in SUPPORTED_RATES:
                raise ValueError(
                    f"bot sample rate {sample_rate} is not supported; "
                    f"use one of {sorted(SUPPORTED_RATES)}"
                )
            self._out_work.append((bytes(pcm), sample_rate, now))
            self._out_work_s += len(pcm) / (2 * sample_rate)
            return
        self._push(pcm, sample_rate, now)

    def _push(self, pcm: bytes, sample_rate: int, now: float) -> None:
        step = self._encoder.step(pcm, sample_rate)
        if isinstance(step, list):
            if step:
                self._enqueue(step, now)
                self._host.wake()
            return
        rs, kind, data = step
        self._out_busy = True
        self._out_step_s = len(data) / (2 * sample_rate)
        self._out_now = now
        self._out_sync = True
        try:
            self._batcher.submit(rs, kind, data, self._on_converted_out)
        finally:
            self._out_sync = False

    def _on_converted_out(self, result: bytes | Exception) -> None:
        self._out_busy = False
        try:
            if self._out_void:  # a clear or the end came while it was out: nobody hears it
                self._out_void = False
                self._encoder.reset()
            elif type(result) is not bytes:
                assert isinstance(result, Exception)
                raise result
            else:
                frames = self._encoder.converted(result)
                if frames:
                    self._enqueue(frames, self._out_now)
            if self._out_work and not self._out_sync:
                self._run_out()
        except Exception as exc:  # the host ends the call
            self._out_work.clear()
            self._host.failed(exc)
            return
        self._host.wake()

    def _run_out(self) -> None:
        work = self._out_work
        while work and not self._out_busy and not self._ended:
            item = work.popleft()
            if type(item) is tuple:
                pcm, rate, now = item
                self._out_work_s -= len(pcm) / (2 * rate)
                self._push(pcm, rate, now)
            else:
                assert isinstance(item, _Finish)
                self._finish(item.now)
        if not work:
            self._out_work_s = 0.0

    def end_utterance(self, now: float) -> None:
        """The bot finished an utterance: flush the resampler tail, pad the last frame to
        20 ms with codec silence, and place the utterance's final mark."""
        if self._ended:
            return
        if self._out_busy or self._out_work:
            self._out_work.append(_Finish(now))
            return
        self._finish(now)
        self._host.wake()

    def clear(self, now: float) -> list[Command]:
        """Interrupt: ``ClearAudio``, drop queued audio, resolve pending marks as cut.

        Nothing (no command) when the caller has heard everything the bot sent
        (:attr:`all_played`): there is nothing to cut.

        The ``PlayoutStopped(played_s, cut=True)`` of the interrupted utterance comes
        out of the next :meth:`poll` (``next_deadline()`` is then ``now``).
        """
        if self._ended:
            return []
        if self.all_played:
            # Nothing left that the caller could still hear (every mark echoed, nothing
            # queued or converting): a clear would cut nothing. Pipecat interrupts at
            # every user turn's start, speaking or not; that is not a message each.
            self.stats.clears_skipped += 1
            return []
        self._out_work.clear()
        self._out_work_s = 0.0
        if self._out_busy:
            self._out_void = True  # its result is dropped and the filter reset then
        else:
            self._encoder.reset()
        pacer = self._pacer
        backlog = pacer.backlog_s(now)
        self.stats.clear_backlog_s = backlog
        heard_pos = pacer.released_pos_s - backlog
        pacer.clear(now)
        self._since_mark = 0
        events = self._ledger.cut(heard_pos, pacer.frames_pushed * FRAME_S, now)
        if events:
            self._add_events(events, now)
        return [ClearAudio()]

    def poll(self, now: float) -> list[Command]:
        """Everything due by ``now``: paced SendAudio/SendMark commands. Ledger events
        (and audio the reorder buffer gave up waiting for) go to ``host.deliver``."""
        commands: list[Command] = []
        if self._ended:
            if self._events:
                self._host.deliver(self._take_events())
            return commands
        if (
            self._encoder.pending
            and not self._out_busy
            and not self._out_work
            and now >= self._flush_deadline()
        ):
            # The bot paused: the tail must play right after what is queued. Nothing held.
            self.stats.idle_flushes += 1
            self._finish(now)
        self._pacer.release(now, commands)
        events = self._take_events() if self._events else []
        events += self._ledger.tick(now)
        if events:
            self._do([events])
        if self._reorder.holding and not self._in_busy and not self._in_work:
            self._do(self._reorder.expire(now))
        other = self._other
        if other is not None and other.deadline is not None and not self._in_done:
            frames = other.expire(now)
            if frames:
                self._host.deliver(frames)
        return commands

    def next_deadline(self) -> float | None:
        """When :meth:`poll` should next run; ``None`` when only new input can change that."""
        if self._ended:
            return self._events_at if self._events else None
        best = self._pacer.next_release
        if self._events and (best is None or self._events_at < best):
            best = self._events_at
        if self._encoder.pending:
            flush = self._flush_deadline()
            if best is None or flush < best:
                best = flush
        ledger = self._ledger.deadline()
        if ledger is not None and (best is None or ledger < best):
            best = ledger
        hold = self._reorder.deadline
        if hold is not None and (best is None or hold < best):
            best = hold
        if self._other is not None:
            hold = self._other.deadline
            if hold is not None and (best is None or hold < best):
                best = hold
        return best

    # ------------------------------------------------------------------ internals

    def _flush_deadline(self) -> float:
        # A pause is declared once the bot has been quiet for ``idle_flush`` *and* the
        # queued audio has run out (the pacer's timeline end): only then can the tail no
        # longer be followed by more audio of the same stream. Flushing any earlier pads a
        # frame with silence in the middle of a word whenever a streaming TTS or an echo
        # is a little late while audio is still queued, and shifts all later audio by it.
        # Cost: at a pause *without* end_utterance the last (< 20 ms) fragment reaches the
        # provider one network delay after the queue ran dry. end_utterance has no such
        # cost, it flushes at once.
        quiet = self._last_send + self._idle_flush
        end = self._pacer.timeline_end
        return quiet if quiet > end else end

    def _finish(self, now: float) -> None:
        frames = self._encoder.flush()
        if frames:
            self._enqueue(frames, now)
        if self._since_mark:
            self._place_mark(now, final=True)
        else:
            events = self._ledger.end_utterance(self._pacer.frames_pushed * FRAME_S, now)
            if events:
                self._add_events(events, now)

    def _enqueue(self, frames: list[bytes], now: float) -> None:
        pacer = self._pacer
        ledger = self._ledger
        per_mark = self._frames_per_mark
        for frame in frames:
            continuing = ledger.utterance_open
            if continuing and pacer.timeline_end < now - _UNDERRUN_SLACK:
                self.stats.underruns += 1
            pos = pacer.frames_pushed * FRAME_S
            start = pacer.push_audio(frame, now)
            if not continuing:
                ledger.open_utterance(pos, start)
            self._since_mark += 1
            if self._since_mark >= per_mark:
                self._place_mark(now, final=False)

    def _place_mark(self, now: float, *, final: bool) -> None:
        pacer = self._pacer
        name = self._ledger.add_mark(pacer.frames_pushed * FRAME_S, pacer.timeline_end, final=final)
        pacer.push_mark(name, now)
        self._since_mark = 0

    def _add_events(self, events: list[CallEvent], now: float) -> None:
        if not self._events:
            self._events_at = now
        self._events += events

    def _take_events(self) -> list[CallEvent]:
        events = self._events
        self._events = []
        return events
