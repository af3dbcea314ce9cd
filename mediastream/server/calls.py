"""The calls book: what ``GET /calls`` and ``/dashboard`` list about this process's calls.

A :class:`CallBook` holds one :class:`CallRecord` per live call (opened by the connection
once the call's session exists, closed when the call is accounted for) and a ring of
the calls that ended in the last :attr:`CallBook.keep_s` seconds. Nothing here runs per
frame except :meth:`CallRecord.observe` (one message in 8, where the server already times
it for ``/metrics``): a row's figures are read off the call's session counters, its
:class:`~mediastream.server.live.LiveCall` and that timing ring only when someone asks.

``GET /calls`` does not read the book itself but a :class:`CallDirectory`: the default,
:class:`LocalDirectory`, lists this process. A deployment with several workers or
instances plugs in one that merges theirs (same JSON shape, docs/design.md "GET /calls");
the route stays a thin wrapper over :meth:`CallDirectory.listing`.

Levels are dBFS of the most recent 20 ms the bot was handed (inbound) and of the bot
audio queued most recently (outbound, :data:`SILENCE_DBFS` once nothing is queued or
playing): a meter refreshed at each poll, not an average.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

from mediastream.call import InboundAudio
from mediastream.protocols.events import CallInfo

if TYPE_CHECKING:
    from mediastream.session import CallSession

    from .ending import Ending
    from .live import LiveCall

__all__ = ["SILENCE_DBFS", "CallBook", "CallDirectory", "CallRecord", "LocalDirectory"]

#: The level reported for silence (and for no audio at all).
SILENCE_DBFS: Final = -90.0
#: Processing-time samples kept per call for its p50/p99 (1 message in 8 is timed).
TIMES_KEPT: Final = 1024
#: Ended calls listed for this long (seconds) ...
KEEP_ENDED_S: Final = 300.0
#: ... and at most this many of them.
MAX_ENDED: Final = 200

Row = dict[str, Any]


def level_dbfs(pcm: bytes | None) -> float:
    """RMS level of int16 LE PCM in dBFS, floored at :data:`SILENCE_DBFS`."""
    if not pcm or len(pcm) < 2:
        return SILENCE_DBFS
    # Plain Python: the server layer does I/O, numpy is the session's (a 20 ms frame,
    # only when a row is built).
    samples = array("h", pcm[: len(pcm) // 2 * 2])
    if sys.byteorder == "big":
        samples.byteswap()
    rms = math.sqrt(math.fsum(x * x for x in samples) / len(samples))
    if rms <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, round(20.0 * math.log10(rms / 32768.0), 1))


class CallRecord:
    """One live call in the book: where its figures are read from when a row is built."""

    __slots__ = (
        "_level_in",
        "_observe",
        "agent",
        "call",
        "info",
        "session",
        "started_at",
        "started_mono",
        "times",
    )

    def __init__(
        self,
        info: CallInfo,
        agent: str | None,
        session: CallSession,
        call: LiveCall,
        observe: Callable[[float], None],
    ) -> None:
        self.info = info
        self.agent = agent
        self.session = session
        self.call = call
        self._observe = observe
        self._level_in = SILENCE_DBFS
        #: Wall-clock start (Unix seconds) for people; the monotonic one for durations.
        self.started_at = time.time()
        self.started_mono = time.monotonic()
        #: The last sampled per-message processing times, seconds.
        self.times: deque[float] = deque(maxlen=TIMES_KEPT)

    def observe(self, seconds: float) -> None:
        """A sampled message's processing time: kept for this call's percentiles and
        passed on to the server-wide histogram (the reader's ``observe``)."""
        self.times.append(seconds)
        self._observe(seconds)

    def row(self, *, now_mono: float | None = None) -> Row:
        """The call's JSON row as of now (see docs/design.md for the fields)."""
        info, session, call = self.info, self.session, self.call
        stats = session.stats
        now = time.monotonic() if now_mono is None else now_mono
        p50, p99 = _percentiles_us(self.times)
        queued_s = 0.0 if session.ended else session.queued_s
        playing = queued_s > 0.0 or call.bot_speaking
        return {
            "call_id": info.call_id,
            "stream_id": info.stream_id,
            "provider": info.provider,
            "agent": self.agent or info.agent,
            "direction": _direction(info),
            "from": info.from_number,
            "to": info.to_number,
            "state": "live",
            "started_at": round(self.started_at, 3),
            "duration_s": round(now - self.started_mono, 1),
            "inbound": f"{info.inbound_format.encoding}/{info.inbound_format.sample_rate}",
            "outbound": f"{info.outbound_format.encoding}/{info.outbound_format.sample_rate}",
            "level_in_dbfs": self._inbound_level(call.heard),
            "level_out_dbfs": level_dbfs(call.spoken) if playing else SILENCE_DBFS,
            "bot_speaking": call.bot_speaking,
            "playout_queue_ms": round(queued_s * 1000.0),
            "frames_in": stats.frames_in,
            "frames_out": stats.frames_out,
            "frames_late": stats.frames_late_dropped,
            "frames_filled": stats.frames_filled,
            "frames_reordered": stats.frames_reordered,
            "underruns": stats.underruns,
            "clears": stats.clears,
            "marks_sent": stats.marks_sent,
            "marks_played": stats.marks_played,
            "marks_timed_out": stats.marks_timed_out,
            "processing_p50_us": p50,
            "processing_p99_us": p99,
            "outcome": None,
            "close_code": None,
            "reason": None,
            "ended_at": None,
        }

    def _inbound_level(self, heard: Iterable[object] | None) -> float:
        """The level of the newest inbound frame in the bot's last batch; the previous
        reading when that batch held none (a playout event, a DTMF key)."""
        if isinstance(heard, (list, tuple)):
            for event in reversed(heard):
                if type(event) is InboundAudio:
                    self._level_in = level_dbfs(event.pcm)
                    break
        return self._level_in


def _direction(info: CallInfo) -> str | None:
    """The call's ``direction`` custom parameter (``inbound``/``outbound``), else ``None``:
    the providers' start messages do not say (the softphone sends ``inbound``)."""
    value = info.custom_parameters.get("direction")
    return value if value in ("inbound", "outbound") else None


def _percentiles_us(times: Iterable[float]) -> tuple[float | None, float | None]:
    ordered = sorted(times)
    if not ordered:
        return None, None
    last = len(ordered) - 1

    def pick(q: float) -> float:
        return round(ordered[min(last, math.ceil(q * len(ordered)) - 1)] * 1e6, 1)

    return pick(0.50), pick(0.99)


class CallBook:
    """This process's live calls and recently ended ones (see the module docstring)."""

    def __init__(self, *, keep_s: float = KEEP_ENDED_S, max_ended: int = MAX_ENDED) -> None:
        self.keep_s = keep_s
        self._live: dict[int, CallRecord] = {}
        #: (monotonic end time, frozen row), oldest first.
        self._ended: deque[tuple[float, Row]] = deque(maxlen=max_ended)

    def __len__(self) -> int:
        return len(self._live)

    def open(
        self,
        info: CallInfo,
        agent: str | None,
        session: CallSession,
        call: LiveCall,
        observe: Callable[[float], None],
    ) -> CallRecord:
        """A call went live; its record's ``observe`` is the reader's timing hook."""
        record = CallRecord(info, agent, session, call, observe)
        self._live[id(record)] = record
        return record

    def close(self, record: CallRecord | None, ending: Ending) -> None:
        """The call ended: its last row, with the outcome, moves to the ended ring
        (``None``: the call never went live, nothing to do)."""
        if record is None or self._live.pop(id(record), None) is None:
            return
        now = time.monotonic()
        row = record.row(now_mono=now)
        row.update(
            state="ended",
            outcome=ending.outcome.value,
            close_code=ending.code,
            reason=ending.reason,
            ended_at=round(time.time(), 3),
            level_in_dbfs=SILENCE_DBFS,
            level_out_dbfs=SILENCE_DBFS,
            bot_speaking=False,
            playout_queue_ms=0,
        )
        self._ended.append((now, row))

    def rows(self) -> tuple[list[Row], list[Row]]:
        """(live rows, oldest first; ended rows of the last ``keep_s``, newest first)."""
        now = time.monotonic()
        ended = self._ended
        while ended and now - ended[0][0] > self.keep_s:
            ended.popleft()
        live = sorted(self._live.values(), key=lambda r: r.started_mono)
        return [r.row(now_mono=now) for r in live], [row for _, row in reversed(ended)]

    def row_of(self, call: LiveCall) -> Row | None:
        """The live row of ``call`` (``None`` when it is not in the book): what a new
        call is announced with to the other workers or instances (server/cluster.py)."""
        for record in self._live.values():
            if record.call is call:
                return record.row()
        return None


class CallDirectory(Protocol):
    """Where ``GET /calls`` gets its listing: this process, or a whole deployment."""

    async def listing(self) -> Row:
        """``{"calls": [...], "ended": [...], "instances": [...], "at": unix}``
        (docs/design.md "GET /calls")."""


class LocalDirectory:
    """The default directory: this process's :class:`CallBook` only."""

    def __init__(self, book: CallBook, *, instance: str | None = None) -> None:
        self.book = book
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}"

    async def listing(self) -> Row:
        live, ended = self.book.rows()
        for row in (*live, *ended):
            row["instance"] = self.instance
        return {
            "at": round(time.time(), 3),
            "instances": [self.instance],
            "calls": live,
            "ended": ended,
        }
