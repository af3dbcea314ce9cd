"""Per-call counters the session keeps for metrics and tests.

One mutable slotted object per call, shared by the session's parts (inbound path,
reorder buffer, pacer, ledger) so each bumps its own counters without indirection. The
server reads it to feed Prometheus; nothing here is thread-safe or needs to be.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["SessionStats"]


@dataclass(slots=True)
class SessionStats:
    """Counters of one call session. Frames are provider media messages unless noted."""

    # --- inbound (provider -> bot)
    #: Inbound-track media messages received (including ones later dropped).
    frames_in: int = 0
    #: Media messages of other tracks (our own playback echoed back), ignored.
    frames_ignored: int = 0
    #: Media messages of the other party's track of a listen-only stream (delivered).
    frames_other_in: int = 0
    #: 20 ms bot frames delivered as :class:`~mediastream.call.InboundAudio`.
    bot_frames_in: int = 0
    #: Missing provider frames replaced by silence (a true gap in the sequence).
    frames_filled: int = 0
    #: Frames that arrived out of order and were put back in place within the window.
    frames_reordered: int = 0
    #: Duplicates and frames that arrived after their slot was given up.
    frames_late_dropped: int = 0
    #: Times the sequence jumped so far that the session resynchronised on it.
    sequence_resyncs: int = 0

    # --- outbound (bot -> provider)
    #: 20 ms wire frames released to the provider (SendAudio commands).
    frames_out: int = 0
    #: Wire frames dropped from the queue by a clear (never sent).
    frames_cleared: int = 0
    #: Times the outbound queue ran dry in the middle of an utterance.
    underruns: int = 0
    #: Bot pauses (no end_utterance) whose buffered tail the session flushed itself.
    idle_flushes: int = 0
    #: Most wire frames ever queued at once (not yet released).
    max_queue_depth: int = 0

    # --- playout ledger
    marks_sent: int = 0
    #: Marks resolved as played (by echo or by the clock fallback).
    marks_played: int = 0
    #: Of ``marks_played``, those resolved by the clock because no echo came in time.
    marks_timed_out: int = 0
    #: Marks resolved as cut by a clear (echoes that follow are not counted as played).
    marks_cut: int = 0
    clears: int = 0
    #: Clears asked for when the caller had heard everything: no ClearAudio was sent.
    clears_skipped: int = 0
    #: Seconds from the last clear until the provider confirmed it (first echo of a cut
    #: or probe mark; Plivo ``clearedAudio``). ``None`` until measured.
    clear_to_silence_s: float | None = None
    #: Seconds of audio the provider already held when the last clear was issued (bounded
    #: by ``playout_lead`` plus one frame): what a provider ignoring the clear would play.
    clear_backlog_s: float = 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        """The counters as a plain dict (for logs and JSON)."""
        return asdict(self)
