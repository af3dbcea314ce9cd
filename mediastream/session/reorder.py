"""A tiny jitter buffer that puts inbound media back in sequence order.

Telnyx states that frame order is not guaranteed (protocols.md §2.2); Twilio and Plivo
number their messages too. Keys are the provider's per-track ``chunk`` counter when it is
given, else the message ``sequence``. Sequence numbers count *every* message (start, dtmf,
mark ... as well as media), so in sequence mode the session reports the keys of non-media
messages with :meth:`ReorderBuffer.skip`; they take their slot without producing audio
and never look like a gap.

Rules of this buffer:

* In order (the next expected key, nothing held) a frame passes straight through: no
  added latency in the common case.
* A frame ahead of the expected key is held. The missing key is given up, and one frame
  of silence stands in for it, when more than ``window`` frames are held or when the
  first held frame has waited ``window`` frame times (:meth:`expire`).
* A duplicate or a frame whose slot was already given up is dropped and counted.
* A jump of more than :data:`MAX_FILL` frames is filled with at most that much silence and
  the buffer resynchronises on the new key; a key far *behind* (a counter reset) also
  resynchronises instead of dropping the rest of the stream as "late".
"""

from __future__ import annotations

from typing import Final

from mediastream.session.stats import SessionStats

__all__ = ["FILL", "MAX_FILL", "ReorderBuffer"]

#: Most silence frames inserted for one gap (1 s of 20 ms frames); beyond, resync.
MAX_FILL: Final = 50
#: A key this many slots behind the expected one is taken as a counter reset.
_RESYNC_BEHIND: Final = 100


class _Skip:
    """Placeholder for a key taken by a non-media message."""

    __slots__ = ()


_SKIP: Final = _Skip()

#: Stands in an output list for one frame of gap-filling silence.
FILL: Final = None


class ReorderBuffer:
    """Puts keyed payloads back in order within a window of ``window`` frames.

    :meth:`push` and :meth:`skip` return the payloads now due, in order, where
    :data:`FILL` (``None``) stands for one missing frame to be replaced by silence.
    """

    __slots__ = ("_held", "_held_since", "_hold_s", "_stats", "_window", "expected")

    def __init__(self, window: int, frame_s: float, stats: SessionStats) -> None:
        if window < 0:
            raise ValueError(f"reorder window must be >= 0, got {window}")
        self._window = window
        self._hold_s = window * frame_s
        self._stats = stats
        self._held: dict[int, bytes | _Skip] = {}
        self._held_since: float | None = None
        #: The next key to release; ``None`` until the first frame fixes the origin.
        self.expected: int | None = None

    @property
    def holding(self) -> bool:
        """True while frames wait for a missing one."""
        return bool(self._held)

    @property
    def deadline(self) -> float | None:
        """When the oldest held frame stops waiting (``None`` if nothing is held)."""
        if self._held_since is None:
            return None
        return self._held_since + self._hold_s

    def push(self, key: int, payload: bytes, now: float) -> list[bytes | None]:
        """Offer one media payload with its key; returns what is now due, in order."""
        expected = self.expected
        if expected is None or (key == expected and not self._held):
            self.expected = key + 1
            return [payload]
        return self._offer(key, payload, now)

    def skip(self, key: int, now: float) -> list[bytes | None]:
        """Consume ``key`` for a non-media message (sequence mode); may release frames."""
        expected = self.expected
        if expected is None or key < expected:
            return []
        if key == expected and not self._held:
            self.expected = key + 1
            return []
        return self._offer(key, _SKIP, now)

    def expire(self, now: float) -> list[bytes | None]:
        """Give up waiting if the oldest held frame waited its time; returns what is due."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        return self.drain()

    def drain(self) -> list[bytes | None]:
        """Release everything held, filling the holes with silence (end of stream, expiry)."""
        out: list[bytes | None] = []
        while self._held:
            self._give_up(out)
            self._release_run(out)
        self._held_since = None
        return out

    # ------------------------------------------------------------------ internals

    def _offer(self, key: int, item: bytes | _Skip, now: float) -> list[bytes | None]:
        expected = self.expected
        assert expected is not None
        is_media = item is not _SKIP
        if key < expected:
            if key < expected - _RESYNC_BEHIND:
                # A counter reset, not a frame 2 s late: release what we hold and restart.
                released = self.drain()
                self._stats.sequence_resyncs += 1
                self.expected = key + 1
                if isinstance(item, bytes):
                    released.append(item)
                return released
            if is_media:
                self._stats.frames_late_dropped += 1
            return []
        if key in self._held:
            if is_media:
                self._stats.frames_late_dropped += 1
            return []
        out: list[bytes | None] = []
        if key == expected:
            # The missing frame arrived late but in time: slot it in.
            if is_media and self._held:  # every held key is > expected
                self._stats.frames_reordered += 1
            self._held[key] = item
            self._release_run(out)
        else:
            self._held[key] = item
            if self._held_since is None:
                self._held_since = now
            while len(self._held) > self._window:
                self._give_up(out)
                self._release_run(out)
        if not self._held:
            self._held_since = None
        elif out:
            # Progress was made: the remaining frames wait afresh for the next hole.
            self._held_since = now
        return out

    def _give_up(self, out: list[bytes | None]) -> None:
        """Declare the expected key lost: one frame of silence stands in for it."""
        expected = self.expected
        assert expected is not None
        first = min(self._held)
        gap = first - expected
        fill = min(gap, MAX_FILL)
        if gap > MAX_FILL:
            self._stats.sequence_resyncs += 1
        out.extend([FILL] * fill)
        self._stats.frames_filled += fill
        self.expected = first

    def _release_run(self, out: list[bytes | None]) -> None:
        """Release the consecutive run of held keys starting at the expected one."""
        held = self._held
        expected = self.expected
        assert expected is not None
        while expected in held:
            item = held.pop(expected)
            if isinstance(item, bytes):
                out.append(item)
            expected += 1
        self.expected = expected
