"""Inbound audio: provider payloads -> int16 frames at the bot's rate (20 ms by default).

Decode (G.711 or L16 as the stream says), resample once with a streaming resampler,
and re-chunk into exact bot frames of ``frame_ms`` (20, 40 or 60 ms: longer frames halve
or third the frames a bot pipeline handles, for 20 or 40 ms more latency). The
resampling itself is a step the session hands to its
:class:`~mediastream.session.batch.ResampleBatcher` (:meth:`InboundPath.step` returns it;
:meth:`InboundPath.converted` takes its result): for G.711 one fused decode-and-resample,
batched with other calls' in a busy server. In the common case (20 ms bot frames) a
20 ms payload completes exactly one bot frame: no buffer copies, no extra numpy calls.

A fresh resampler withholds its group delay on the first chunk; :func:`lead_pad` puts
that much silence in front once, so each provider frame completes one bot frame at once
instead of 20 ms later (see :mod:`mediastream.session.codec`).
"""

from __future__ import annotations

import sys
from typing import TypeAlias

from audiocodecs.pcm import Int16Array
from audiocodecs.resample import StreamResampler
from mediastream.call import CallEvent, InboundAudio
from mediastream.errors import InvalidMessageError
from mediastream.protocols.events import MediaFormat
from mediastream.session.batch import Conversion
from mediastream.session.codec import (
    SUPPORTED_RATES,
    check_format,
    decoder_for,
    lead_pad,
)
from mediastream.session.stats import SessionStats

__all__ = ["BOT_FRAME_MS", "InboundPath", "Step"]

#: The bot frame lengths a session can deliver, ms.
BOT_FRAME_MS = (20, 40, 60)

_BIG_ENDIAN = sys.byteorder == "big"

#: One resampler step to convert: the stream, what the step does, its input bytes.
Step: TypeAlias = tuple[StreamResampler, Conversion, bytes]

_KINDS = {"pcmu": Conversion.ULAW_IN, "pcma": Conversion.ALAW_IN, "l16": Conversion.PCM}


