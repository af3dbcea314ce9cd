"""The playout ledger: what the caller has actually heard of the bot.

Bytes leaving the process say nothing about what the caller heard: the provider queues
them, and a clear throws the queue away. The session therefore places a mark (Twilio,
Telnyx) or checkpoint (Plivo) every ``mark_interval`` of outbound audio and at the end of
each utterance; the provider echoes it once the audio before it has played
(protocols.md §1.2 ``mark``, §2.2, §3.2 ``playedStream``). The ledger maps each echo back to a
position on the outbound timeline (seconds of audio enqueued since the call started) and
derives:

* ``PlayoutStarted`` / ``PlayoutStopped(played_s, cut)`` per utterance, in that order and
  never overlapping. Started comes from the clock (the first frame's scheduled play
  time) or from an earlier echo; Stopped from the utterance's final mark being played,
  or from a clear (``cut=True``, ``played_s`` = the part heard).
* ``played_s``: total seconds of bot audio the caller heard.
* ``idle``: nothing is awaiting confirmation (the "wait until played" condition).

Rules of this file:

* Echoes arrive in order, so an echo confirms every earlier mark too (Plivo never acks
  its very first checkpoint, protocols.md §5.2, bolna PR #736).
* Twilio and Telnyx echo every pending mark at once when they clear: a clear resolves
  all pending marks as *cut* first, and later echoes of those names are ignored (they
  only serve to time the clear).
* Clock fallback: a mark that is not echoed by ``due + grace`` counts as played, where
  ``due`` is when the pacer's model says the audio before it ends. The grace covers the
  network round trip and the provider's own buffering: echoes normally come back within a
  few hundred ms of ``due``. It exists for providers that do not echo at all, and keeps
  ``idle`` from waiting forever (protocols.md §5.2 recommends a timeout for hang-up).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Final

from mediastream.call import CallEvent, PlayoutStarted, PlayoutStopped
from mediastream.session.stats import SessionStats

__all__ = ["DEFAULT_MARK_GRACE", "PlayoutLedger"]

logger = logging.getLogger("mediastream.session")

#: Seconds after a mark's scheduled play time before the clock counts it as played.
DEFAULT_MARK_GRACE: Final = 1.0
#: Names of cut marks remembered so their late echoes are recognised (bounded).
_CUT_MEMORY: Final = 256


@dataclass(slots=True)
class _Mark:
    name: str
    #: Timeline position (s) the mark follows: all audio before it, once played.
    pos: float
    #: When the audio before it should have finished playing (pacer's model).
    due: float


@dataclass(slots=True)
class _Utterance:
    start_pos: float
    #: Scheduled play time of the utterance's first frame.
    start_time: float
    end_pos: float | None = None
    started: bool = False


class PlayoutLedger:
    """Maps mark echoes to positions on the outbound timeline; emits playout events."""

    __slots__ = (
        "_call_id",
        "_clear_time",
        "_counter",
        "_cut",
        "_grace",
        "_marks",
        "_names",
        "_played_pos",
        "_played_s",
        "_stats",
        "_utts",
    )

    def __init__(self, call_id: str, stats: SessionStats, grace: float = DEFAULT_MARK_GRACE):
        if grace < 0:
            raise ValueError(f"mark grace must be >= 0, got {grace}")
        self._call_id = call_id
        self._stats = stats
        self._grace = grace
        self._marks: deque[_Mark] = deque()
        self._names: dict[str, _Mark] = {}
        self._cut: dict[str, None] = {}
        self._utts: deque[_Utterance] = deque()
        self._played_pos = 0.0
        self._played_s = 0.0
        self._counter = 0
        self._clear_time: float | None = None

    # ------------------------------------------------------------------ state

    @property
    def played_s(self) -> float:
        """Seconds of bot audio the caller has heard (echoes, clock fallback, cut estimates)."""
        return self._played_s

    @property
    def played_pos(self) -> float:
        """Confirmed timeline position: everything before it was played or cut."""
        return self._played_pos

    @property
    def utterance_open(self) -> bool:
        """True while audio is being added to an utterance that has not ended."""
        return bool(self._utts) and self._utts[-1].end_pos is None

    @property
    def idle(self) -> bool:
        """True when no utterance or mark awaits confirmation."""
        return not self._utts and not self._marks

    @property
    def speaking(self) -> bool:
        """True between a PlayoutStarted and its PlayoutStopped."""
        return bool(self._utts) and self._utts[0].started

    def deadline(self) -> float | None:
        """Next time :meth:`tick` has something to do by the clock alone."""
        best: float | None = None
        if self._marks:
            best = self._marks[0].due + self._grace
        if self._utts:
            head = self._utts[0]
            if not head.started and (best is None or head.start_time < best):
                best = head.start_time
        return best

    # ------------------------------------------------------------------ building

    def new_name(self) -> str:
        """A short unique mark name (``m1``, ``m2``...) for this call."""
        self._counter += 1
        return f"m{self._counter}"

    def open_utterance(self, start_pos: float, start_time: float) -> None:
        """Audio starts a new utterance at ``start_pos``, scheduled to play at ``start_time``."""
        self._utts.append(_Utterance(start_pos, start_time))

    def add_mark(self, pos: float, due: float, *, final: bool) -> str:
        """Register a mark following timeline position ``pos``; returns its name."""
        name = self.new_name()
        mark = _Mark(name, pos, due)
        self._marks.append(mark)
        self._names[name] = mark
        if final:
            self._end_open_utterance(pos)
        return name

    def end_utterance(self, pos: float, now: float) -> list[CallEvent]:
        """Close the open utterance at ``pos`` when its last mark is already placed."""
        if not self.utterance_open:
            return []
        self._end_open_utterance(pos)
        out: list[CallEvent] = []
        self._advance(out)
        return out

    def _end_open_utterance(self, pos: float) -> None:
        if self._utts and self._utts[-1].end_pos is None:
            self._utts[-1].end_pos = pos

    # ------------------------------------------------------------------ resolution

    def on_echo(self, name: str, now: float) -> list[CallEvent]:
        """A mark came back: advance the played position (unless it was cut)."""
        mark = self._names.get(name)
        if mark is None:
            if name in self._cut:
                # Twilio/Telnyx return pending marks at once on clear (protocols.md §5.2):
                # not played, but the first one back times the provider's flush.
                del self._cut[name]
                self._clear_confirmed(now)
            else:
                logger.debug("call %s: echo of unknown mark %r ignored", self._call_id, name)
            return []
        out: list[CallEvent] = []
        self._resolve_through(mark, out)
        return out

    def on_cleared(self, now: float) -> None:
        """Plivo ``clearedAudio``: the provider confirms the flush."""
        self._clear_confirmed(now)

    def tick(self, now: float) -> list[CallEvent]:
        """Clock-driven work: PlayoutStarted when due, marks overdue counted as played."""
        out: list[CallEvent] = []
        marks = self._marks
        while marks and marks[0].due + self._grace <= now:
            mark = marks[0]
            logger.debug(
                "call %s: mark %s not echoed %.2f s after its play time; counting it as played",
                self._call_id, mark.name, self._grace,
            )
            self._stats.marks_timed_out += 1
            self._resolve_through(mark, out)
        if self._utts:
            head = self._utts[0]
            if not head.started and head.start_time <= now:
                head.started = True
                out.append(PlayoutStarted())
        return out

    def cut(self, cut_pos: float, timeline_pos: float, now: float) -> list[CallEvent]:
        """A clear: pending marks are cut; the caller heard up to ``cut_pos``.

        ``cut_pos`` is the pacer's estimate of the position played by ``now``; it is
        clamped to what was confirmed. Everything up to ``timeline_pos`` (all audio
        enqueued so far) is resolved: played up to ``cut_pos``, discarded after it.
        """
        self._stats.clears += 1
        self._clear_time = now
        cut_pos = min(max(cut_pos, self._played_pos), timeline_pos)
        for mark in self._marks:
            self._names.pop(mark.name, None)
            self._cut[mark.name] = None
            self._stats.marks_cut += 1
        self._marks.clear()
        while len(self._cut) > _CUT_MEMORY:
            del self._cut[next(iter(self._cut))]
        out: list[CallEvent] = []
        for utt in self._utts:
            if utt.start_pos >= cut_pos:
                # Never reached the caller; close its pair if it was (wrongly) opened.
                if utt.started:
                    out.append(PlayoutStopped(0.0, cut=True))
                continue
            if not utt.started:
                out.append(PlayoutStarted())
            if utt.end_pos is not None and utt.end_pos <= cut_pos:
                out.append(PlayoutStopped(utt.end_pos - utt.start_pos, cut=False))
            else:
                out.append(PlayoutStopped(cut_pos - utt.start_pos, cut=True))
        self._utts.clear()
        self._played_s += max(0.0, cut_pos - self._played_pos)
        self._played_pos = timeline_pos
        return out

    # ------------------------------------------------------------------ internals

    def _resolve_through(self, mark: _Mark, out: list[CallEvent]) -> None:
        marks = self._marks
        while marks:
            head = marks.popleft()
            del self._names[head.name]
            self._stats.marks_played += 1
            if head is mark:
                break
        if mark.pos > self._played_pos:
            self._played_s += mark.pos - self._played_pos
            self._played_pos = mark.pos
        self._advance(out)

    def _advance(self, out: list[CallEvent]) -> None:
        """Emit the playout events the confirmed position now implies, in order."""
        played = self._played_pos
        utts = self._utts
        while utts:
            utt = utts[0]
            if not utt.started and played > utt.start_pos:
                utt.started = True
                out.append(PlayoutStarted())
            if utt.end_pos is not None and played >= utt.end_pos:
                if not utt.started:
                    out.append(PlayoutStarted())
                out.append(PlayoutStopped(utt.end_pos - utt.start_pos, cut=False))
                utts.popleft()
                continue
            break

    def _clear_confirmed(self, now: float) -> None:
        if self._clear_time is not None:
            self._stats.clear_to_silence_s = now - self._clear_time
            self._clear_time = None
