"""Call recording: one stereo WAV and one JSON sidecar per call, written as the call goes.

``Config.record_dir`` (``mediastream serve --record DIR``, ``MEDIASTREAM_RECORD_DIR``)
turns it on; :class:`Recordings` is the server's (the directory, checked at start-up, and
the writer thread), :class:`CallRecorder` one call's. What the channels hold and how they
are aligned is :mod:`.timeline`'s; how the files survive a crash is :mod:`.disk`'s.

* ``DIR/<call_id>.wav`` -- 16-bit stereo at the session rate (``bot_sample_rate``). Left:
  the caller as the bot received it (decoded, reordered, resampled). Right: what the
  caller heard of the bot -- our wire frames where the pacer played them, cut where a
  ``clear`` stopped them; on a listen-only fork of both tracks, the other party.
* ``DIR/<call_id>.json`` -- the call's description (provider, agent, ids, tracks, custom
  parameters with secrets redacted, start time, rate) from the start, then at the end the
  end reason and close code and every event (start, DTMF, marks played with when their
  audio was due to end, clears, playout start/stop, stop) with ``t``, seconds on the WAV's
  timeline. During the call the events go to ``DIR/<call_id>.events.jsonl`` (a JSON array
  per block), merged into the JSON at the end.

Audio is buffered per call for about :data:`FLUSH_S` (plus the timeline's margin), then
handed to the writer thread as one block: memory per call is bounded, and the event loop
does one numpy interleave per call-second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from mediastream.config import Config
from mediastream.protocols.events import CallInfo, MediaFormat

from .disk import DiskWriter, WavSink, safe_name
from .timeline import MARGIN_S, ScheduledLane, StreamLane

__all__ = ["FLUSH_S", "CallRecorder", "Recordings", "check_record_dir", "open_recordings"]

logger = logging.getLogger("mediastream.recording")

#: Seconds of audio per block handed to the disk.
FLUSH_S: Final = 1.0
#: A stream lane this far behind the clock is no longer waited for.
MAX_WAIT_S: Final = 2.0
#: Custom parameter names whose values never reach the sidecar.
_SECRET = re.compile(r"token|secret|passw|auth|key|sig|credential|cookie", re.IGNORECASE)


def check_record_dir(directory: str) -> Path:
    """Create ``directory`` if needed and prove a file can be written there.

    Raises ``ValueError`` naming the directory and the reason (a start-up error).
    """
    path = Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ValueError(f"record directory {directory!r} is not writable: {reason}") from None
    return path


def open_recordings(config: Config) -> Recordings | None:
    """The server's recordings for ``config.record_dir`` (``None``: recording is off)."""
    if not config.record_dir:
        return None
    return Recordings(check_record_dir(config.record_dir))


def _redact(params: Mapping[str, str]) -> dict[str, str]:
    return {k: ("<redacted>" if _SECRET.search(k) else v) for k, v in params.items()}


def _fmt(fmt: MediaFormat) -> str:
    return f"{fmt.encoding}/{fmt.sample_rate}"