class InboundPath:
    """Decoder + resampler + re-chunker for the caller's audio of one call."""

    __slots__ = (
        "_buf",
        "_decode",
        "_fill_samples",
        "_fmt",
        "_frame_bytes",
        "_frame_samples",
        "_fresh",
        "_kind",
        "_l16",
        "_le_l16",
        "_passthrough",
        "_pending_filled",
        "_pending_n",
        "_rate",
        "_resampler",
        "_stats",
        "_zero_bytes",
    )

    def __init__(
        self, fmt: MediaFormat, bot_rate: int, stats: SessionStats, frame_ms: int = 20
    ) -> None:
        check_format(fmt, "inbound")
        if frame_ms not in BOT_FRAME_MS:
            raise ValueError(f"bot frame length {frame_ms} ms is not supported; use 20, 40 or 60")
        if bot_rate not in SUPPORTED_RATES:
            raise ValueError(
                f"bot sample rate {bot_rate} is not supported; use one of {sorted(SUPPORTED_RATES)}"
            )
        self._rate = bot_rate
        self._stats = stats
        self._frame_samples = bot_rate * frame_ms // 1000
        self._frame_bytes = 2 * self._frame_samples
        self._buf = bytearray()
        self._resampler: StreamResampler | None = None
        #: The resampler has not produced anything yet: its first output gets the lead pad.
        self._fresh = True
        #: Wire samples and gap-filling state of the step out for conversion.
        self._pending_n = 0
        self._pending_filled = False
        self._fmt = fmt
        self._use_format(fmt)
        if fmt.sample_rate != bot_rate:
            self._resampler = StreamResampler(fmt.sample_rate, bot_rate)
        #: Input samples one missing provider frame stands for (the last frame's size).
        self._fill_samples = fmt.sample_rate // 50
        self._zero_bytes = bytes(2 * self._fill_samples)

    def _use_format(self, fmt: MediaFormat) -> None:
        self._fmt = fmt
        self._decode = decoder_for(fmt)
        self._kind = _KINDS[fmt.encoding]
        self._l16 = fmt.encoding == "l16"
        # Little-endian L16 on a little-endian host: the payload is the resampler's input.
        self._le_l16 = self._l16 and fmt.byteorder == "little" and not _BIG_ENDIAN
        # L16 little-endian at the bot's rate needs no decoding at all.
        self._passthrough = (
            self._l16 and fmt.byteorder == "little" and fmt.sample_rate == self._rate
        )

    @property
    def format(self) -> MediaFormat:
        return self._fmt

    def set_format(self, fmt: MediaFormat) -> list[CallEvent]:
        """Switch the wire format mid-stream (the provider changed codec or rate).

        Returns the frames the old resampler's tail completes. No step may be out.
        """
        check_format(fmt, "inbound")
        old_rate = self._fmt.sample_rate
        self._use_format(fmt)
        if fmt.sample_rate == old_rate:
            return []  # same rate, maybe another codec: the filter's stream goes on
        old = self._resampler
        if old is not None:
            tail = old.flush()
            if len(tail):
                self._buf += self._le(tail)
        self._resampler = None
        if fmt.sample_rate != self._rate:
            self._resampler = StreamResampler(fmt.sample_rate, self._rate)
            # Mid-stream the buffer already carries audio: no lead pad for the new filter.
            self._fresh = not self._buf
        self._fill_samples = fmt.sample_rate // 50
        self._zero_bytes = bytes(2 * self._fill_samples)
        return self._cut(False)

    # ------------------------------------------------------------------ hot path

    def step(self, payload: bytes) -> list[CallEvent] | Step:
        """One provider payload in: the whole bot frames it completes, or, when it
        must be resampled, the step to convert; its result goes to :meth:`converted`."""
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
        if n and self._fill_samples != n:
            self._fill_samples = n
            self._zero_bytes = bytes(2 * n)
        rs = self._resampler
        if rs is None:
            return self._emit(self._le(self._decode(payload)), n, filled=False)
        self._pending_n = n
        self._pending_filled = False
        kind = self._kind
        if kind is Conversion.PCM and not self._le_l16:
            payload = self._le(self._decode(payload))  # big-endian L16: to native first
        return rs, kind, payload

    def fill_step(self) -> list[CallEvent] | Step:
        """Silence standing in for one lost provider frame (same size as the last one)."""
        zeros = self._zero_bytes
        n = len(zeros) >> 1
        rs = self._resampler
        if rs is None:
            return self._emit(zeros, n, filled=True)
        self._pending_n = n
        self._pending_filled = True
        return rs, Conversion.PCM, zeros

    def converted(self, pcm: bytes) -> list[CallEvent]:
        """The resampled samples (int16 LE) of the step :meth:`step` or :meth:`fill_step`
        handed out, cut into bot frames."""
        if not self._fresh and not self._buf and len(pcm) == self._frame_bytes:
            self._stats.bot_frames_in += 1  # the steady state: one payload, one frame
            return [InboundAudio(pcm, self._rate, self._pending_filled)]
        return self._emit(pcm, self._pending_n, filled=self._pending_filled)

    def _emit(self, pcm: bytes, n_in: int, *, filled: bool) -> list[CallEvent]:
        """Cut ``pcm`` (bot-rate samples converted from ``n_in`` wire samples) into frames."""
        if self._fresh and n_in:
            rs = self._resampler
            if rs is not None:
                self._fresh = False
                pad = lead_pad(rs)
                if pad:
                    self._buf += bytes(2 * pad)
        if not self._buf and len(pcm) == self._frame_bytes:
            # The common case: one payload, one bot frame.
            self._stats.bot_frames_in += 1
            return [InboundAudio(pcm, self._rate, filled)]
        self._buf += pcm
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
