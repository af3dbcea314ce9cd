"""A :class:`~mediastream.session.CallSession` that records its call.

Built by the server instead of a plain session when recording is on, so a call without
recording pays nothing. It taps the session at three places, changing none of its
decisions:

* its host: every event delivered to the bot passes through :class:`_Tap` --
  ``InboundAudio`` (the left channel, or the right one for the other party of a
  listen-only fork), ``DtmfPressed``, ``PlayoutStarted``/``PlayoutStopped``, ``CallEnded``;
* its pacer (:class:`_TappedPacer`): every wire frame with the time it is scheduled to
  play (the right channel), when each mark's audio is due, and every pacer clear -- a ``clear`` or
  the end of the call -- which cuts the right channel at that moment;
* protocol events and the bot's ``clear`` (:meth:`RecordingSession.receive_event`,
  :meth:`RecordingSession.clear`): mark echoes, Plivo ``clearedAudio``, ``stop``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol

from mediastream.call import (
    CallEnded,
    CallEvent,
    DtmfPressed,
    InboundAudio,
    PlayoutStarted,
    PlayoutStopped,
)
from mediastream.protocols.events import (
    AudioCleared,
    AudioReceived,
    CallInfo,
    Command,
    Event,
    MarkPlayed,
    StreamStarted,
    StreamStopped,
)
from mediastream.session.codec import FRAME_S
from mediastream.session.pacer import Pacer
from mediastream.session.session import CallSession, SessionHost
from mediastream.session.stats import SessionStats

from .recorder import CallRecorder, Recordings

__all__ = ["RecordingSession", "close_recording", "open_session"]


class _Tap:
    """The session's host, seen through the recorder (only ``deliver`` is looked at)."""

    __slots__ = ("_host", "_recorder", "failed", "resume", "wake")

    def __init__(self, host: SessionHost, recorder: CallRecorder) -> None:
        self._host = host
        self._recorder = recorder
        # Passed straight through: no extra call per wake-up.
        self.wake = host.wake
        self.resume = host.resume
        self.failed = host.failed

    def deliver(self, events: list[CallEvent]) -> None:
        recorder = self._recorder
        if len(events) == 1 and type(events[0]) is InboundAudio:  # the common case
            audio = events[0]
            recorder.audio(audio.pcm, audio.track)
            self._host.deliver(events)
            return
        for event in events:
            kind = type(event)
            if kind is InboundAudio:
                assert isinstance(event, InboundAudio)
                recorder.audio(event.pcm, event.track)
            elif kind is DtmfPressed:
                assert isinstance(event, DtmfPressed)
                recorder.event("dtmf", digit=event.digit)
            elif kind is PlayoutStarted:
                recorder.event("playout_started")
            elif kind is PlayoutStopped:
                assert isinstance(event, PlayoutStopped)
                recorder.event("playout_stopped", played_s=round(event.played_s, 3),
                               cut=event.cut)
            elif kind is CallEnded:
                assert isinstance(event, CallEnded)
                recorder.event("call_ended", reason=event.reason)
        self._host.deliver(events)


class _TappedPacer(Pacer):
    """The session's pacer, telling the recorder what it schedules and drops."""

    __slots__ = ("_recorder", "due")

    def __init__(self, lead: float, stats: SessionStats, recorder: CallRecorder) -> None:
        super().__init__(lead, FRAME_S, stats)
        self._recorder = recorder
        #: Per mark placed and not yet echoed: when the audio before it ends playing, on
        #: the recording's timeline (given with its ``mark_played`` event: one event per
        #: mark, not two).
        self.due: dict[str, float] = {}

    def push_audio(self, payload: bytes, now: float) -> float:
        start = Pacer.push_audio(self, payload, now)
        self._recorder.played(payload, start)
        return start

    def push_mark(self, name: str, now: float) -> None:
        super().push_mark(name, now)
        self.due[name] = round(self.timeline_end - self._recorder.t0, 3)

    def clear(self, now: float) -> int:
        self._recorder.cut(now)
        if len(self.due) > 64:  # marks a clear cut and the provider never echoes (Plivo)
            self.due.clear()
        return super().clear(now)


class RecordingSession(CallSession):
    """A call session whose audio and events are recorded (see the module docstring).

    Args are :class:`~mediastream.session.CallSession`'s, plus ``recordings`` (the
    server's), ``clock`` (the loop's) and ``agent`` (for the sidecar).
    """

    __slots__ = ("_left", "recorder")

    def __init__(self, call: CallInfo, host: SessionHost, *, recordings: Recordings,
                 clock: Callable[[], float], agent: str | None, **kwargs: Any) -> None:
        now: float = kwargs["now"]
        recorder = recordings.recorder(
            call, rate=kwargs.get("bot_sample_rate", 16000), t0=now, clock=clock,
            listen_only=kwargs.get("listen_only", False), agent=agent)
        #: The call's recorder (the server closes it with the call's ending).
        self.recorder = recorder
        self._left = recorder.left
        super().__init__(call, _Tap(host, recorder), **kwargs)
        self._pacer = _TappedPacer(self._pacer.lead, self.stats, recorder)

    def receive_event(self, event: Event, now: float) -> None:
        if type(event) is AudioReceived:  # once per frame: kept short
            ms = event.timestamp_ms
            if ms is not None:
                track = event.track
                left = self._left
                if track == "inbound" and (left.stream_ms is None or ms >= left.stream_ms):
                    left.stream_ms = ms + 20  # 20 ms frames: its end
                elif track != "inbound":
                    self.recorder.stream_time(track, ms + 20)
        else:
            self._note(event, now)
        CallSession.receive_event(self, event, now)

    def _note(self, event: Event, now: float) -> None:
        kind = type(event)
        recorder = self.recorder
        if kind is MarkPlayed:
            assert isinstance(event, MarkPlayed)
            pacer = self._pacer
            due = pacer.due.pop(event.name, None) if isinstance(pacer, _TappedPacer) else None
            recorder.event("mark_played", now, name=event.name, plays_at=due)
        elif kind is StreamStarted:
            recorder.event("start", now)
        elif kind is StreamStopped:
            assert isinstance(event, StreamStopped)
            recorder.event("stop", now, reason=event.reason, details=dict(event.details))
        elif kind is AudioCleared:
            recorder.event("cleared", now)

    def clear(self, now: float) -> list[Command]:
        commands = super().clear(now)
        if commands:
            self.recorder.event("clear", now)
        return commands


def open_session(recordings: Recordings | None, call: CallInfo, host: SessionHost, *,
                 clock: Callable[[], float], agent: str | None, **kwargs: Any) -> CallSession:
    """A :class:`RecordingSession` when ``recordings`` is set, else a plain session."""
    if recordings is None:
        return CallSession(call, host, **kwargs)
    return RecordingSession(call, host, recordings=recordings, clock=clock, agent=agent,
                            **kwargs)


class Ending(Protocol):
    """How the call ended (the server's ``Ending``): what the sidecar keeps of it."""

    @property
    def reason(self) -> str: ...
    @property
    def code(self) -> int | None: ...
    @property
    def outcome(self) -> Enum: ...


def close_recording(session: CallSession | None, now: float, ending: Ending) -> None:
    """The call ended: finish its recording, if it has one."""
    if isinstance(session, RecordingSession):
        session.recorder.close(now, reason=ending.reason, close_code=ending.code,
                               outcome=str(ending.outcome.value))
