"""Measurements taken from what one simulated caller sent and heard.

Definitions (all times on the caller's monotonic clock):

* **latency** (probe mode): from the moment the first frame of a probe tone was sent to
  the first sample of that tone in the returned audio. The onset is the first sample whose
  magnitude exceeds ``threshold × amplitude`` (the same detector, applied to the sent tone,
  gives the offset subtracted on the sending side), found in the heard audio and timed on
  the *returned-audio timeline*: the arrival time of the message that carried it plus the
  sample's offset inside that message, so the figure is exact to a sample. Each returned
  burst is matched to its probe by frequency (Goertzel over its first 10 ms) and order.
* **playout queue**: how long that onset then waited in the provider's playout buffer
  behind earlier audio (play time minus returned time). It is zero when the server's
  audio arrives in real time; it grows when a server sends ahead of real time, or when a
  late message made the playout slip and every later one queued behind it.
* **response time** (speech mode): from the end of a caller utterance (send time of its
  last voiced frame + 20 ms) to the onset of the first heard audio that starts after it
  and before the caller speaks again.
* **lost**: per probe, tone milliseconds that never came back: the share of the sent
  tone's above-threshold samples missing from the heard tone of the same frequency, from
  its onset to half a pause after its nominal end, times the tone length; a probe with no
  matching burst is all lost. Tone that was only late still counts: a playout gap (the
  buffer ran dry) inside the tone pushes its end back by the gap's length, so the rest
  of a tone that came back late, however late, is found after the gap (the gap is an
  underrun, not a loss).
  Only probes the caller finished sending and then listened to for ``tail_ms`` count.
* **jitter**: the standard deviation of one call's probe latencies (the caller-audible
  jitter); the run figure pools calls (root mean square of the per-call values).
* **underrun**: the playout buffer ran dry for longer than ``underrun_tolerance`` (and at
  most ``underrun_limit``: a longer silence is the bot's turn ending, however abruptly)
  while audio was sounding (the 10 ms before the gap were not silent): a cut in the sound.
* **clear-to-silence**: from a clear to the first 20 ms of silence in the heard audio.
  Everything queued is dropped at the clear, so what is heard after it was sent after it:
  stale audio a server keeps sending after its own barge-in clear shows up here (so does
  a new utterance a bot starts at once, e.g. a goodbye after a key press).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .audio import FRAME_MS, SendPlan
from .playout import Gap

ReturnedTime = Callable[[npt.NDArray[np.int64]], npt.NDArray[np.float64]]

__all__ = ["CallMeasurements", "measure"]

SILENCE_LEVEL = 32768 * 10 ** (-40 / 20)  # -40 dBFS


@dataclass(slots=True)
class CallMeasurements:
    """The figures derived from one call's audio."""

    latencies_ms: list[float] = field(default_factory=list)
    #: Send time of each measured probe/utterance, seconds from the call's reference time.
    latency_times_s: list[float] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)
    probes_counted: int = 0
    probes_matched: int = 0
    lost_ms: float | None = None
    underruns: int = 0
    underrun_ms: float = 0.0
    clear_to_silence_ms: list[float] = field(default_factory=list)

    def add_match(self, sent: float, returned: float, played: float, at: float) -> None:
        """One matched probe/utterance: ``sent`` and ``at`` (its send time, from the call's
        reference time) on the caller's clock, ``returned``/``played`` its onset on the
        returned-audio timeline and on the playout grid (seconds)."""
        self.probes_matched += 1
        self.latencies_ms.append((returned - sent) * 1000)
        self.queue_ms.append((played - returned) * 1000)
        self.latency_times_s.append(at)

    @property
    def jitter_ms(self) -> float | None:
        if len(self.latencies_ms) < 2:
            return None
        return float(np.std(self.latencies_ms))


