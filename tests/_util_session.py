"""Helpers for the call-session tests: tones, spectra, and a local provider playout model.

:class:`FakeProvider` stands in for the provider's cloud, which cannot run here. It does
what protocols.md documents: it queues the audio it receives and plays it in real time
(§5.1); it echoes a mark once the audio before it has played, at once if nothing is
queued (§1.2, §2.2); on ``clear`` it drops unplayed audio and returns every pending mark
at once (Twilio/Telnyx, §5.2); Plivo echoes a checkpoint only for audio actually played,
never after ``clearAudio`` (it answers ``clearedAudio``), and can be told to skip the very
first checkpoint as reported in the wild (§5.2). Messages travel with a fixed one-way
latency. It records exactly what the caller heard, so the session's ledger can be checked
against the truth.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mediastream.call import CallEvent
from mediastream.protocols.events import (
    AudioCleared,
    CallInfo,
    ClearAudio,
    Command,
    Event,
    MarkPlayed,
    MediaFormat,
    ProviderName,
    SendAudio,
    SendMark,
)
from mediastream.session import CallSession, ResampleBatcher

FRAME_S = 0.02
PCMU_8K = MediaFormat("pcmu", 8000)


def call_info(
    provider: ProviderName = "twilio",
    inbound: MediaFormat = PCMU_8K,
    outbound: MediaFormat | None = None,
) -> CallInfo:
    return CallInfo(
        provider=provider,
        call_id=f"{provider}-call-1",
        stream_id="stream-1",
        inbound_format=inbound,
        outbound_format=inbound if outbound is None else outbound,
    )


def tone(freq: float, seconds: float, rate: int, amplitude: float = 8000.0,
         phase: float = 0.0) -> npt.NDArray[np.int16]:
    n = round(seconds * rate)
    t = np.arange(n) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(np.int16)


def dominant_frequency(x: npt.NDArray[np.int16], rate: int) -> float:
    """Frequency of the strongest spectral peak (Hann window, parabolic interpolation)."""
    y = x.astype(np.float64) * np.hanning(len(x))
    mag = np.abs(np.fft.rfft(y))
    k = int(np.argmax(mag[1:-1])) + 1
    a, b, c = np.log(mag[k - 1] + 1e-12), np.log(mag[k] + 1e-12), np.log(mag[k + 1] + 1e-12)
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return float((k + offset) * rate / len(x))


def rms(x: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def tone_purity_db(x: npt.NDArray[np.int16], rate: int, freq: float) -> float:
    """Energy within ±50 Hz of ``freq`` over everything else, in dB (noise -> ~0 dB)."""
    y = x.astype(np.float64) * np.hanning(len(x))
    power = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    near = np.abs(freqs - freq) <= 50
    return float(10 * np.log10(power[near].sum() / max(power[~near].sum(), 1e-9)))


# ---------------------------------------------------------------------------- session


class Recorder:
    """A :class:`~mediastream.session.SessionHost` that keeps what the session hands it."""

    def __init__(self) -> None:
        self.events: list[CallEvent] = []
        self.wakes = 0
        self.resumes = 0
        self.failures: list[Exception] = []

    def deliver(self, events: list[CallEvent]) -> None:
        assert events, "the session delivered an empty list"
        self.events += events

    def wake(self) -> None:
        self.wakes += 1

    def resume(self) -> None:
        self.resumes += 1

    def failed(self, exc: Exception) -> None:
        self.failures.append(exc)

    def take(self) -> list[CallEvent]:
        events, self.events = self.events, []
        return events


#: How RecordedSession converts by default: "at_once", or "batched" (every step waits
#: for the end of the "loop turn", which each call below ends, as a server's does).
#: The ``batching`` fixture (conftest.py) sets it.
MODES = ("at_once", "batched")
mode = ["at_once"]


class RecordedSession:
    """A :class:`CallSession` with a :class:`Recorder` as its host, whose inbound calls
    return the bot events they produced (what these tests read best).

    In "batched" mode (the :func:`batching` fixture) each resampler step waits for the
    end of a simulated loop turn, and every call below ends that turn before returning:
    the results must be exactly those of "at_once"."""

    def __init__(self, call: CallInfo, **options: Any) -> None:
        self.host = Recorder()
        self.turns: list[Callable[[], None]] = []
        if mode[0] == "batched" and "batcher" not in options:
            options["batcher"] = ResampleBatcher(self.turns.append)
        self.session = CallSession(call, self.host, **options)

    def receive_event(self, event: Event, now: float) -> list[CallEvent]:
        self.session.receive_event(event, now)
        end_turn(self.turns)
        return self.host.take()

    def poll(self, now: float) -> tuple[list[Command], list[CallEvent]]:
        commands = self.session.poll(now)
        end_turn(self.turns)
        return commands, self.host.take()

    def end(self, reason: str, now: float) -> list[CallEvent]:
        self.session.end(reason, now)
        end_turn(self.turns)
        return self.host.take()

    def send_audio(self, pcm: bytes, sample_rate: int, now: float) -> None:
        self.session.send_audio(pcm, sample_rate, now)
        end_turn(self.turns)

    def end_utterance(self, now: float) -> None:
        self.session.end_utterance(now)
        end_turn(self.turns)

    def clear(self, now: float) -> list[Command]:
        commands = self.session.clear(now)
        end_turn(self.turns)
        return commands

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def deferred_batcher() -> tuple[ResampleBatcher, list[Callable[[], None]]]:
    """A batcher whose steps wait until the test runs the callbacks it was handed (what
    ``loop.call_soon`` does in a server: the end of the loop turn)."""
    turns: list[Callable[[], None]] = []
    return ResampleBatcher(turns.append), turns


def end_turn(turns: list[Callable[[], None]]) -> None:
    """Run what waits for the end of the loop turn."""
    while turns:
        turns.pop(0)()


# ---------------------------------------------------------------------------- provider


@dataclass
class _Played:
    start: float
    end: float
    payload: bytes


@dataclass
class FakeProvider:
    """The provider's playout buffer, modelled from its documentation (see module doc)."""

    provider: ProviderName = "twilio"
    latency: float = 0.03
    echo_marks: bool = True
    skip_first_checkpoint: bool = False
    frames: list[_Played] = field(default_factory=list)
    play_end: float = float("-inf")
    _pending_marks: list[tuple[float, str]] = field(default_factory=list)
    _inbox: list[tuple[float, int, Command]] = field(default_factory=list)
    _outbox: list[tuple[float, int, Event]] = field(default_factory=list)
    _seq: int = 0
    _checkpoints: int = 0
    received: list[tuple[float, Command]] = field(default_factory=list)

    def deliver(self, commands: list[Command], now: float) -> None:
        """Commands the session sent at ``now``; they arrive ``latency`` later."""
        for cmd in commands:
            self.received.append((now, cmd))
            self._seq += 1
            heapq.heappush(self._inbox, (now + self.latency, self._seq, cmd))

    def next_time(self) -> float | None:
        times = []
        if self._inbox:
            times.append(self._inbox[0][0])
        if self._outbox:
            times.append(self._outbox[0][0])
        if self._pending_marks:
            times.append(min(t for t, _ in self._pending_marks) + self.latency)
        return min(times) if times else None

    def advance(self, now: float) -> list[Event]:
        """Process arrivals up to ``now``; return the events that reach the session by then."""
        while self._inbox and self._inbox[0][0] <= now:
            at, _, cmd = heapq.heappop(self._inbox)
            self._settle_marks(at)
            self._arrive(cmd, at)
        self._settle_marks(now, lag=self.latency)  # echoes that reach the session by now
        out: list[Event] = []
        while self._outbox and self._outbox[0][0] <= now:
            out.append(heapq.heappop(self._outbox)[2])
        return out

    def _send(self, event: Event, at: float) -> None:
        self._seq += 1
        heapq.heappush(self._outbox, (at + self.latency, self._seq, event))

    def _settle_marks(self, until: float, lag: float = 0.0) -> None:
        keep = []
        for due, name in self._pending_marks:
            if due + lag <= until:
                self._send(MarkPlayed(name), due)
            else:
                keep.append((due, name))
        self._pending_marks = keep

    def _arrive(self, cmd: Command, at: float) -> None:
        if isinstance(cmd, SendAudio):
            start = max(at, self.play_end)
            self.play_end = start + FRAME_S
            self.frames.append(_Played(start, self.play_end, cmd.payload))
        elif isinstance(cmd, SendMark):
            if not self.echo_marks:
                return
            if self.provider == "plivo":
                self._checkpoints += 1
                if self.skip_first_checkpoint and self._checkpoints == 1:
                    return
            self._pending_marks.append((max(at, self.play_end), cmd.name))
        elif isinstance(cmd, ClearAudio):
            # Unplayed audio goes; the frame playing now is cut short.
            kept = []
            for f in self.frames:
                if f.start >= at:
                    continue
                if f.end > at:
                    f.end = at
                kept.append(f)
            self.frames = kept
            self.play_end = min(self.play_end, at)
            if self.provider == "plivo":
                self._pending_marks = []  # checkpoints only for audio actually played
                self._send(AudioCleared(), at)
            else:
                for _, name in self._pending_marks:  # returned at once on clear
                    self._send(MarkPlayed(name), at)
                self._pending_marks = []

    def heard_s(self, until: float) -> float:
        """Seconds of audio the caller heard by ``until``."""
        return sum(max(0.0, min(f.end, until) - f.start) for f in self.frames)

    def audio_sent(self) -> bytes:
        return b"".join(c.payload for _, c in self.received if isinstance(c, SendAudio))