class Recordings:
    """A server's recording directory and its writer thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.writer = DiskWriter()

    def recorder(self, info: CallInfo, *, rate: int, t0: float, clock: Callable[[], float],
                 listen_only: bool, agent: str | None) -> CallRecorder:
        """Start recording one call whose timeline begins at loop time ``t0``."""
        return CallRecorder(self, info, rate=rate, t0=t0, clock=clock, listen_only=listen_only,
                            agent=agent)

    async def aclose(self, timeout: float = 30.0) -> None:
        """Let the writer finish every queued block (server shutdown)."""
        await asyncio.get_running_loop().run_in_executor(None, self.writer.close, timeout)


class CallRecorder:
    """One call's recording, fed by the session (see :mod:`mediastream.session.recorded`)."""

    __slots__ = ("_clock", "_closed", "_description", "_events", "_frame", "_left",
                 "_next_flush", "_rate", "_right", "_sink", "_t0", "_writer", "_written",
                 "active", "played")

    def __init__(self, recordings: Recordings, info: CallInfo, *, rate: int, t0: float,
                 clock: Callable[[], float], listen_only: bool, agent: str | None) -> None:
        self._writer = recordings.writer
        self._rate = rate
        self._t0 = t0
        self._clock = clock
        self._frame = rate // 50  # blocks end on 20 ms boundaries
        self._left = StreamLane(rate)
        self._right: StreamLane | ScheduledLane = (
            StreamLane(rate) if listen_only else ScheduledLane(info.outbound_format, rate, t0))
        #: A wire frame of ours, scheduled to start playing at ``play_at``: the right
        #: channel's ``add`` itself (one call per frame on the hot path).
        self.played: Callable[[bytes, float], None] = (
            self._right.add if isinstance(self._right, ScheduledLane) else self._ignore)
        self._written = 0
        self._next_flush = t0 + FLUSH_S + MARGIN_S
        self._events: list[dict[str, Any]] = []
        self._closed = False
        #: False once the recording stopped (a write failed, or it was closed).
        self.active = True
        self._sink = WavSink(recordings.directory, safe_name(info.call_id), info.call_id, rate)
        self._description: dict[str, Any] = {
            "provider": info.provider,
            "agent": agent or info.agent,
            "call_id": info.call_id,
            "stream_id": info.stream_id,
            "account_id": info.account_id,
            "from": info.from_number,
            "to": info.to_number,
            "tracks": list(info.tracks),
            "listen_only": listen_only,
            "custom_parameters": _redact(info.custom_parameters),
            "extra": _redact(info.extra),
            "inbound_format": _fmt(info.inbound_format),
            "outbound_format": _fmt(info.outbound_format),
            "sample_rate": rate,
            "channels": {"left": "caller (as the bot received it)",
                         "right": "other party (outbound track)" if listen_only
                         else "bot (as the caller heard it)"},
            "origin": "t = 0 is when the server received the provider's start message",
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "started_at_unix": round(time.time(), 3),
            "complete": False,
        }
        description = dict(self._description)
        self._submit("opening the file", lambda: self._sink.open(description))

    @property
    def t0(self) -> float:
        """Loop time of the recording's time zero."""
        return self._t0

    @property
    def stem(self) -> str:
        """The files' name without extension (final once the writer opened them)."""
        return self._sink.stem

    # ------------------------------------------------------------------ input

    def audio(self, pcm: bytes, track: str) -> None:
        """A frame delivered to the bot: the caller's (left), or on a listen-only fork
        the other party's (right)."""
        if not self.active:
            return
        now = self._clock()
        wall = int((now - self._t0) * self._rate)
        if track == "other":
            right = self._right
            if isinstance(right, StreamLane):
                right.add(pcm, wall)
        else:
            self._left.add(pcm, wall)
        if now >= self._next_flush:
            self.flush(now)

    def _ignore(self, payload: bytes, play_at: float) -> None:
        """:attr:`played` on a listen-only call, or once the recording stopped."""

    @property
    def left(self) -> StreamLane:
        """The caller's lane (the session tap sets its :attr:`StreamLane.stream_ms`)."""
        return self._left

    def stream_time(self, track: str, end_ms: int) -> None:
        """A media message of ``track`` ("inbound"...: the caller's) carries the
        provider's timestamp ``end_ms`` (its end, ms of stream time)."""
        lane = self._left if track.startswith("inbound") else self._right
        if isinstance(lane, StreamLane) and (lane.stream_ms is None or end_ms > lane.stream_ms):
            lane.stream_ms = end_ms

    def cut(self, now: float) -> None:
        """Nothing of ours scheduled from ``now`` on reaches the caller (clear, end)."""
        right = self._right
        if isinstance(right, ScheduledLane):
            right.cut(now)

    def event(self, kind: str, now: float | None = None, **fields: Any) -> None:
        """An event on the recording's timeline (``now``: the loop clock by default)."""
        if not self.active:
            return
        at = self._clock() if now is None else now
        self._events.append({"t": round(at - self._t0, 3), "event": kind, **fields})

    # ------------------------------------------------------------------ output

    def flush(self, now: float, *, final: bool = False) -> None:
        """Hand every block that can no longer change to the disk thread."""
        self._next_flush = now + FLUSH_S
        if not self.active:
            return
        if self._sink.failed:
            self._stop()
            return
        frame = self._frame
        if final:
            ends = [self._left.end, int((now - self._t0) * self._rate)]
            if isinstance(self._right, StreamLane):
                ends.append(self._right.end)
            horizon = -(-max(ends) // frame) * frame
        else:
            wall = int((now - self._t0) * self._rate)
            # Up to MARGIN_S behind the clock, and not past a stream lane's end (audio
            # late in a burst still belongs there) unless it is MAX_WAIT_S behind; a
            # stream running ahead of the clock is written as it comes.
            ends = [self._left.end]
            if isinstance(self._right, StreamLane):
                ends.append(self._right.end)
            horizon = max(min(wall - int(MARGIN_S * self._rate), *ends),
                          wall - int(MAX_WAIT_S * self._rate),
                          self._left.end - self._rate) // frame * frame
        start = self._written
        stereo = b""
        if horizon > start:
            left = self._left.take(start, horizon)
            right = self._right.take(start, horizon)
            n = horizon - start
            if len(right) != n:  # defensive: the resampler's count is exact by design
                right = np.resize(right, n) if len(right) else np.zeros(n, dtype=np.int16)
            out = np.empty(2 * n, dtype="<i2")
            out[0::2] = left
            out[1::2] = right
            stereo = out.tobytes()
            self._written = horizon
        events, self._events = self._events, []
        if stereo or events:
            sink = self._sink
            if not self._submit("writing audio", lambda: sink.append(stereo, events),
                                len(stereo) + 1):
                logger.error("[call %s] recording stopped: the disk is not keeping up "
                             "(%d MB waiting)", self._sink.call_id,
                             self._writer.backlog // 1_000_000)
                self._stop()

    def close(self, now: float, *, reason: str, close_code: int | None, outcome: str) -> None:
        """The call ended: the last audio, the final sidecar."""
        if self._closed:
            return
        self._closed = True
        self.cut(now)
        self.event("end", now, reason=reason, close_code=close_code, outcome=outcome)
        self.flush(now, final=True)
        if not self.active:
            return
        description = dict(self._description)
        description.update(
            end_reason=reason, close_code=close_code, outcome=outcome,
            duration_s=round(self._written / self._rate, 3))
        sink = self._sink
        self._submit("finishing the sidecar", lambda: sink.close(description))
        self.active = False

    def _submit(self, what: str, op: Callable[[], None], size: int = 0) -> bool:
        return self._writer.submit(self._sink, what, op, size)

    def _stop(self) -> None:
        self.active = False
        self.played = self._ignore
        self._events = []
        self._left = StreamLane(self._rate)  # drop what is buffered
        self._right = StreamLane(self._rate)
