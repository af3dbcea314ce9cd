"""Inbound audio: provider payloads -> 20 ms int16 frames at the bot's rate.

Decode (G.711 or L16 as the stream says), resample once with a streaming resampler,
and re-chunk into exact 20 ms frames. This runs 50 times a second per call, so the
common case, a 20 ms payload producing exactly one bot frame, costs one fused
decode-and-resample step (:func:`~mediastream.session.codec.resampling_decoder`) and
one ``tobytes``: no buffer copies, no extra numpy calls.

A fresh resampler withholds its group delay on the first chunk; :func:`lead_pad` puts
that much silence in front once, so each provider frame completes one bot frame at once
instead of 20 ms later (see :mod:`mediastream.session.codec`).
"""

from __future__ import annotations

import sys

import numpy as np

from audiocodecs.pcm import Int16Array
from audiocodecs.resample import StreamResampler
from mediastream.call import CallEvent, InboundAudio
from mediastream.errors import InvalidMessageError
from mediastream.protocols.events import MediaFormat
from mediastream.session.codec import (
    SUPPORTED_RATES,
    Decoder,
    check_format,
    decoder_for,
    lead_pad,
    resampling_decoder,
)
from mediastream.session.stats import SessionStats

__all__ = ["InboundPath"]

_BIG_ENDIAN = sys.byteorder == "big"


