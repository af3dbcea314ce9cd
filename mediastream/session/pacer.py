"""Outbound pacing: release 20 ms wire frames a bounded lead ahead of their play time.

The providers queue whatever they receive and play it in real time (protocols.md §5.1),
so sending a whole utterance at once "works" but leaves barge-in entirely to ``clear``
and makes the caller's position unknowable. The pacer keeps a model of the provider's
playout timeline instead: a frame plays from ``max(enqueue time, previous frame's end)``
for 20 ms, and is released when ``play_start - lead <= now``. At most ``lead`` (plus
the frame being released) is ever buffered at the provider, so a clear silences the
caller within about ``lead`` even if the provider were slow to honour it, while the
provider never runs dry as long as the bot keeps up.

Marks ride in the same FIFO right behind the frame they follow, so a mark is released in
the same :meth:`Pacer.release` as that frame and never overtakes audio.
"""

from __future__ import annotations

from collections import deque

from mediastream.protocols.events import Command, SendAudio, SendMark
from mediastream.session.stats import SessionStats

__all__ = ["Pacer"]


class Pacer:
    """A FIFO of wire frames and marks, each released at its play time minus ``lead``.

    Items are ``(release_at, play_end, payload)``: ``bytes`` for audio, ``str`` for a
    mark name (whose ``play_end`` is unused).
    Times are the caller's monotonic clock in seconds; nothing here reads a clock.
    """

    __slots__ = (
        "_queue",
        "_queued_frames",
        "_released_end",
        "_stats",
        "frame_s",
        "frames_pushed",
        "lead",
        "timeline_end",
    )

    def __init__(self, lead: float, frame_s: float, stats: SessionStats) -> None:
        if lead < 0:
            raise ValueError(f"playout lead must be >= 0, got {lead}")
        self.lead = lead
        self.frame_s = frame_s
        self._stats = stats
        self._queue: deque[tuple[float, float, bytes | str]] = deque()
        self._queued_frames = 0
        #: Wall time at which the last enqueued frame ends playing (the model's timeline).
        self.timeline_end = float("-inf")
        #: Wall time at which the last *released* frame ends playing.
        self._released_end = float("-inf")
        #: Frames ever enqueued: the timeline position, in frames, of the queue's tail.
        self.frames_pushed = 0

    # ------------------------------------------------------------------ state

    @property
    def queued_frames(self) -> int:
        """Frames waiting for their release time."""
        return self._queued_frames

    @property
    def empty(self) -> bool:
        return not self._queue

    @property
    def next_release(self) -> float | None:
        """When the head of the queue is due (``None`` when the queue is empty)."""
        return self._queue[0][0] if self._queue else None

    @property
    def released_pos_s(self) -> float:
        """Timeline position (seconds of enqueued audio) of the end of released audio."""
        return (self.frames_pushed - self._queued_frames) * self.frame_s

    def backlog_s(self, now: float) -> float:
        """Seconds of released audio that, by the model, has not played by ``now``."""
        return max(0.0, self._released_end - now)

    # ------------------------------------------------------------------ input

    def push_audio(self, payload: bytes, now: float) -> float:
        """Queue one 20 ms wire frame; returns its scheduled play-start time."""
        start = self.timeline_end
        if start < now:
            start = now
        self.timeline_end = start + self.frame_s
        release_at = start - self.lead
        # Never report a deadline before the enqueue time (servers sleep until it).
        self._queue.append((release_at if release_at > now else now, self.timeline_end, payload))
        self.frames_pushed += 1
        self._queued_frames += 1
        if self._queued_frames > self._stats.max_queue_depth:
            self._stats.max_queue_depth = self._queued_frames
        return start

    def push_mark(self, name: str, now: float) -> None:
        """Queue a mark right behind the last queued frame (or for release now)."""
        release_at = self._queue[-1][0] if self._queue else now
        self._queue.append((release_at, 0.0, name))

    # ------------------------------------------------------------------ output

    def release(self, now: float, out: list[Command]) -> None:
        """Append every command due by ``now`` to ``out``, in order."""
        queue = self._queue
        if not queue or queue[0][0] > now:
            return
        stats = self._stats
        released = 0
        while queue and queue[0][0] <= now:
            _, play_end, item = queue.popleft()
            if isinstance(item, bytes):
                out.append(SendAudio(item))
                released += 1
                self._released_end = play_end
            else:
                out.append(SendMark(item))
                stats.marks_sent += 1
        self._queued_frames -= released
        stats.frames_out += released

    def clear(self, now: float) -> int:
        """Drop everything not yet released; returns the number of frames dropped.

        The timeline restarts at ``now``: the provider flushes its own buffer on clear,
        so the next frame plays as soon as it arrives.
        """
        dropped = self._queued_frames
        self._queue.clear()
        self._queued_frames = 0
        self._stats.frames_cleared += dropped
        self.timeline_end = now
        self._released_end = min(self._released_end, now)
        return dropped