def _runs(
    active: npt.NDArray[np.bool_], fill: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Start/end indices of active runs, merging gaps shorter than ``fill`` samples."""
    idx = np.flatnonzero(active)
    if not len(idx):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    breaks = np.flatnonzero(np.diff(idx) > fill)
    starts = idx[np.concatenate(([0], breaks + 1))]
    ends = idx[np.concatenate((breaks, [len(idx) - 1]))] + 1
    return starts.astype(np.int64), ends.astype(np.int64)


def _goertzel_class(x: npt.NDArray[np.float64], rate: int, freqs: tuple[int, ...]) -> int:
    t = np.arange(len(x)) / rate
    powers = [abs(np.dot(x, np.exp(-2j * np.pi * f * t))) for f in freqs]
    return int(np.argmax(powers))


def measure(
    plan: SendPlan,
    send_times: npt.NDArray[np.float64],
    frames_sent: int,
    heard: npt.NDArray[np.int16],
    rate: int,
    t_ref: float,
    listen_end: float,
    gaps: list[Gap],
    clears: list[int],
    returned_time: ReturnedTime,
    *,
    underrun_tolerance: float = 0.002,
    underrun_limit: float = 1.0,
) -> CallMeasurements:
    """Measure one call. ``send_times[j]`` is when frame j was sent (absolute, seconds);
    ``heard`` is on a grid of ``rate`` starting at ``t_ref``; the caller listened until
    ``listen_end``; ``returned_time`` maps grid indices to the returned-audio timeline."""
    m = CallMeasurements()
    x = heard.astype(np.float64)
    if plan.kind == "probe":
        _measure_probes(
            m, plan, send_times, frames_sent, x, rate, t_ref, listen_end, returned_time, gaps
        )
    else:
        _measure_speech(m, plan, send_times, frames_sent, x, rate, t_ref, returned_time)
    loud = np.abs(x) > SILENCE_LEVEL
    window = rate // 100  # 10 ms
    for gap in gaps:
        if not underrun_tolerance < gap.seconds <= underrun_limit:
            continue
        if loud[max(0, gap.index - window) : gap.index].any():
            m.underruns += 1
            m.underrun_ms += gap.seconds * 1000
    if clears:
        w = rate * FRAME_MS // 1000
        padded = np.concatenate((loud, np.zeros(w, dtype=bool)))
        csum = np.concatenate(([0], np.cumsum(padded)))
        quiet = np.flatnonzero(csum[w:] - csum[:-w] == 0)
        for c in clears:
            k = np.searchsorted(quiet, max(c, 0))
            if k < len(quiet):
                m.clear_to_silence_ms.append(float((quiet[k] - c) * 1000 / rate))
    return m


def _measure_probes(
    m: CallMeasurements,
    plan: SendPlan,
    send_times: npt.NDArray[np.float64],
    frames_sent: int,
    x: npt.NDArray[np.float64],
    rate: int,
    t_ref: float,
    listen_end: float,
    returned_time: ReturnedTime,
    gaps: list[Gap],
) -> None:
    cfg = plan.probe
    assert cfg is not None
    threshold = cfg.threshold * cfg.amplitude * 32767
    # Offset of the detector's first crossing inside the sent tone (seconds), per tone.
    spf_in = plan.samples_per_frame
    # and the tone's length as the same detector sees it (heard samples, per tone).
    offsets: list[float] = []
    lengths: list[int] = []
    counts: list[float] = []
    for probe in plan.probes[: len(cfg.frequencies)]:
        sent = plan.pcm[probe.frame * spf_in : (probe.frame + probe.frames) * spf_in]
        over = np.flatnonzero(np.abs(sent) > threshold)
        first, last = (int(over[0]), int(over[-1]) + 1) if len(over) else (0, len(sent))
        offsets.append(first / plan.fmt.sample_rate)
        lengths.append(round((last - first) * rate / plan.fmt.sample_rate))
        # Samples above the threshold: what a complete copy of this tone shows the detector.
        counts.append(len(over) * rate / plan.fmt.sample_rate)
    loud = np.abs(x) > threshold
    starts, ends = _runs(loud, fill=rate * 3 // 1000)
    play_times = t_ref + starts / rate
    start_times = returned_time(starts)
    classes: dict[int, int] = {}

    def _class(k: int) -> int:
        if k not in classes:
            seg = x[starts[k] : min(ends[k], starts[k] + rate // 100)]
            classes[k] = _goertzel_class(seg, rate, cfg.frequencies)
        return classes[k]
    used: set[int] = set()
    # Playout gaps in grid order: (index where the buffer ran dry, samples until audio).
    dry = sorted((g.index, round(g.seconds * rate)) for g in gaps)
    dry_at = [index for index, _ in dry]
    tone_s = cfg.tone_ms / 1000
    # Tone that arrives late still counts, up to half a pause after its end (an end that
    # playout gaps inside the tone push back: see the loop).
    slack_n = (cfg.period_ms - cfg.tone_ms) * rate // 2000
    max_latency = len(cfg.frequencies) * cfg.period_ms / 1000 - tone_s
    lost_ms = 0.0
    for probe in plan.probes:
        last = probe.frame + probe.frames - 1
        if last >= frames_sent:
            break
        origin = float(send_times[probe.frame]) + offsets[probe.tone]
        # Count it only if the caller listened for the tail after its last frame went out.
        if float(send_times[last]) + (FRAME_MS + cfg.tail_ms) / 1000 > listen_end + 0.002:
            break
        m.probes_counted += 1
        k = int(np.searchsorted(start_times, origin - 0.001))
        match = None
        while k < len(starts) and start_times[k] < origin + max_latency:
            if k not in used and _class(k) == probe.tone:
                match = k
                break
            k += 1
        if match is None:
            lost_ms += cfg.tone_ms
            continue
        used.add(match)
        m.add_match(origin, start_times[match], play_times[match], origin - t_ref)
        # Count the tone's loud samples (not its span: playout gaps are late, not lost)
        # against a complete copy's count. A gap that opens before the tone's end (so
        # inside it) pushes that end, and the window, back by its length.
        end = int(starts[match]) + lengths[probe.tone]
        g = bisect.bisect_left(dry_at, int(starts[match]))
        while g < len(dry) and dry[g][0] < end:
            end += dry[g][1]
            g += 1
        hi = end + slack_n
        j = match
        heard_n = 0
        while j < len(starts) and starts[j] < hi:
            if j == match or _class(j) == probe.tone:
                heard_n += int(np.count_nonzero(loud[starts[j] : min(ends[j], hi)]))
                used.add(j)
            j += 1
        expected = counts[probe.tone]
        lost_ms += max(0.0, (expected - heard_n) / expected * cfg.tone_ms)
    m.lost_ms = lost_ms


def _measure_speech(
    m: CallMeasurements,
    plan: SendPlan,
    send_times: npt.NDArray[np.float64],
    frames_sent: int,
    x: npt.NDArray[np.float64],
    rate: int,
    t_ref: float,
    returned_time: ReturnedTime,
) -> None:
    # Bot speech: runs above -40 dBFS, gaps under 50 ms merged, at least 60 ms long.
    starts, ends = _runs(np.abs(x) > SILENCE_LEVEL, fill=rate // 20)
    keep = (ends - starts) >= rate * 60 // 1000
    play_times = t_ref + starts[keep] / rate
    start_times = returned_time(starts[keep])
    for n, (first, end) in enumerate(plan.utterances):
        if end > frames_sent:
            break
        t_end = float(send_times[end - 1]) + FRAME_MS / 1000
        if n + 1 < len(plan.utterances) and plan.utterances[n + 1][0] < frames_sent:
            t_next = float(send_times[plan.utterances[n + 1][0]])
        else:
            t_next = float("inf")
        k = int(np.searchsorted(start_times, t_end))
        m.probes_counted += 1
        if k < len(start_times) and start_times[k] < t_next:
            m.add_match(t_end, start_times[k], play_times[k], float(send_times[first]) - t_ref)
