"""Checks of a recording made by ``mediastream serve --record`` of a probe call.

Shared by the recording tests and ``python -m bench record``: a recording is *complete*
when it is a standard 16-bit stereo PCM WAV whose header covers exactly the bytes in the
file and whose sidecar says ``complete``; it is *right* when the left channel holds the
caller's tone probes at the times the caller sent them (the probe plan: ``lead_ms`` then
one burst every ``period_ms``) and the right channel the echoed bursts, each one shortly
after its probe and at its frequency.
"""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mediastream.caller.audio import FRAME_MS, ProbeConfig, probe_plan
from mediastream.protocols.events import MediaFormat

__all__ = ["Recording", "check_echo_recording", "read_recording", "tone_onsets"]

#: Onset threshold (the probes are at half of full scale).
THRESHOLD = 3000


@dataclass
class Recording:
    rate: int
    left: npt.NDArray[np.int16]
    right: npt.NDArray[np.int16]
    sidecar: dict[str, object]


def read_recording(wav_path: Path) -> Recording:
    """Read a recording with Python's :mod:`wave` (and its sidecar, if any)."""
    with wave.open(str(wav_path), "rb") as w:
        assert w.getnchannels() == 2 and w.getsampwidth() == 2, (w.getnchannels(),
                                                                 w.getsampwidth())
        rate, n = w.getframerate(), w.getnframes()
        data = np.frombuffer(w.readframes(n), dtype="<i2").reshape(-1, 2)
    side = wav_path.with_suffix(".json")
    sidecar = json.loads(side.read_text()) if side.exists() else {}
    return Recording(rate, data[:, 0].copy(), data[:, 1].copy(), sidecar)


def tone_onsets(x: npt.NDArray[np.int16], rate: int, min_gap: float = 0.1) -> list[float]:
    """Seconds at which a burst starts (|x| over the threshold after ``min_gap`` quiet)."""
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > THRESHOLD)
    if not len(loud):
        return []
    starts = [int(loud[0])]
    gaps = np.flatnonzero(np.diff(loud) > min_gap * rate)
    starts += [int(loud[i + 1]) for i in gaps]
    return [s / rate for s in starts]


def _peak_hz(x: npt.NDArray[np.int16], rate: int) -> float:
    y = x.astype(np.float64) * np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(y))
    return float(np.argmax(spectrum[1:]) + 1) * rate / len(x)


def check_echo_recording(wav_path: Path, seconds: float, probe: ProbeConfig | None = None,
                         *, tolerance: float = 0.1, max_echo: float = 0.3) -> list[str]:
    """What is wrong with the recording of one echo-bot probe call (empty: nothing).

    ``tolerance``: how far a left onset may be from the caller's send time (the server's
    time zero is when *it* received ``start``); ``max_echo``: the longest the echo may
    follow its probe on the right channel.
    """
    cfg = probe or ProbeConfig()
    problems: list[str] = []
    size = wav_path.stat().st_size
    try:
        rec = read_recording(wav_path)
    except Exception as exc:  # a report, not a crash
        return [f"{wav_path.name}: unreadable ({exc})"]
    if 44 + 4 * len(rec.left) != size:
        problems.append(f"{wav_path.name}: header covers {44 + 4 * len(rec.left)} of {size} bytes")
    if rec.sidecar.get("complete") is not True:
        problems.append(f"{wav_path.name}: sidecar missing or not complete")
    rate = rec.rate
    tone = cfg.tone_ms / 1000
    plan = probe_plan(MediaFormat("pcmu", 8000), seconds, cfg)  # the caller's own plan
    expected = [p.frame * FRAME_MS / 1000 for p in plan.probes]
    left, right = tone_onsets(rec.left, rate), tone_onsets(rec.right, rate)
    if len(left) != len(expected):
        problems.append(f"{wav_path.name}: {len(left)} probes on the left, expected "
                        f"{len(expected)} ({left})")
    if len(right) != len(expected):
        problems.append(f"{wav_path.name}: {len(right)} echoes on the right, expected "
                        f"{len(expected)} ({right})")
    for k, (want, got_l, got_r) in enumerate(zip(expected, left, right, strict=False)):
        if abs(got_l - want) > tolerance:
            problems.append(f"{wav_path.name}: probe {k} on the left at {got_l:.3f} s, "
                            f"sent at {want:.3f} s")
        if not 0 <= got_r - got_l <= max_echo:
            problems.append(f"{wav_path.name}: echo {k} on the right at {got_r:.3f} s, "
                            f"probe at {got_l:.3f} s")
        hz = cfg.frequencies[k % len(cfg.frequencies)]
        for name, x, at in (("left", rec.left, got_l), ("right", rec.right, got_r)):
            a = int(at * rate) + rate // 100
            seg = x[a : a + int((tone - 0.03) * rate)]
            if len(seg) < rate // 20 or abs(_peak_hz(seg, rate) - hz) > 30:
                problems.append(f"{wav_path.name}: burst {k} on the {name} is not {hz} Hz")
    return problems
