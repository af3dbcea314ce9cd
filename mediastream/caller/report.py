"""Per-call and per-run results of the simulated caller, and their JSON form.

``RunReport.to_dict()`` is what ``mediastream call --json`` prints: one object per run
with ``calls``, ``latency_ms`` {p50, p95, p99, max}, ``lost_ms_per_call``, ``jitter_ms``,
``underruns``, ``handshake_failures`` and the generator's own ``send_lag_ms`` (so a
saturated load generator is never mistaken for a slow server), plus per-call summaries.

``latency_ms`` is timed on the returned-audio timeline (when the onset reached the
caller); ``playout_queue_ms`` is how long it then waited in the provider's playout buffer
behind earlier audio, and ``audible_latency_ms`` is the sum: when the caller heard it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["CallReport", "RunReport", "summarize"]


def summarize(values: list[float] | npt.NDArray[np.float64]) -> dict[str, float | int | None]:
    """``count``, ``p50``, ``p95``, ``p99``, ``max`` and ``mean`` of ``values`` (ms)."""
    arr = np.asarray(values, dtype=np.float64)
    if not arr.size:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "count": int(arr.size),
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "max": round(float(arr.max()), 3),
        "mean": round(float(arr.mean()), 3),
    }


@dataclass(slots=True)
class CallReport:
    """What happened on one simulated call."""

    index: int
    provider: str
    call_id: str = ""
    stream_url: str = ""
    handshake_failed: bool = False
    failure: str | None = None
    #: completed | server_closed | aborted | half_open | failed
    end: str = "failed"
    close_code: int | None = None
    close_reason: str = ""
    started_at: float = 0.0  # seconds since the run started
    #: When the stream started (the WebSocket open, the caller sent ``start``), seconds
    #: since the run started: time zero of the caller's recording, and of the server's
    #: ``--record`` file of the same call one network delay later (README).
    opened_at: float = 0.0
    duration_s: float = 0.0
    frames_sent: int = 0
    frames_received: int = 0
    latency_kind: str = "probe_round_trip"
    latencies_ms: list[float] = field(default_factory=list)
    latency_times_s: list[float] = field(default_factory=list)
    #: Per measured onset: time it then waited in the playout buffer (ms).
    queue_ms: list[float] = field(default_factory=list)
    probes: int = 0
    probes_returned: int = 0
    lost_ms: float | None = None
    jitter_ms: float | None = None
    interarrival_jitter_ms: float | None = None
    underruns: int = 0
    underrun_ms: float = 0.0
    clear_to_silence_ms: list[float] = field(default_factory=list)
    marks_received: int = 0
    marks_acknowledged: int = 0
    clears: int = 0
    dtmf_sent: str = ""
    dtmf_received: str = ""
    protocol_errors: int = 0
    protocol_error_samples: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    halfopen_detected_ms: float | None = None
    send_lag_ms: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.zeros(0, dtype=np.float64)
    )
    recording: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no raw sample arrays)."""
        lat = summarize(self.latencies_ms)
        queue = summarize(self.queue_ms)
        return {
            "index": self.index,
            "call_id": self.call_id,
            "end": self.end,
            "failure": self.failure,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "started_at_s": round(self.started_at, 3),
            "opened_at_s": round(self.opened_at, 3),
            "duration_s": round(self.duration_s, 3),
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
            "probes": self.probes,
            "probes_returned": self.probes_returned,
            "latency_ms": {k: lat[k] for k in ("p50", "p99", "max")},
            "playout_queue_ms": {k: queue[k] for k in ("p50", "max")},
            "lost_ms": _r(self.lost_ms),
            "jitter_ms": _r(self.jitter_ms),
            "interarrival_jitter_ms": _r(self.interarrival_jitter_ms),
            "underruns": self.underruns,
            "underrun_ms": round(self.underrun_ms, 3),
            "clear_to_silence_ms": [round(v, 3) for v in self.clear_to_silence_ms],
            "marks_received": self.marks_received,
            "marks_acknowledged": self.marks_acknowledged,
            "clears": self.clears,
            "dtmf_sent": self.dtmf_sent,
            "dtmf_received": self.dtmf_received,
            "protocol_errors": self.protocol_errors,
            "protocol_error_samples": self.protocol_error_samples,
            "warnings": self.warnings,
            "halfopen_detected_ms": _r(self.halfopen_detected_ms),
            "recording": self.recording,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(slots=True)
class RunReport:
    """All calls of one run, and the figures over them."""

    url: str
    provider: str
    seconds: float
    calls: list[CallReport]
    wall_s: float = 0.0
    faults: list[str] = field(default_factory=list)
    limits: dict[str, float] = field(default_factory=dict)
    #: Which latency ``max_p99_ms`` gates and ``--plot`` draws: ``audible`` (what the
    #: caller hears: arrival plus the wait in the provider's playout buffer) or
    #: ``round-trip`` (arrival only).
    gate: str = "audible"
    #: What the run is called in summaries and plots (``--label``; default: the URL).
    label: str = ""

    @property
    def name(self) -> str:
        """The run's label, else its URL."""
        return self.label or self.url

    @property
    def gated_ms(self) -> list[float]:
        """The latencies the gate and the plot use (see :attr:`gate`)."""
        return self.latencies_ms if self.gate == "round-trip" else self.audible_ms

    @property
    def closes(self) -> dict[str, int]:
        """How the calls' WebSockets closed: ``"1000 'bot finished'"`` -> count."""
        out: dict[str, int] = {}
        for c in self.calls:
            if c.handshake_failed:
                continue
            key = "none" if c.close_code is None else f"{c.close_code} {c.close_reason!r}"
            out[key] = out.get(key, 0) + 1
        return out

    @property
    def latency_kind(self) -> str:
        kinds = {c.latency_kind for c in self.calls}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def latencies_ms(self) -> list[float]:
        return [v for c in self.calls for v in c.latencies_ms]

    @property
    def audible_ms(self) -> list[float]:
        """Latency plus the playout-queue wait: when the caller actually heard each onset."""
        return [v + q for c in self.calls for v, q in zip(c.latencies_ms, c.queue_ms, strict=True)]

    @property
    def handshake_failures(self) -> int:
        return sum(c.handshake_failed for c in self.calls)

    @property
    def connected(self) -> int:
        return sum(not c.handshake_failed for c in self.calls)

    @property
    def lost_ms_per_call(self) -> float | None:
        lost = [c.lost_ms for c in self.calls if c.lost_ms is not None]
        return float(np.mean(lost)) if lost else None

    @property
    def lost_ms_max(self) -> float | None:
        lost = [c.lost_ms for c in self.calls if c.lost_ms is not None]
        return float(max(lost)) if lost else None

    @property
    def jitter_ms(self) -> float | None:
        values = [c.jitter_ms for c in self.calls if c.jitter_ms is not None]
        return math.sqrt(float(np.mean(np.square(values)))) if values else None

    @property
    def underruns(self) -> int:
        return sum(c.underruns for c in self.calls)

    @property
    def send_lag_ms(self) -> npt.NDArray[np.float64]:
        arrays = [c.send_lag_ms for c in self.calls if c.send_lag_ms.size]
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.float64)

    def violations(self) -> list[str]:
        """Which ``limits`` (max_p99_ms on the :attr:`gate`'s latency, max_lost_ms) the
        run broke; empty if none."""
        broken: list[str] = []
        p99 = summarize(self.gated_ms)["p99"]
        max_p99 = self.limits.get("max_p99_ms")
        if max_p99 is not None:
            if p99 is None:
                broken.append("no latency was measured")
            elif p99 > max_p99:
                broken.append(f"{self.gate} latency p99 {p99:.1f} ms > {max_p99:g} ms")
        max_lost = self.limits.get("max_lost_ms")
        if max_lost is not None:
            worst = self.lost_ms_max
            if worst is None:
                broken.append("no loss was measured")
            elif worst > max_lost:
                broken.append(f"worst call lost {worst:.0f} ms > {max_lost:g} ms")
        if self.limits and self.handshake_failures:
            broken.append(f"{self.handshake_failures} handshake failure(s)")
        return broken

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object."""
        lat = summarize(self.latencies_ms)
        lag = summarize(self.send_lag_ms)
        ctos = summarize([v for c in self.calls for v in c.clear_to_silence_ms])
        ia = [c.interarrival_jitter_ms for c in self.calls if c.interarrival_jitter_ms is not None]
        ends: dict[str, int] = {}
        for c in self.calls:
            ends[c.end] = ends.get(c.end, 0) + 1
        return {
            "url": self.url,
            "provider": self.provider,
            "calls": len(self.calls),
            "connected": self.connected,
            "handshake_failures": self.handshake_failures,
            "ends": ends,
            "seconds": self.seconds,
            "wall_s": round(self.wall_s, 3),
            "faults": self.faults,
            "label": self.label,
            "gate": self.gate,
            "closes": self.closes,
            "latency_kind": self.latency_kind,
            "latency_ms": lat,
            "playout_queue_ms": summarize([v for c in self.calls for v in c.queue_ms]),
            "audible_latency_ms": summarize(self.audible_ms),
            "probes": sum(c.probes for c in self.calls),
            "probes_returned": sum(c.probes_returned for c in self.calls),
            "lost_ms_per_call": _r(self.lost_ms_per_call),
            "lost_ms_max": _r(self.lost_ms_max),
            "jitter_ms": _r(self.jitter_ms),
            "interarrival_jitter_ms": summarize(ia),
            "underruns": self.underruns,
            "underrun_ms": round(sum(c.underrun_ms for c in self.calls), 3),
            "clear_to_silence_ms": ctos,
            "marks_received": sum(c.marks_received for c in self.calls),
            "marks_acknowledged": sum(c.marks_acknowledged for c in self.calls),
            "protocol_errors": sum(c.protocol_errors for c in self.calls),
            "send_lag_ms": {k: lag[k] for k in ("p50", "p99", "max")},
            "limits": self.limits,
            "violations": self.violations(),
            "per_call": [c.to_dict() for c in self.calls],
        }
