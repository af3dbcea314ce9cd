"""Call recording (``mediastream serve --record DIR``): a stereo WAV and a JSON sidecar
per call, written as the call goes (see :mod:`.recorder`, :mod:`.timeline`, :mod:`.disk`)."""

from .disk import safe_name
from .recorder import FLUSH_S, CallRecorder, Recordings, check_record_dir, open_recordings
from .timeline import MARGIN_S, SLACK_S

__all__ = [
    "FLUSH_S",
    "MARGIN_S",
    "SLACK_S",
    "CallRecorder",
    "Recordings",
    "check_record_dir",
    "open_recordings",
    "safe_name",
]
