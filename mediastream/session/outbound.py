"""Outbound audio: bot PCM (any rate, any chunking) -> whole 20 ms wire frames.

Resample to the wire rate, encode, and cut whole 20 ms frames, carrying the partial
frame (and an odd trailing byte) over to the next call. A sub-20 ms tail never goes out
on its own: providers play odd-sized chunks with audible jitter and Telnyx RTP mode
requires at least 20 ms per message (protocols.md §5.1); :meth:`OutboundEncoder.flush`
pads it with codec silence (μ-law 0xFF, A-law 0xD5, L16 zero) instead.

The resampling is a step the session hands to its
:class:`~mediastream.session.batch.ResampleBatcher` (:meth:`OutboundEncoder.step`
returns it, :meth:`OutboundEncoder.converted` takes its result); for G.711 the step
resamples and encodes in one go.

One resampler per bot rate, created on first use; a rate change mid-stream flushes the
previous one first so nothing is lost. After :meth:`~OutboundEncoder.flush` or
:meth:`~OutboundEncoder.reset` the next audio starts a fresh stream, with the lead pad
described in :mod:`mediastream.session.codec`.
"""

from __future__ import annotations

import sys

import numpy as np

from audiocodecs.pcm import Int16Array
from audiocodecs.resample import StreamResampler
from mediastream.protocols.events import MediaFormat
from mediastream.session.batch import Conversion
from mediastream.session.codec import (
    SUPPORTED_RATES,
    Encoder,
    check_format,
    encoder_for,
    lead_pad,
)
from mediastream.session.inbound import Step

__all__ = ["OutboundEncoder"]

_NATIVE_INT16 = np.dtype("<i2") if sys.byteorder == "little" else np.dtype(">i2")
_LE_INT16 = np.dtype("<i2")
_KINDS = {"pcmu": Conversion.ULAW_OUT, "pcma": Conversion.ALAW_OUT, "l16": Conversion.PCM}


