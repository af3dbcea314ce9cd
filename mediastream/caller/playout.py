"""The provider's playout buffer, on the caller's side of the simulated call.

A provider queues the audio a server sends and plays it in order on its own media clock:
every 20 ms it takes the next 20 ms from the queue (RTP packetisation); marks and
checkpoints sit in the same queue and are acknowledged when the audio before them has
finished playing (protocols.md §1.3, §2.3, §3.3, §5.2). This model is jitter-free: the
clock is the simulator's shared ticker at its *due* times (``t0 + k × 20 ms``), so the
load generator's own lateness never shifts playout; audio that has not arrived by a tick
waits for the next one; a tick that finds the queue short plays what there is and
silence after it.

What was played, and when, is kept per piece on a sample grid (grid sample ``n`` plays at
``t_ref + n / rate``) together with when that audio *arrived* (its message's arrival plus
its offset inside the message): the returned-audio timeline the latency is measured on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from mediastream.protocols.events import MediaFormat

from .audio import FRAME_MS, decode

__all__ = ["Gap", "Playout"]


@dataclass(slots=True)
class _Queued:
    payload: bytes  # what is left of one message
    fmt: MediaFormat
    arrival: float  # returned-timeline time of payload[0]


@dataclass(slots=True)
class _Mark:
    name: str


@dataclass(slots=True)
class _Piece:
    start: int  # grid index where it played
    payload: bytes
    fmt: MediaFormat
    returned: float  # returned-timeline time of its first sample


@dataclass(frozen=True, slots=True)
class Gap:
    """The buffer ran dry at grid index ``index`` for ``seconds`` before audio resumed."""

    index: int
    seconds: float


@dataclass(slots=True)
class Playout:
    """Play queue of one call. ``rate`` is the grid rate (the stream's outbound rate)."""

    rate: int
    t_ref: float
    pieces: list[_Piece] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    #: Grid indices at which a clear emptied the queue.
    clears: list[int] = field(default_factory=list)
    #: Grid index where the last played audio ends.
    end_index: int = 0
    queue: deque[_Queued | _Mark] = field(default_factory=deque)
    #: Marks whose audio has been taken from the queue: (grid index it ends at, name).
    finishing: deque[tuple[int, str]] = field(default_factory=deque)
    received: int = 0
    # RFC 3550 §6.4.1 interarrival jitter of the server's media messages.
    jitter: float = 0.0
    _media_clock: float = 0.0
    _transit: float | None = None
    _dry_since: int | None = None
    _queued_audio: int = 0  # messages with audio left in the queue

    def _index(self, when: float) -> int:
        return round((when - self.t_ref) * self.rate)

    def enqueue(self, payload: bytes, fmt: MediaFormat, now: float) -> None:
        """Queue audio that arrived at ``now``."""
        samples = len(payload) // fmt.bytes_per_sample
        if not samples:
            return
        self.queue.append(_Queued(payload, fmt, now))
        self._queued_audio += 1
        transit = now - self._media_clock
        if self._transit is not None:
            self.jitter += (abs(transit - self._transit) - self.jitter) / 16
        self._transit = transit
        self._media_clock += samples / fmt.sample_rate
        self.received += 1

    def add_mark(self, name: str, now: float) -> bool:
        """Queue a mark; ``True`` if nothing is queued or playing, so it is played at once."""
        if not self._queued_audio and self.end_index <= self._index(now):
            return True
        self.queue.append(_Mark(name))
        return False

    def advance(self, due: float) -> list[str]:
        """Play the 20 ms tick due at ``due``; returns the marks whose audio has played."""
        index = self._index(due)
        done: list[str] = []
        finishing = self.finishing
        while finishing and finishing[0][0] <= index:
            done.append(finishing.popleft()[1])
        queue = self.queue
        if not queue:
            self._note_dry()
            return done
        need = 0.001 * FRAME_MS  # seconds of audio this tick takes
        pos = max(index, self.end_index)
        played = False
        while queue and need > 1e-9:
            item = queue[0]
            if isinstance(item, _Mark):
                queue.popleft()
                if pos <= index:
                    done.append(item.name)
                else:
                    finishing.append((pos, item.name))
                continue
            if item.arrival > due:
                break  # arrived after this tick was due: it waits for the next one
            fmt = item.fmt
            bps = fmt.bytes_per_sample
            available = len(item.payload) // bps
            take = min(available, round(need * fmt.sample_rate))
            if take <= 0:
                break
            chunk = item.payload[: take * bps]
            if played is False and self._dry_since is not None:
                self.gaps.append(Gap(self._dry_since, (pos - self._dry_since) / self.rate))
                self._dry_since = None
            self.pieces.append(_Piece(pos, chunk, fmt, item.arrival))
            played = True
            if fmt.sample_rate == self.rate:
                pos += take
            else:
                pos += round(take * self.rate / fmt.sample_rate)
            need -= take / fmt.sample_rate
            if take == available:
                queue.popleft()
                self._queued_audio -= 1
            else:
                item.payload = item.payload[take * bps :]
                item.arrival += take / fmt.sample_rate
        if played:
            self.end_index = pos
            if need > 1e-9 and not self._queued_audio:
                self._dry_since = pos  # ran dry inside this tick
        else:
            self._note_dry()
        return done

    def _note_dry(self) -> None:
        if self._dry_since is None and self.pieces:
            self._dry_since = self.end_index

    def clear(self, now: float) -> list[str]:
        """Drop queued audio not yet played; returns the pending marks' names."""
        index = self._index(now)
        self.clears.append(index)
        names = [name for _, name in self.finishing]
        names += [item.name for item in self.queue if isinstance(item, _Mark)]
        self.queue.clear()
        self.finishing.clear()
        self._queued_audio = 0
        # What this tick had started playing stops now.
        while self.pieces and self.pieces[-1].start >= index:
            self.pieces.pop()
        if self.pieces:
            last = self.pieces[-1]
            keep = index - last.start
            grid_len = self._grid_len(last)
            if keep < grid_len:
                samples = keep if last.fmt.sample_rate == self.rate else round(
                    keep * last.fmt.sample_rate / self.rate)
                last.payload = last.payload[: samples * last.fmt.bytes_per_sample]
        self.end_index = min(self.end_index, index)
        self._dry_since = None  # silence after a clear is not an underrun
        return names

    def _grid_len(self, piece: _Piece) -> int:
        n = len(piece.payload) // piece.fmt.bytes_per_sample
        return n if piece.fmt.sample_rate == self.rate else round(
            n * self.rate / piece.fmt.sample_rate)

    def arrival_times(self, indices: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """When the audio at grid ``indices`` arrived: its message's arrival time plus its
        offset inside the message. The play time minus this is the playout wait."""
        if not self.pieces:
            return self.t_ref + indices / self.rate
        starts = np.array([p.start for p in self.pieces], dtype=np.int64)
        returned = np.array([p.returned for p in self.pieces], dtype=np.float64)
        k = np.clip(np.searchsorted(starts, indices, side="right") - 1, 0, None)
        return returned[k] + (indices - starts[k]) / self.rate

    def heard(self, samples: int | None = None) -> npt.NDArray[np.int16]:
        """What the caller heard, on the grid from ``t_ref`` (zeros where nothing played)."""
        total = max(self.end_index, samples or 0)
        out = np.zeros(total, dtype=np.int16)
        formats = {p.fmt for p in self.pieces}
        if len(formats) == 1 and next(iter(formats)).sample_rate == self.rate:
            # The usual case: one format throughout, decoded in one call.
            fmt = formats.pop()
            pcm = decode(b"".join(p.payload for p in self.pieces), fmt)
            offset = 0
            for p in self.pieces:
                size = len(p.payload) // fmt.bytes_per_sample
                n = min(size, total - p.start)
                if n > 0 and p.start >= 0:
                    out[p.start : p.start + n] = pcm[offset : offset + n]
                offset += size
            return out
        for p in self.pieces:
            pcm = decode(p.payload, p.fmt)
            if p.fmt.sample_rate != self.rate:
                from audiocodecs.resample import resample

                pcm = resample(pcm, p.fmt.sample_rate, self.rate)
            n = min(len(pcm), total - p.start)
            if n > 0 and p.start >= 0:
                out[p.start : p.start + n] = pcm[:n]
        return out
