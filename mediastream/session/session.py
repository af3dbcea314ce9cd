"""One call's session: protocol events in, bot events out; bot audio in, paced commands out.

Synchronous and clock-free: every method takes ``now`` (the caller's monotonic clock, in
seconds) and the server decides when to call :meth:`CallSession.poll` from
:meth:`CallSession.next_deadline`. The parts, each in its own module:

* :mod:`~mediastream.session.reorder` puts inbound media back in order (Telnyx does not
  guarantee it), filling true gaps with silence;
* :mod:`~mediastream.session.inbound` decodes, resamples once and cuts 20 ms bot frames;
* :mod:`~mediastream.session.outbound` resamples, encodes and cuts whole 20 ms wire frames;
* :mod:`~mediastream.session.pacer` releases them a bounded lead ahead of real time;
* :mod:`~mediastream.session.ledger` turns mark echoes into what the caller heard.

Driving it (what the server does)::

    session = CallSession(call_info, now=loop.time())
    for event in session.receive_event(protocol_event, loop.time()): deliver(event)
    session.send_audio(pcm, 24000, loop.time())       # from the bot, then:
    commands, events = session.poll(loop.time())       # send commands, deliver events
    sleep_until(session.next_deadline())               # None: wait for new input only

After :meth:`~CallSession.send_audio`, :meth:`~CallSession.end_utterance` or
:meth:`~CallSession.clear`, ``next_deadline()`` is ``<= now`` when something is due, so a
server that re-arms its timer after every call never misses a frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, TypeAlias

from audiocodecs.resample import StreamResampler
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
from mediastream.session.codec import FRAME_S
from mediastream.session.inbound import InboundPath
from mediastream.session.ledger import DEFAULT_MARK_GRACE, PlayoutLedger
from mediastream.session.outbound import OutboundEncoder
from mediastream.session.pacer import Pacer
from mediastream.session.reorder import FILL, ReorderBuffer
from mediastream.session.stats import SessionStats

__all__ = ["BatchStep", "CallSession"]

#: A conversion a session hands out to be batched with other calls' (see
#: :meth:`CallSession.attach_batcher`): the stream's resampler and the wire encoding
#: (``"pcmu"`` or ``"pcma"``) it converts from (inbound) or to (outbound).
BatchStep: TypeAlias = tuple[StreamResampler, str]

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


class CallSession:
    """The per-call media state between a provider protocol and a bot.

    Args:
        call: the call description from the provider's ``start``.
        bot_sample_rate: rate of the PCM delivered to the bot (and the default it sends).
        playout_lead: seconds of audio released ahead of its play time (pacing bound).
        mark_interval: seconds of outbound audio between playout marks/checkpoints.
        reorder_window: inbound frames held at most while waiting for a missing one.
        now: the monotonic clock at creation.
        mark_grace: seconds after a mark's play time before the clock counts it as played
            when the provider did not echo it (see :mod:`~mediastream.session.ledger`).
        idle_flush: seconds without bot audio (and with nothing left queued) after which
            the bot counts as paused and the tail is flushed, padded to a whole frame.

    Raises:
        UnsupportedDataError: a codec, rate or channel count the session cannot handle.
        ValueError: a bad setting.
    """

    __slots__ = (
        "_bot_rate",
        "_call_id",
        "_deferred_in",
        "_deferred_out",
        "_encoder",
        "_ended",
        "_events",
        "_events_at",
        "_frames_per_mark",
        "_idle_flush",
        "_in_fmt",
        "_inbound",
        "_key_mode",
        "_last_send",
        "_ledger",
        "_pacer",
        "_reorder",
        "_settle",
        "_since_mark",
        "call",
        "stats",
    )

    def __init__(
        self,
        call: CallInfo,
        *,
        bot_sample_rate: int = 16000,
        playout_lead: float = 0.08,
        mark_interval: float = 0.2,
        reorder_window: int = 3,
        now: float,
        mark_grace: float = DEFAULT_MARK_GRACE,
        idle_flush: float = DEFAULT_IDLE_FLUSH,
    ) -> None:
        if mark_interval <= 0:
            raise ValueError(f"mark_interval must be > 0, got {mark_interval}")
        if idle_flush < 0:
            raise ValueError(f"idle_flush must be >= 0, got {idle_flush}")
        self.call = call
        self.stats = SessionStats()
        self._call_id = call.call_id
        self._bot_rate = bot_sample_rate
        self._in_fmt: MediaFormat = call.inbound_format
        self._inbound = InboundPath(call.inbound_format, bot_sample_rate, self.stats)
        self._encoder = OutboundEncoder(call.outbound_format)
        self._pacer = Pacer(playout_lead, FRAME_S, self.stats)
        self._ledger = PlayoutLedger(call.call_id, self.stats, mark_grace)
        self._reorder = ReorderBuffer(reorder_window, FRAME_S, self.stats)
        self._key_mode = 0
        self._frames_per_mark = max(1, round(mark_interval / FRAME_S))
        self._since_mark = 0
        self._idle_flush = idle_flush
        self._last_send = now
        self._events: list[CallEvent] = []
        self._events_at = now
        self._ended = False
        #: Conversions handed out by defer_audio / defer_send and not yet returned.
        self._deferred_in = 0
        self._deferred_out = 0
        self._settle: Callable[[], None] | None = None

    # ------------------------------------------------------------------ properties

    @property
    def bot_sample_rate(self) -> int:
        return self._bot_rate

    @property
    def ended(self) -> bool:
        """True once the stream stopped or :meth:`end` was called."""
        return self._ended

    @property
    def all_played(self) -> bool:
        """True when the caller has heard (or a clear discarded) everything the bot sent."""
        return self._ledger.idle and self._pacer.empty and not self._encoder.pending

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
        return self._pacer.queued_frames * FRAME_S + self._encoder.pending_s

    @property
    def bot_speaking(self) -> bool:
        """True between PlayoutStarted and PlayoutStopped: the caller hears the bot."""
        return self._ledger.speaking

    # ------------------------------------------------------------------ batching

    def attach_batcher(self, settle: Callable[[], None]) -> None:
        """Let the caller convert this call's common-case frames together with other
        calls' (the server does, once per event-loop turn).

        After this, :meth:`defer_audio` and :meth:`defer_send` may hand a frame's
        resampling out instead of doing it. ``settle()`` must complete every
        conversion handed out, by calling :meth:`receive_converted` or
        :meth:`send_converted` with its result. The session calls it itself before
        anything that has to come after a pending frame of the same direction (the
        next inbound event; more bot audio, an utterance end, a clear; the end), so
        each direction's order is as if every frame had been converted on the spot.
        Results are identical: the batch functions of :mod:`audiocodecs.resample`
        compute exactly what the stream's own methods do.
        """
        self._settle = settle

    def _settle_now(self) -> None:
        settle = self._settle
        if settle is not None:
            settle()
        if self._deferred_in or self._deferred_out:  # never deliver out of order
            raise RuntimeError(f"call {self._call_id}: settle() left conversions pending")

    def defer_audio(self, event: AudioReceived) -> BatchStep | None:
        """Hand the conversion of a media event out, when it is the common case.

        The common case: a batcher is attached, no inbound frame is pending, the
        caller's track, in order, the current format, G.711 resampled, one payload
        making one bot frame. Then the event is accounted for as :meth:`receive_event`
        would, and the caller converts ``event.payload`` with the returned step (one
        row of :func:`audiocodecs.resample.process_ulaw_many` or ``process_alaw_many``)
        and passes the bot frame to :meth:`receive_converted`. Otherwise returns
        ``None``: use :meth:`receive_event`.
        """
        if self._deferred_in or self._settle is None or self._ended or self._events:
            return None
        track = event.track
        if track != "inbound" and not track.startswith("inbound"):
            return None
        fmt = event.format
        if fmt is not self._in_fmt and fmt != self._in_fmt:
            return None
        rs = self._inbound.batchable(event.payload)
        if rs is None:
            return None
        key = self._key(event)
        if key is not None and not self._in_order(key):
            return None
        self.stats.frames_in += 1
        self._deferred_in += 1
        return rs, fmt.encoding

    def receive_converted(self, pcm: bytes) -> list[CallEvent]:
        """The bot frame (int16 LE) of the payload :meth:`defer_audio` handed out."""
        self._deferred_in -= 1
        out = self._inbound.feed_converted(pcm)
        if self._events:
            out[:0] = self._take_events()
        return out

    def defer_send(self, pcm: bytes, sample_rate: int, now: float) -> BatchStep | None:
        """Hand the conversion of bot audio out, when it is the common case.

        The common case: a batcher is attached, no outbound frame is pending, ``pcm`` is
        bytes at the current bot rate, exactly one wire frame of G.711, the resampler in
        its steady state and nothing buffered. Then it counts as sent (as
        :meth:`send_audio` would), and the caller converts it with the returned step
        (one row of :func:`audiocodecs.resample.process_to_ulaw_many` or
        ``process_to_alaw_many``) and passes the frame to :meth:`send_converted`.
        Otherwise ``None``: use :meth:`send_audio`.
        """
        if self._deferred_out or self._settle is None or self._ended or type(pcm) is not bytes:
            return None
        rs = self._encoder.batchable(pcm, sample_rate)
        if rs is None:
            return None
        self._last_send = now
        self._deferred_out += 1
        return rs, self._encoder.format.encoding

    def send_converted(self, frame: bytes, now: float) -> None:
        """The wire frame made of the audio :meth:`defer_send` handed out."""
        self._deferred_out -= 1
        if not self._ended:
            self._enqueue([frame], now)

    # ------------------------------------------------------------------ inbound

    def receive_event(self, event: Event, now: float) -> list[CallEvent]:
        """Handle one protocol event; returns the bot events it produces, in order."""
        if self._deferred_in:
            self._settle_now()
        if type(event) is AudioReceived:
            return self._on_audio(event, now)
        if self._ended:
            return []
        out: list[CallEvent]
        if type(event) is MarkPlayed:
            out = self._skip(event.sequence, now)
            out += self._ledger.on_echo(event.name, now)
        elif type(event) is DtmfReceived:
            out = self._skip(event.sequence, now)
            out.append(DtmfPressed(event.digit))
        elif type(event) is StreamStopped:
            out = self._skip(event.sequence, now)
            out += self.end(event.reason or "stop", now)
        elif type(event) is AudioCleared:
            self._ledger.on_cleared(now)
            out = self._skip(event.sequence, now)
        elif type(event) is StreamStarted:
            out = self._skip(event.sequence, now)
        elif type(event) is ProviderErrorReported:
            logger.warning(
                "call %s: provider reported error code=%s title=%s detail=%s",
                self._call_id, event.code, event.title, event.detail,
            )
            out = []
        elif type(event) is StreamConnected or type(event) is UnknownEventReceived:
            out = []
        else:
            raise TypeError(f"not a protocol event: {type(event).__name__}")
        if self._events:
            out[:0] = self._take_events()
        return out

    def _on_audio(self, event: AudioReceived, now: float) -> list[CallEvent]:
        if self._ended:
            return []
        track = event.track
        if track != "inbound" and not track.startswith("inbound"):
            # Our own playback (both_tracks streams): not the caller's audio.
            self.stats.frames_ignored += 1
            return []
        self.stats.frames_in += 1
        inbound = self._inbound
        fmt = event.format
        changed: list[CallEvent] | None = None
        if fmt is not self._in_fmt and fmt != self._in_fmt:
            logger.info("call %s: inbound format changed to %s", self._call_id, fmt)
            self._in_fmt = fmt
            changed = inbound.set_format(fmt)
        key = self._key(event)
        out: list[CallEvent]
        if key is None or self._in_order(key):
            # In order (the common case): straight through, no added latency.
            out = inbound.feed(event.payload)
        else:
            out = self._feed_items(self._reorder.push(key, event.payload, now))
        if changed:
            out[:0] = changed
        if self._events:
            out[:0] = self._take_events()
        return out

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

    def _skip(self, sequence: int | None, now: float) -> list[CallEvent]:
        if self._key_mode != _SEQUENCE or sequence is None:
            return []
        return self._feed_items(self._reorder.skip(sequence, now))

    def _feed_items(self, items: list[bytes | None]) -> list[CallEvent]:
        out: list[CallEvent] = []
        inbound = self._inbound
        for item in items:
            if item is FILL:
                out += inbound.feed_fill()
            else:
                out += inbound.feed(item)
        return out

    def end(self, reason: str, now: float) -> list[CallEvent]:
        """The stream is over: flush the caller's audio and return it with :class:`CallEnded`.

        Called for the provider's ``stop``; the server calls it itself when the socket
        closes or the call is hung up. Outbound audio still queued is dropped (nobody is
        left to hear it). Idempotent: later calls return ``[]``.
        """
        if self._deferred_in or self._deferred_out:
            self._settle_now()
        if self._ended:
            return []
        out = self._feed_items(self._reorder.drain())
        out += self._inbound.flush()
        self._ended = True
        dropped = self._pacer.clear(now)
        self._encoder.reset()
        if dropped:
            logger.info("call %s: ended with %d outbound frames unplayed", self._call_id, dropped)
        out.append(CallEnded(reason))
        return out

    # ------------------------------------------------------------------ outbound

    def send_audio(self, pcm: bytes, sample_rate: int, now: float) -> None:
        """Queue bot audio: int16 LE mono at ``sample_rate`` (8000, 16000, 24000, 44100,
        48000), any chunk size. Never drops it; :meth:`poll` releases it paced.

        Raises ``ValueError`` for an unsupported rate, ``TypeError`` for non-bytes.
        """
        if self._deferred_out:
            self._settle_now()
        if self._ended:
            return
        frames = self._encoder.push(pcm, sample_rate)
        self._last_send = now
        if frames:
            self._enqueue(frames, now)

    def end_utterance(self, now: float) -> None:
        """The bot finished an utterance: flush the resampler tail, pad the last frame to
        20 ms with codec silence, and place the utterance's final mark."""
        if self._deferred_out:
            self._settle_now()
        if self._ended:
            return
        self._finish(now)

    def clear(self, now: float) -> list[Command]:
        """Interrupt: ``ClearAudio``, drop queued audio, resolve pending marks as cut.

        The ``PlayoutStopped(played_s, cut=True)`` of the interrupted utterance comes
        out of the next :meth:`poll` (or :meth:`receive_event`); ``next_deadline()`` is
        then ``now``.
        """
        if self._deferred_out:
            self._settle_now()
        if self._ended:
            return []
        pacer = self._pacer
        backlog = pacer.backlog_s(now)
        self.stats.clear_backlog_s = backlog
        heard_pos = pacer.released_pos_s - backlog
        pacer.clear(now)
        self._encoder.reset()
        self._since_mark = 0
        events = self._ledger.cut(heard_pos, pacer.frames_pushed * FRAME_S, now)
        if events:
            self._add_events(events, now)
        return [ClearAudio()]

    def poll(self, now: float) -> tuple[list[Command], list[CallEvent]]:
        """Everything due by ``now``: paced SendAudio/SendMark commands and ledger events."""
        commands: list[Command] = []
        if self._ended:
            return commands, self._take_events()
        if self._encoder.pending and now >= self._flush_deadline():
            # The bot paused: the tail must play right after what is queued. Nothing held.
            self.stats.idle_flushes += 1
            self._finish(now)
        self._pacer.release(now, commands)
        events = self._take_events() if self._events else []
        events += self._ledger.tick(now)
        if self._reorder.holding:
            events += self._feed_items(self._reorder.expire(now))
        return commands, events

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