class OutboundEncoder:
    """Turns the bot's PCM into whole encoded 20 ms frames of the wire format."""

    __slots__ = (
        "_buf",
        "_dirty",
        "_encode",
        "_fmt",
        "_frame_bytes",
        "_fresh",
        "_kind",
        "_odd",
        "_rate",
        "_resampler",
        "_resamplers",
        "_silence",
    )

    def __init__(self, fmt: MediaFormat) -> None:
        check_format(fmt, "outbound")
        self._fmt = fmt
        self._encode: Encoder = encoder_for(fmt)
        self._kind = _KINDS[fmt.encoding]
        self._frame_bytes = fmt.frame_bytes(20)
        #: One sample of codec silence, as the encoder produces it for 0.
        self._silence = self._encode(np.zeros(1, dtype=np.int16))
        self._buf = bytearray()
        self._odd = b""
        self._rate = 0
        self._resampler: StreamResampler | None = None
        self._resamplers: dict[int, StreamResampler] = {}
        #: Input went into the resampler since its last flush (its tail is pending).
        self._dirty = False
        #: The next output starts a fresh stream (lead pad due).
        self._fresh = True

    @property
    def format(self) -> MediaFormat:
        return self._fmt

    @property
    def pending(self) -> bool:
        """True while some audio is buffered short of a whole frame (or in the filter)."""
        return bool(self._buf) or self._dirty or bool(self._odd)

    @property
    def pending_s(self) -> float:
        """Seconds of encoded audio waiting for a whole frame (excludes the filter)."""
        return len(self._buf) / self._fmt.bytes_per_sample / self._fmt.sample_rate

    def step(self, pcm: bytes, sample_rate: int) -> list[bytes] | Step:
        """Add int16 little-endian mono PCM at ``sample_rate``: the whole wire frames it
        completes, or, when it must be resampled, the step to convert (its result goes
        to :meth:`converted`).

        Raises ``ValueError`` for an unsupported rate and ``TypeError`` for non-bytes.
        """
        if type(pcm) is not bytes:
            if not isinstance(pcm, bytearray | memoryview):
                raise TypeError(f"bot audio must be bytes-like, got {type(pcm).__name__}")
            pcm = bytes(pcm)
        if sample_rate != self._rate:
            self._switch_rate(sample_rate)
        if self._odd:
            pcm = self._odd + pcm
            self._odd = b""
        if len(pcm) & 1:
            self._odd = pcm[-1:]
            pcm = pcm[:-1]
        if not pcm:
            return []
        rs = self._resampler
        if rs is not None:
            return rs, self._kind, pcm
        self._fresh = False
        samples: Int16Array = np.frombuffer(pcm, dtype=_LE_INT16)
        if _LE_INT16 != _NATIVE_INT16:  # pragma: no cover - big-endian hosts only
            samples = samples.astype(np.int16)
        return self._frames(self._encode(samples))

    def converted(self, data: bytes) -> list[bytes]:
        """The result of the step :meth:`step` handed out (G.711 codes, or int16 LE PCM
        for an L16 wire): the whole wire frames it completes."""
        rs = self._resampler
        assert rs is not None
        self._dirty = True
        if self._fresh:
            self._fresh = False
            pad = lead_pad(rs)
            if pad:
                self._buf += self._silence * pad
        if self._kind is Conversion.PCM:  # L16 on the wire: encode the resampled PCM
            samples: Int16Array = np.frombuffer(data, dtype=_LE_INT16)
            if _LE_INT16 != _NATIVE_INT16:  # pragma: no cover - big-endian hosts only
                samples = samples.astype(np.int16)
            data = self._encode(samples)
        elif not self._buf and len(data) == self._frame_bytes:
            return [data]  # the steady state: one chunk, one frame
        return self._frames(data)

    def _frames(self, data: bytes) -> list[bytes]:
        if not data:
            return []
        if not self._buf and len(data) == self._frame_bytes:
            return [data]
        self._buf += data
        return self._cut()

    def flush(self) -> list[bytes]:
        """End of an utterance (or a pause): the filter tail plus the last frame, padded.

        Afterwards the encoder starts a fresh stream. Returns the remaining whole frames.
        """
        if self._odd:
            # Half a sample cannot be played; it is the bot's framing error, not audio.
            self._odd = b""
        rs = self._resampler
        if rs is not None and self._dirty:
            tail = rs.flush()  # flush() also resets the filter
            if len(tail):
                self._buf += self._encode(tail)
        self._dirty = False
        self._fresh = True
        frames = self._cut()
        buf = self._buf
        if buf:
            missing = (self._frame_bytes - len(buf)) // len(self._silence)
            frames.append(bytes(buf) + self._silence * missing)
            buf.clear()
        return frames

    def reset(self) -> None:
        """Drop everything buffered (an interruption): the next audio starts fresh."""
        self._buf.clear()
        self._odd = b""
        if self._resampler is not None and self._dirty:
            self._resampler.reset()
        self._dirty = False
        self._fresh = True

    # ------------------------------------------------------------------ internals

    def _switch_rate(self, sample_rate: int) -> None:
        if sample_rate not in SUPPORTED_RATES:
            raise ValueError(
                f"bot sample rate {sample_rate} is not supported; "
                f"use one of {sorted(SUPPORTED_RATES)}"
            )
        old = self._resampler
        if old is not None and self._dirty:
            # Nothing is lost on a rate change: the old filter's tail goes out first.
            tail = old.flush()
            if len(tail):
                self._buf += self._encode(tail)
            self._dirty = False
        self._rate = sample_rate
        if sample_rate == self._fmt.sample_rate:
            self._resampler = None
            return
        rs = self._resamplers.get(sample_rate)
        if rs is None:
            rs = self._resamplers[sample_rate] = StreamResampler(sample_rate, self._fmt.sample_rate)
        self._resampler = rs
        # Mid-utterance the new filter's delay shows as a short shift, not a pad.
        self._fresh = self._fresh and not self._buf

    def _cut(self) -> list[bytes]:
        buf = self._buf
        fb = self._frame_bytes
        frames: list[bytes] = []
        while len(buf) >= fb:
            frames.append(bytes(buf[:fb]))
            del buf[:fb]
        return frames
