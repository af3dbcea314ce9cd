"""Keep one track of a listen-only call in a Pipecat pipeline.

On a listen-only call the transport tags every input audio frame with its track
(``UserAudioRawFrame.user_id``: ``"caller"`` or ``"other"``, see bot/transport.py). A
processor that must hear one voice only (an STT per speaker, a caller-side VAD) sits
behind :func:`only_track`; two branches of a ``ParallelPipeline``, one per track, give
each voice its own chain.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, InputAudioRawFrame, UserAudioRawFrame
from pipecat.processors.filters.function_filter import FunctionFilter

__all__ = ["only_track"]


def only_track(track: str) -> FunctionFilter:
    """A filter passing the input audio of ``track`` (and every frame that is not input
    audio); audio of the other track stops here."""

    async def keep(frame: Frame) -> bool:
        if isinstance(frame, UserAudioRawFrame):
            return frame.user_id == track
        return not isinstance(frame, InputAudioRawFrame)

    # Input audio is a SystemFrame in Pipecat: the filter must look at system frames too
    # (keep() passes every frame that is not input audio).
    return FunctionFilter(keep, filter_system_frames=True)
