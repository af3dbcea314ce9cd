"""The provider's playout buffer, on the caller's side of the simulated call.

A provider queues the audio a server sends and plays it in order, in real time; marks and
checkpoints sit in the same queue and are acknowledged when the audio before them has
played (protocols.md §1.3, §2.3, §3.3, §5.2). This model is jitter-free: audio that arrives
while the buffer is playing is queued behind it; audio that arrives after the buffer ran dry
starts playing on arrival. Play times are kept on a sample grid (sample ``n`` plays at
``t_ref + n / rate``), so what the caller heard, and when, is known to a sample.

The shared 20 ms ticker drives :meth:`Playout.advance`, which returns the marks whose audio
has played by then: acknowledgements go out with the provider's 20 ms granularity.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from mediastream.protocols.events import MediaFormat

from .audio import decode

__all__ = ["Gap", "Playout"]


@dataclass(slots=True)
class _Segment:
    start: int  # grid sample index where it starts playing
    payload: bytes
    fmt: MediaFormat
    length: int  # grid samples (cut short by a clear)
    arrival: float  # when its message arrived


@dataclass(frozen=True, slots=True)
class Gap:
    """The buffer ran dry at grid index ``index`` and stayed dry for ``seconds``."""

    index: int
    seconds: float


@dataclass(slots=True)
class Playout:
    """Play queue of one call. ``rate`` is the grid rate (the stream's outbound rate)."""

    rate: int
    t_ref: float
    segments: list[_Segment] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    #: Grid indices at which a clear emptied the queue.
    clears: list[int] = field(default_factory=list)
    end_index: int = 0
    marks: deque[tuple[int, str]] = field(default_factory=deque)
    # RFC 3550 §6.4.1 interarrival jitter of the server's media messages.
    jitter: float = 0.0
    _media_clock: float = 0.0
    _transit: float | None = None
    received: int = 0

    def _index(self, now: float) -> int:
        return round((now - self.t_ref) * self.rate)

    def end_time(self) -> float:
        """When everything queued so far will have played."""
        return self.t_ref + self.end_index / self.rate

    def enqueue(self, payload: bytes, fmt: MediaFormat, now: float) -> None:
        """Queue audio that arrived at ``now``."""
        samples = len(payload) // fmt.bytes_per_sample
        if not samples:
            return
        length = samples if fmt.sample_rate == self.rate else round(
            samples * self.rate / fmt.sample_rate
        )
        now_index = self._index(now)
        if now_index > self.end_index:
            if self.segments:
                self.gaps.append(Gap(self.end_index, (now_index - self.end_index) / self.rate))
            start = now_index
        else:
            start = self.end_index
        self.segments.append(_Segment(start, payload, fmt, length, now))
        self.end_index = start + length
        # RFC 3550 jitter: transit time relative to the media clock of what was received.
        transit = now - self._media_clock
        if self._transit is not None:
            self.jitter += (abs(transit - self._transit) - self.jitter) / 16
        self._transit = transit
        self._media_clock += samples / fmt.sample_rate
        self.received += 1

    def add_mark(self, name: str, now: float) -> bool:
        """Queue a mark; ``True`` if nothing is queued and it is played at once."""
        if self.end_index <= self._index(now):
            return True
        self.marks.append((self.end_index, name))
        return False

    def advance(self, now: float) -> list[str]:
        """Marks whose preceding audio has played by ``now``."""
        marks = self.marks
        if not marks:
            return []
        index = self._index(now)
        done: list[str] = []
        while marks and marks[0][0] <= index:
            done.append(marks.popleft()[1])
        return done

    def clear(self, now: float) -> list[str]:
        """Drop queued audio not yet played; returns the pending marks' names."""
        index = self._index(now)
        self.clears.append(index)
        while self.segments and self.segments[-1].start >= index:
            self.segments.pop()
        if self.segments:
            last = self.segments[-1]
            last.length = min(last.length, index - last.start)
        self.end_index = min(self.end_index, index)
        names = [name for _, name in self.marks]
        self.marks.clear()
        return names

    def arrival_times(self, indices: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """When the audio at grid ``indices`` arrived: its message's arrival time plus its
        offset inside the message. Equals the play time unless it queued behind audio."""
        if not self.segments:
            return self.t_ref + indices / self.rate
        starts = np.array([s.start for s in self.segments], dtype=np.int64)
        arrivals = np.array([s.arrival for s in self.segments], dtype=np.float64)
        k = np.clip(np.searchsorted(starts, indices, side="right") - 1, 0, None)
        return arrivals[k] + (indices - starts[k]) / self.rate

    def heard(self, samples: int | None = None) -> npt.NDArray[np.int16]:
        """What the caller heard, on the grid from ``t_ref`` (zeros where nothing played)."""
        total = max(self.end_index, samples or 0)
        out = np.zeros(total, dtype=np.int16)
        for seg in self.segments:
            pcm = decode(seg.payload, seg.fmt)
            if seg.fmt.sample_rate != self.rate:
                from audiocodecs.resample import resample

                pcm = resample(pcm, seg.fmt.sample_rate, self.rate)
            n = min(seg.length, len(pcm), total - seg.start)
            if n > 0 and seg.start >= 0:
                out[seg.start : seg.start + n] = pcm[:n]
        return out