class InboundPath:
    """Decoder + resampler + re-chunker for the caller's audio of one call."""

    __slots__ = (
        "_buf",
        "_convert",
        "_decode",
        "_fill_samples",
        "_fmt",
        "_frame_bytes",
        "_frame_samples",
        "_fresh",
        "_l16",
        "_passthrough",
        "_rate",
        "_resampler",
        "_stats",
        "_zeros",
    )

    def __init__(self, fmt: MediaFormat, bot_rate: int, stats: SessionStats) -> None:
        check_format(fmt, "inbound")
        if bot_rate not in SUPPORTED_RATES:
            raise ValueError(
                f"bot sample rate {bot_rate} is not supported; use one of {sorted(SUPPORTED_RATES)}"
            )
        self._rate = bot_rate
        self._stats = stats
        self._frame_samples = bot_rate // 50  # 20 ms
        self._frame_bytes = 2 * self._frame_samples
        self._buf = bytearray()
        self._fmt = fmt
        self._decode = decoder_for(fmt)
        self._l16 = fmt.encoding == "l16"
        self._passthrough = self._is_passthrough(fmt)
        self._resampler: StreamResampler | None = None
        #: Payload -> samples at the bot rate in one step (decode, then resample if any).
        self._convert: Decoder = self._decode
        if fmt.sample_rate != bot_rate:
            self._resampler = StreamResampler(fmt.sample_rate, bot_rate)
            self._convert = resampling_decoder(fmt, self._resampler)
        #: The resampler has not produced anything yet: its first output gets the lead pad.
        self._fresh = True
        #: Input samples one missing provider frame stands for (the last frame's size).
        self._fill_samples = fmt.sample_rate // 50
        self._zeros: Int16Array = np.zeros(self._fill_samples, dtype=np.int16)

    def _is_passthrough(self, fmt: MediaFormat) -> bool:
        # L16 little-endian at the bot's rate needs no decoding at all.
        return fmt.encoding == "l16" and fmt.byteorder == "little" and fmt.sample_rate == self._rate

    @property
    def format(self) -> MediaFormat:
        return self._fmt

    def set_format(self, fmt: MediaFormat) -> list[CallEvent]:
        """Switch the wire format mid-stream (the provider changed codec or rate).

        Returns the frames the old resampler's tail completes.
        """
        check_format(fmt, "inbound")
        old_rate = self._fmt.sample_rate
        self._fmt = fmt
        self._decode = decoder_for(fmt)
        self._l16 = fmt.encoding == "l16"
        self._passthrough = self._is_passthrough(fmt)
        if fmt.sample_rate == old_rate:
            # Same rate, maybe another codec: the filter's stream goes on.
            rs = self._resampler
            self._convert = self._decode if rs is None else resampling_decoder(fmt, rs)
            return []
        old = self._resampler
        if old is not None:
            tail = old.flush()
            if len(tail):
                self._buf += self._le(tail)
        self._resampler = None
        self._convert = self._decode
        if fmt.sample_rate != self._rate:
            self._resampler = StreamResampler(fmt.sample_rate, self._rate)
            self._convert = resampling_decoder(fmt, self._resampler)
            # Mid-stream the buffer already carries audio: no lead pad for the new filter.
            self._fresh = not self._buf
        self._fill_samples = fmt.sample_rate // 50
        self._zeros = np.zeros(self._fill_samples, dtype=np.int16)
        return self._cut(False)

    # ------------------------------------------------------------------ hot path

    def feed(self, payload: bytes) -> list[CallEvent]:
        """One provider payload in; the whole 20 ms bot frames it completes out."""
        if self._l16 and len(payload) & 1:
            raise InvalidMessageError(
                f"L16 media payload has an odd byte count ({len(payload)}); samples are 2 bytes"
            )
        if self._passthrough and not self._buf and len(payload) == self._frame_bytes:
            # L16 little-endian at the bot's rate: the payload already is the frame.
            self._stats.bot_frames_in += 1
            return [InboundAudio(payload, self._rate)]
        # Wire samples: one byte each in G.711, two in L16 (odd counts rejected above).
        n = len(payload) >> 1 if self._l16 else len(payload)
        pcm = self._convert(payload)
        if n and self._fill_samples != n:
            self._fill_samples = n
            self._zeros = np.zeros(n, dtype=np.int16)
        return self._emit(pcm, n, filled=False)

    def batchable(self, payload: bytes) -> StreamResampler | None:
        """The resampler, when ``payload`` is the case a batch can convert for us.

        That is G.711 resampled to the bot's rate, the resampler in its steady state
        (:meth:`~audiocodecs.resample.StreamResampler.prepared` for this size) and no
        partial frame buffered, so the payload becomes exactly one bot frame. The
        caller converts it (with its resampler, e.g. batched with other calls') and
        hands the bot frame to :meth:`feed_converted`; nothing else may feed this path
        in between.
        """
        rs = self._resampler
        if rs is None or self._buf or self._fresh or self._l16:
            return None
        n = len(payload)
        if n * self._rate != self._frame_samples * self._fmt.sample_rate or not rs.prepared(n):
            return None
        return rs

    def feed_converted(self, pcm: bytes) -> list[CallEvent]:
        """The bot frame (int16 LE) a batch made of the payload :meth:`batchable` took."""
        self._stats.bot_frames_in += 1
        return [InboundAudio(pcm, self._rate, False)]

    def feed_fill(self) -> list[CallEvent]:
        """Silence standing in for one lost provider frame (same size as the last one)."""
        rs = self._resampler
        zeros = self._zeros
        return self._emit(zeros if rs is None else rs.process(zeros), len(zeros), filled=True)

    def _emit(self, pcm: Int16Array, n_in: int, *, filled: bool) -> list[CallEvent]:
        """Cut ``pcm`` (bot-rate samples converted from ``n_in`` wire samples) into frames."""
        if self._fresh and n_in:
            rs = self._resampler
            if rs is not None:
                self._fresh = False
                pad = lead_pad(rs)
                if pad:
                    self._buf += bytes(2 * pad)
        if not self._buf and len(pcm) == self._frame_samples:
            # The common case: one payload, one bot frame.
            self._stats.bot_frames_in += 1
            return [InboundAudio(self._le(pcm), self._rate, filled)]
        self._buf += self._le(pcm)
        return self._cut(filled)

    def _cut(self, filled: bool) -> list[CallEvent]:
        buf = self._buf
        fb = self._frame_bytes
        out: list[CallEvent] = []
        rate = self._rate
        while len(buf) >= fb:
            out.append(InboundAudio(bytes(buf[:fb]), rate, filled))
            del buf[:fb]
        self._stats.bot_frames_in += len(out)
        return out

    # ------------------------------------------------------------------ end

    def flush(self) -> list[CallEvent]:
        """End of stream: the resampler's tail and the final partial frame (may be < 20 ms)."""
        rs = self._resampler
        if rs is not None:
            tail = rs.flush()
            if len(tail):
                self._buf += self._le(tail)
        out = self._cut(False)
        if self._buf:
            out.append(InboundAudio(bytes(self._buf), self._rate, False))
            self._stats.bot_frames_in += 1
            self._buf.clear()
        return out

    @staticmethod
    def _le(pcm: Int16Array) -> bytes:
        if _BIG_ENDIAN:  # pragma: no cover - every supported CPU here is little-endian
            return pcm.astype("<i2").tobytes()
        return pcm.tobytes()
