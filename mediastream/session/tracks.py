"""The other party's track of a listen-only stream that carries both tracks.

A ``<Start><Stream track="both_tracks">`` fork (Twilio), ``stream_track=both_tracks``
(Telnyx) or ``<Stream bidirectional="false" audioTrack="both">`` (Plivo) sends two tracks
on one socket: ``inbound`` (the caller) and ``outbound`` (what the caller hears: the
other party of a ``<Dial>``, an IVR, hold music). On a bidirectional stream the
outbound track is our own bot echoed back, and the session ignores it; on a listen-only
stream it is the other half of the conversation, and :class:`OtherTrack` turns it into
:class:`~mediastream.call.InboundAudio` frames tagged ``track="other"``.

It has its own decoder, resampler, re-chunker (an
:class:`~mediastream.session.inbound.InboundPath`) and reorder buffer, so the two tracks
never share filter state or sequence counters: each track is decoded, put back in order
and resampled on its own. Its resampler steps are converted at once rather than through
the session's batcher: the caller's path keeps the batching untouched, and a listen-only
call pays one unbatched resampler step per 20 ms of the other party.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from mediastream.call import CallEvent, InboundAudio
from mediastream.protocols.events import AudioReceived, MediaFormat
from mediastream.session.batch import ResampleBatcher
from mediastream.session.codec import FRAME_S
from mediastream.session.inbound import InboundPath
from mediastream.session.reorder import ReorderBuffer
from mediastream.session.stats import SessionStats

__all__ = ["CALLER_TRACK", "OTHER_TRACK", "OtherTrack"]

#: :attr:`InboundAudio.track` of the caller's audio (the provider's ``inbound`` track).
CALLER_TRACK: Final = "caller"
#: :attr:`InboundAudio.track` of the other party's (the provider's ``outbound`` track).
OTHER_TRACK: Final = "other"

#: Converts each step before ``submit`` returns.
_AT_ONCE: Final = ResampleBatcher()


class OtherTrack:
    """Decode, reorder and resample the other party's track on its own."""

    __slots__ = ("_fmt", "_key_mode", "_path", "_reorder", "_result")

    def __init__(
        self,
        fmt: MediaFormat,
        bot_rate: int,
        stats: SessionStats,
        reorder_window: int,
        frame_ms: int = 20,
    ) -> None:
        self._fmt = fmt
        self._path = InboundPath(fmt, bot_rate, stats, frame_ms)
        self._reorder = ReorderBuffer(reorder_window, FRAME_S, stats)
        #: "chunk", "sequence" or "none", chosen by the track's first frame.
        self._key_mode: str | None = None
        self._result: bytes | Exception | None = None

    @property
    def deadline(self) -> float | None:
        """When the reorder buffer stops waiting for a missing frame."""
        return self._reorder.deadline

    def receive(self, event: AudioReceived, now: float) -> list[CallEvent]:
        """One media message of the track in; the frames it completes, in order."""
        out: list[CallEvent] = []
        if event.format != self._fmt:
            self._fmt = event.format
            out += self._path.set_format(event.format)
        key = self._key(event)
        if key is None:
            out += self._feed(event.payload)
        else:
            for item in self._reorder.push(key, event.payload, now):
                out += self._feed(item)
        return self._tag(out)

    def expire(self, now: float) -> list[CallEvent]:
        """Give up on a missing frame that has waited its time."""
        out: list[CallEvent] = []
        for item in self._reorder.expire(now):
            out += self._feed(item)
        return self._tag(out)

    def finish(self) -> list[CallEvent]:
        """End of stream: what the reorder buffer holds, then the resampler's tail."""
        out: list[CallEvent] = []
        for item in self._reorder.drain():
            out += self._feed(item)
        out += self._path.flush()
        return self._tag(out)

    def _key(self, event: AudioReceived) -> int | None:
        # Chunks count per track (Twilio, Telnyx, Plivo); a track without them is taken
        # in arrival order: sequence numbers count both tracks' messages together.
        if self._key_mode is None:
            self._key_mode = "chunk" if event.chunk is not None else "none"
        return event.chunk if self._key_mode == "chunk" else None

    def _feed(self, payload: bytes | None) -> list[CallEvent]:
        path = self._path
        step = path.fill_step() if payload is None else path.step(payload)
        if isinstance(step, list):
            return step
        rs, kind, data = step
        _AT_ONCE.submit(rs, kind, data, self._on_converted)
        result, self._result = self._result, None
        if type(result) is not bytes:  # an error, raised on the session's caller's stack
            raise result if isinstance(result, Exception) else RuntimeError("no result")
        return path.converted(result)

    def _on_converted(self, result: bytes | Exception) -> None:
        self._result = result

    @staticmethod
    def _tag(frames: list[CallEvent]) -> list[CallEvent]:
        return [
            replace(frame, track=OTHER_TRACK) if type(frame) is InboundAudio else frame
            for frame in frames
        ]
