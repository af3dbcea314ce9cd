"""The recording's timeline: two lanes of audio placed on one clock, cut into blocks.

Time zero is the moment the server received the provider's ``start`` (the session's
creation); a sample index ``n`` at the recording rate ``R`` (the session's bot rate) is
``n / R`` seconds after it. Each channel is a lane:

* :class:`StreamLane` -- audio that *arrives* as a stream (the caller's track, and on a
  listen-only fork the other party's track). It is laid down back to back, in stream
  order, from where its first frame arrived: stream time, not arrival jitter, decides
  where a frame goes. True gaps inside the provider's numbering are already filled with
  silence by the session's reorder buffer. When the stream falls behind the wall clock by
  more than :data:`SLACK_S` (the provider stopped sending: a stall, a fork with nothing
  to say), the lane jumps ahead with silence so it stays aligned with the other channel.
  A lane that runs ahead of the clock (a burst after a stall) simply stays ahead.
* :class:`ScheduledLane` -- our own audio, placed where the session's pacer scheduled
  each wire frame to play (the model the playout ledger is built on) and decoded from the
  wire format, so it is what the caller was sent, codec and all. Frames stay pending
  until their play time has passed; :meth:`ScheduledLane.cut` (a ``clear``, or the end of
  the call) removes everything scheduled at or after the cut, to the sample: audio sent
  but flushed by the provider before it played is not in the recording.

:meth:`StreamLane.take` and :meth:`ScheduledLane.take` hand out the block ``[start,
end)`` as int16 samples at the recording rate; the recorder takes blocks only up to
:data:`MARGIN_S` behind the wall clock, so nothing that can still change is ever written.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

import numpy as np

from audiocodecs.pcm import Int16Array
from audiocodecs.resample import StreamResampler
from mediastream.protocols.events import MediaFormat
from mediastream.session.codec import decoder_for, lead_pad

__all__ = ["MARGIN_S", "SLACK_S", "ScheduledLane", "StreamLane"]

#: A stream lane more than this far behind the wall clock jumps ahead with silence.
SLACK_S: Final = 0.2
#: Blocks are taken only up to this far behind the wall clock (> SLACK_S: a frame that
#: did not trigger a jump always lands after what was written).
MARGIN_S: Final = 0.3


class StreamLane:
    """Samples at the recording rate laid back to back, re-anchored after stalls."""

    __slots__ = ("_buf", "_buf_start", "_end", "_offset", "_rate", "_slack", "stream_ms")

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._slack = round(SLACK_S * rate)
        #: Samples not yet taken; ``_buf[0]`` is sample index ``_buf_start``.
        self._buf = bytearray()
        self._buf_start = 0
        #: Index just after the last sample laid down (``None``: nothing yet).
        self._end: int | None = None
        #: The provider's timestamp (ms) at the end of the newest frame received on this
        #: track, set by the session tap; ``None`` when the provider sends none.
        self.stream_ms: int | None = None
        #: Recording index of the provider's timestamp 0 (set by the first frame).
        self._offset = 0

    @property
    def end(self) -> int:
        """Index just after the last sample laid down (0 before the first)."""
        return self._end if self._end is not None else 0

    def add(self, pcm: bytes, wall: int) -> None:
        """Lay ``pcm`` (int16 LE mono) down; ``wall`` is the sample index of now.

        Where "now" is on the stream: the provider's timestamp of the newest frame
        received (:attr:`stream_ms`, anchored to the wall clock at the first frame) when
        it sends one -- so audio delivered late in a burst keeps its place -- else the
        wall clock.
        """
        n = len(pcm) >> 1
        end = self._end
        ms = self.stream_ms
        if end is None:
            if ms is not None:
                self._offset = wall - ms * self._rate // 1000
        elif ms is not None:
            wall = self._offset + ms * self._rate // 1000
        if end is None or end < wall - n - self._slack:
            end = wall - n  # first frame, or after a pause in the stream: it ends now
        if end < self._buf_start:
            end = self._buf_start  # never before what was already written
        pad = end - self._buf_start - (len(self._buf) >> 1)
        if pad > 0:
            self._buf += bytes(2 * pad)
        self._buf += pcm
        self._end = end + n

    def take(self, start: int, stop: int) -> Int16Array:
        """The block ``[start, stop)`` (``start`` is where the last block ended)."""
        assert start == self._buf_start
        want = 2 * (stop - start)
        data = bytes(self._buf[:want])
        del self._buf[:want]
        self._buf_start = stop
        out = np.zeros(stop - start, dtype=np.int16)
        if data:
            out[: len(data) >> 1] = np.frombuffer(data, dtype="<i2")
        return out


class ScheduledLane:
    """Wire frames placed at their scheduled play time, cut by clears, resampled."""

    __slots__ = ("_bps", "_cursor", "_decode", "_fresh", "_index", "_payload", "_quiet",
                 "_rate", "_resampler", "_t0", "_wire_rate")

    def __init__(self, fmt: MediaFormat, rate: int, t0: float) -> None:
        self._decode = decoder_for(fmt)
        self._bps = fmt.bytes_per_sample
        self._wire_rate = fmt.sample_rate
        self._rate = rate
        self._t0 = t0
        #: First wire-sample index and payload of each frame not yet fully taken, in
        #: order (two deques: no object per frame for the garbage collector to track).
        self._index: deque[int] = deque()
        self._payload: deque[bytes] = deque()
        #: Wire index just after the last frame added (frames back to back snap to it).
        self._cursor = -1
        self._resampler = (
            StreamResampler(self._wire_rate, rate) if self._wire_rate != rate else None)
        #: The resampler starts a new stream at its next input (its lead pad is due).
        self._fresh = True
        #: The last 20 ms the resampler was fed (if any) were silent: its history holds
        #: only zeros, so silence from here on need not go through it.
        self._quiet = True

    def add(self, payload: bytes, play_at: float) -> None:
        """A wire frame the pacer scheduled to start playing at ``play_at`` (loop time)."""
        index = round((play_at - self._t0) * self._wire_rate)
        if abs(index - self._cursor) <= 2:
            index = self._cursor  # the next frame of a run: no rounding gap or overlap
        if index < 0:
            index = 0
        self._index.append(index)
        self._payload.append(payload)
        self._cursor = index + len(payload) // self._bps

    def cut(self, at: float) -> None:
        """Nothing scheduled at or after loop time ``at`` was heard."""
        cut = math.ceil((at - self._t0) * self._wire_rate - 1e-6)  # float noise: not a sample
        indices, payloads = self._index, self._payload
        while indices:
            index = indices[-1]
            if index >= cut:
                indices.pop()
                payloads.pop()
                continue
            keep = (cut - index) * self._bps
            if keep < len(payloads[-1]):
                payloads[-1] = payloads[-1][:keep]
            break
        self._cursor = -1

    def take(self, start: int, stop: int) -> Int16Array:
        """The block ``[start, stop)`` at the recording rate (20 ms boundaries)."""
        wire, rate = self._wire_rate, self._rate
        w0, w1 = start * wire // rate, stop * wire // rate
        block = np.zeros(w1 - w0, dtype=np.int16)
        indices, payloads = self._index, self._payload
        run_start = -1
        run: list[bytes] = []
        run_end = -1
        for index, payload in zip(indices, payloads, strict=True):
            if index >= w1:
                break
            if index != run_end:
                self._place(block, w0, run_start, run)
                run_start, run = index, []
            run.append(payload)
            run_end = index + len(payload) // self._bps
        self._place(block, w0, run_start, run)
        while indices and indices[0] + len(payloads[0]) // self._bps <= w1:
            indices.popleft()  # wholly taken
            payloads.popleft()
        if self._resampler is None:
            return block
        return self._resample(block, stop - start)

    def _resample(self, block: Int16Array, n_out: int) -> Int16Array:
        """``block`` at the recording rate. Silence skips the resampler: every run of
        sound goes through it as one fresh stream (lead-padded, so its length is exact)
        followed by one silent 20 ms chunk, which flushes the filter (its window is
        shorter than 20 ms at every supported rate pair), then it is reset; the silence
        after that is zeros. Where the bot is quiet -- most of a call -- nothing is
        resampled."""
        rs = self._resampler
        assert rs is not None
        fw, fo = self._wire_rate // 50, self._rate // 50
        loud: list[bool] = np.any(block.reshape(-1, fw), axis=1).tolist()
        n = len(loud)
        if self._quiet and not any(loud):
            return np.zeros(n_out, dtype=np.int16)
        parts: list[Int16Array] = []
        i = 0
        while i < n:
            if self._quiet and not loud[i]:
                j = i + 1
                while j < n and not loud[j]:
                    j += 1
                parts.append(np.zeros((j - i) * fo, dtype=np.int16))
                i = j
                continue
            j = i
            while j < n and loud[j]:
                j += 1
            end = min(j + 1, n)  # the run and one silent chunk after it, if in this block
            out = rs.process(block[i * fw : end * fw])
            if self._fresh:
                self._fresh = False
                out = np.concatenate([np.zeros(lead_pad(rs), dtype=np.int16), out])
            parts.append(out)
            self._quiet = end > j
            if self._quiet:  # its history is zeros: the next sound starts a fresh stream
                rs.reset()
                self._fresh = True
            i = end
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _place(self, block: Int16Array, w0: int, index: int, run: list[bytes]) -> None:
        if not run:
            return
        samples = self._decode(b"".join(run) if len(run) > 1 else run[0])
        lo, hi = index - w0, index - w0 + len(samples)
        a, b = max(lo, 0), min(hi, len(block))
        if a < b:
            block[a:b] = samples[a - lo : b - lo]