# ------------------------------------------------------------------------------ driver

BotAction = Callable[[RecordedSession, float], None]


@dataclass
class Trace:
    events: list[tuple[float, CallEvent]] = field(default_factory=list)
    commands: list[tuple[float, Command]] = field(default_factory=list)
    polls: list[float] = field(default_factory=list)

    def of(self, kind: type) -> list[tuple[float, CallEvent]]:
        return [(t, e) for t, e in self.events if isinstance(e, kind)]


def drive(
    session: RecordedSession,
    fake: FakeProvider,
    actions: list[tuple[float, BotAction]],
    until: float,
    trace: Trace | None = None,
    start: float = 0.0,
    observe: Callable[[float], None] | None = None,
) -> Trace:
    """Run the session like the server does: wake at ``next_deadline()``, provider events
    and bot actions, whichever comes first; never sleeps (the clock is simulated)."""
    trace = trace or Trace()
    pending = sorted(actions, key=lambda a: a[0])
    now = start
    stuck = 0
    while True:
        before = now
        candidates = [until]
        deadline = session.next_deadline()
        if deadline is not None:
            candidates.append(max(deadline, now))
        nxt = fake.next_time()
        if nxt is not None:
            candidates.append(max(nxt, now))
        if pending:
            candidates.append(max(pending[0][0], now))
        now = min(candidates)
        stuck = stuck + 1 if now == before else 0
        if stuck > 1000:
            raise AssertionError(f"next_deadline() stays at {now} after poll(): no progress")
        for event in fake.advance(now):
            for e in session.receive_event(event, now):
                trace.events.append((now, e))
        while pending and pending[0][0] <= now:
            _, action = pending.pop(0)
            action(session, now)
            trace.events += [(now, e) for e in session.host.take()]
        commands, events = session.poll(now)
        trace.polls.append(now)
        trace.commands += [(now, c) for c in commands]
        trace.events += [(now, e) for e in events]
        fake.deliver(commands, now)
        if observe is not None:
            observe(now)
        if now >= until:
            return trace


def send(pcm: npt.NDArray[np.int16] | bytes, rate: int) -> BotAction:
    data = pcm if isinstance(pcm, bytes) else pcm.tobytes()

    def action(session: RecordedSession, now: float) -> None:
        session.send_audio(data, rate, now)

    return action


def end_utterance(session: RecordedSession, now: float) -> None:
    session.end_utterance(now)


def clear(fake: FakeProvider) -> BotAction:
    def action(session: RecordedSession, now: float) -> None:
        fake.deliver(session.clear(now), now)

    return action
