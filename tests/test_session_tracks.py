"""Both tracks of a listen-only stream: each decoded, reordered and resampled on its own,
tagged with whose voice it is (issue 14). Runs converting at once and batched."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from audiocodecs.g711 import ulaw_encode
from mediastream.call import CallEnded, CallEvent, InboundAudio
from mediastream.protocols.events import AudioReceived, StreamStopped
from mediastream.session.tracks import CALLER_TRACK, OTHER_TRACK
from tests._util_session import (
    PCMU_8K,
    RecordedSession,
    call_info,
    dominant_frequency,
    tone,
)

Int16 = npt.NDArray[np.int16]


@pytest.fixture(autouse=True)
def _both_modes(batching: str) -> str:
    return batching


def _payloads(freq: float, count: int) -> list[bytes]:
    x = tone(freq, 0.02 * count, 8000, amplitude=9000)
    return [ulaw_encode(x[i * 160 : (i + 1) * 160]).tobytes() for i in range(count)]


def _pcm(frames: list[CallEvent], track: str) -> Int16:
    return np.frombuffer(
        b"".join(f.pcm for f in frames if isinstance(f, InboundAudio) and f.track == track),
        np.int16,
    )


def test_listen_only_delivers_each_track_on_its_own() -> None:
    # Twilio <Start><Stream track="both_tracks">: inbound and outbound media interleaved,
    # each track numbering its own chunks (protocols.md §1.2). The other party's frames
    # arrive out of order; the caller's in order.
    session = RecordedSession(call_info(), now=0.0, listen_only=True)
    caller, other = _payloads(440, 25), _payloads(1000, 25)
    order = list(range(25))
    order[3], order[4] = order[4], order[3]  # one swap on the other party's track
    out: list[CallEvent] = []
    for n in range(25):
        now = 0.02 * n
        out += session.receive_event(
            AudioReceived(caller[n], PCMU_8K, "inbound", chunk=n + 1, sequence=2 * n + 2), now)
        k = order[n]
        out += session.receive_event(
            AudioReceived(other[k], PCMU_8K, "outbound", chunk=k + 1, sequence=2 * n + 3), now)
    out += session.receive_event(StreamStopped(), 0.6)
    assert isinstance(out[-1], CallEnded)
    mine, theirs = _pcm(out, CALLER_TRACK), _pcm(out, OTHER_TRACK)
    # 16 kHz bot rate: 25 frames of 20 ms each, per track (the tail flushed at the end).
    assert abs(len(mine) - 25 * 320) <= 320 and abs(len(theirs) - 25 * 320) <= 320
    # Each track is its own tone: no mixing, no shared filter state.
    assert abs(dominant_frequency(mine[640:-640], 16000) - 440) < 5
    assert abs(dominant_frequency(theirs[640:-640], 16000) - 1000) < 5
    stats = session.session.stats
    assert stats.frames_in == 25 and stats.frames_other_in == 25
    assert stats.frames_ignored == 0 and stats.frames_reordered >= 1
    # The reordered track is continuous: no fill, no jump (a swap put back in place).
    assert stats.frames_filled == 0


def test_without_listen_only_the_outbound_track_is_our_own_playback() -> None:
    session = RecordedSession(call_info(), now=0.0)
    [payload] = _payloads(1000, 1)
    assert session.receive_event(AudioReceived(payload, PCMU_8K, "outbound", chunk=1), 0.0) == []
    assert session.session.stats.frames_ignored == 1


def test_a_lost_frame_on_the_other_track_is_filled_when_its_wait_runs_out() -> None:
    session = RecordedSession(call_info(), now=0.0, listen_only=True, reorder_window=3)
    other = _payloads(1000, 3)
    out = session.receive_event(AudioReceived(other[0], PCMU_8K, "outbound", chunk=1), 0.0)
    out += session.receive_event(AudioReceived(other[2], PCMU_8K, "outbound", chunk=3), 0.02)
    deadline = session.session.next_deadline()
    assert deadline is not None
    _, events = session.poll(deadline + 0.001)
    out += events
    frames = [f for f in out if isinstance(f, InboundAudio)]
    assert all(f.track == OTHER_TRACK for f in frames)
    assert any(f.filled for f in frames) and session.session.stats.frames_filled == 1
