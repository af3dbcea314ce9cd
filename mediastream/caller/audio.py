"""What the simulated caller says, and the codec glue for what it hears.

Two kinds of caller audio:

* the **probe pattern** (default): tone bursts of ``tone_ms`` every ``period_ms``, cycling
  through a few frequencies so each returned burst can be matched to the probe that caused
  it even when the round trip exceeds one period. Every frequency has a whole number of
  cycles per 20 ms frame and starts at phase 0, so each tone frame is identical and its
  first sample is a zero crossing: the onset is exact to a sample.
* **speech** from a WAV file (``--wav``), split into utterances by energy so the bot's
  response time after each utterance can be measured.

Frames are encoded and base64'd once per plan; calls share the resulting byte strings.
"""

from __future__ import annotations

import base64
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from audiocodecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from audiocodecs.pcm import l16be_decode, l16be_encode, l16le_decode, l16le_encode
from mediastream.protocols.events import MediaFormat

__all__ = [
    "FRAME_MS",
    "OTHER_PARTY_HZ",
    "ProbeConfig",
    "SendPlan",
    "decode",
    "encode",
    "other_party_frames",
    "probe_plan",
    "read_wav",
    "speech_plan",
    "write_wav",
]

Int16Array = npt.NDArray[np.int16]
FRAME_MS = 20


def decode(payload: bytes, fmt: MediaFormat) -> Int16Array:
    """Decode ``payload`` in ``fmt`` to int16 samples."""
    if fmt.encoding == "pcmu":
        return ulaw_decode(payload)
    if fmt.encoding == "pcma":
        return alaw_decode(payload)
    if len(payload) % 2:
        payload = payload[:-1]
    return l16be_decode(payload) if fmt.byteorder == "big" else l16le_decode(payload)


def encode(pcm: Int16Array, fmt: MediaFormat) -> bytes:
    """Encode int16 samples in ``fmt``."""
    if fmt.encoding == "pcmu":
        return ulaw_encode(pcm).tobytes()
    if fmt.encoding == "pcma":
        return alaw_encode(pcm).tobytes()
    return l16be_encode(pcm) if fmt.byteorder == "big" else l16le_encode(pcm)


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """The probe pattern. Times in ms, multiples of 20; ``amplitude`` of full scale."""

    tone_ms: int = 200
    period_ms: int = 500
    lead_ms: int = 200
    #: Silence at the end of the call so the last probes can come back before hang-up.
    tail_ms: int = 600
    amplitude: float = 0.5
    #: Whole cycles per 20 ms frame (multiples of 50 Hz), inside the telephone band.
    frequencies: tuple[int, ...] = (600, 1000, 1400, 1800)
    #: Onset threshold as a fraction of ``amplitude``.
    threshold: float = 0.2

    def __post_init__(self) -> None:
        for name in ("tone_ms", "period_ms", "lead_ms", "tail_ms"):
            if getattr(self, name) % FRAME_MS or getattr(self, name) < 0:
                raise ValueError(f"probe {name} must be a non-negative multiple of 20 ms")
        if self.tone_ms <= 0 or self.period_ms <= self.tone_ms:
            raise ValueError("probe period must be longer than the tone")
        if any(f % 50 or not 300 <= f <= 3400 for f in self.frequencies):
            raise ValueError("probe frequencies must be multiples of 50 Hz in 300..3400")


@dataclass(frozen=True, slots=True)
class Probe:
    """One tone burst: first frame index, length in frames, index into the frequencies."""

    frame: int
    frames: int
    tone: int


@dataclass(slots=True)
class SendPlan:
    """Everything one call sends, frame by frame, in one inbound format.

    ``frames[j]`` is frame j's base64 payload (ASCII bytes); ``pcm`` the sent signal as
    the server decodes it (after the codec), for analysis and recordings.
    """

    kind: str  # "probe" | "speech"
    fmt: MediaFormat
    frames: list[bytes]
    pcm: Int16Array
    probes: list[Probe] = field(default_factory=list)
    #: Speech mode: (first frame, end frame) of each caller utterance.
    utterances: list[tuple[int, int]] = field(default_factory=list)
    probe: ProbeConfig | None = None

    @property
    def samples_per_frame(self) -> int:
        return self.fmt.sample_rate * FRAME_MS // 1000

    @property
    def last_signal_frame(self) -> int | None:
        """The last frame of the last probe or utterance (``None``: nothing to measure)."""
        if self.probes:
            last = self.probes[-1]
            return last.frame + last.frames - 1
        if self.utterances:
            return self.utterances[-1][1] - 1
        return None

    @property
    def listen_s(self) -> float:
        """How long the caller listens after the last probe/utterance before hanging up."""
        return (self.probe.tail_ms if self.probe else 600) / 1000


def _frames_b64(pcm: Int16Array, fmt: MediaFormat) -> tuple[list[bytes], Int16Array]:
    spf = fmt.sample_rate * FRAME_MS // 1000
    encoded = encode(pcm, fmt)
    bps = fmt.bytes_per_sample
    cache: dict[bytes, bytes] = {}
    frames: list[bytes] = []
    for j in range(len(pcm) // spf):
        raw = encoded[j * spf * bps : (j + 1) * spf * bps]
        b64 = cache.get(raw)
        if b64 is None:
            b64 = cache[raw] = base64.b64encode(raw)
        frames.append(b64)
    return frames, decode(encoded, fmt)


#: The other party of a both-tracks call (``--tracks both``) is a steady tone at this
#: frequency: outside the probe set, so each track is told apart by its spectrum alone.
OTHER_PARTY_HZ = 2200


def other_party_frames(fmt: MediaFormat, seconds: float) -> list[bytes]:
    """The outbound track of a both-tracks stream (what the caller hears from the far
    end of a ``<Dial>``): ``OTHER_PARTY_HZ`` at a quarter of full scale, base64 per frame."""
    spf = fmt.sample_rate * FRAME_MS // 1000
    n = round(seconds * 1000 / FRAME_MS) * spf
    t = np.arange(n) / fmt.sample_rate
    pcm = np.round(0.25 * 32767 * np.sin(2 * np.pi * OTHER_PARTY_HZ * t)).astype(np.int16)
    return _frames_b64(pcm, fmt)[0]


def probe_plan(fmt: MediaFormat, seconds: float, config: ProbeConfig | None = None) -> SendPlan:
    """The probe pattern for a call of ``seconds`` in ``fmt``."""
    cfg = config or ProbeConfig()
    spf = fmt.sample_rate * FRAME_MS // 1000
    n_frames = round(seconds * 1000 / FRAME_MS)
    last_start = n_frames - (cfg.tail_ms + cfg.tone_ms) // FRAME_MS
    pcm = np.zeros(n_frames * spf, dtype=np.int16)
    t = np.arange(cfg.tone_ms * fmt.sample_rate // 1000) / fmt.sample_rate
    amp = cfg.amplitude * 32767
    tones = [np.round(amp * np.sin(2 * np.pi * f * t)).astype(np.int16) for f in cfg.frequencies]
    probes: list[Probe] = []
    frame = cfg.lead_ms // FRAME_MS
    while frame <= last_start:
        k = len(probes) % len(tones)
        pcm[frame * spf : frame * spf + len(tones[k])] = tones[k]
        probes.append(Probe(frame, cfg.tone_ms // FRAME_MS, k))
        frame += cfg.period_ms // FRAME_MS
    if not probes:
        raise ValueError(
            f"a {seconds:g} s call is too short for one probe "
            f"(lead {cfg.lead_ms} + tone {cfg.tone_ms} + tail {cfg.tail_ms} ms)"
        )
    frames, sent = _frames_b64(pcm, fmt)
    return SendPlan("probe", fmt, frames, sent, probes=probes, probe=cfg)


def read_wav(path: str | Path) -> tuple[Int16Array, int]:
    """Mono int16 samples and the rate of a PCM WAV file (channels are averaged)."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a PCM WAV file ({exc})") from None
    if width == 1:
        data = (np.frombuffer(raw, np.uint8).astype(np.int32) - 128) << 8
    elif width == 2:
        data = np.frombuffer(raw, "<i2").astype(np.int32)
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        data = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8) >> 16
    elif width == 4:
        data = (np.frombuffer(raw, "<i4") >> 16).astype(np.int32)
    else:
        raise ValueError(f"{path}: unsupported sample width {width}")
    mono = data.reshape(-1, channels).mean(axis=1)
    return np.clip(np.round(mono), -32768, 32767).astype(np.int16), rate


def write_wav(path: str | Path, pcm: Int16Array, rate: int) -> None:
    """Write mono int16 ``pcm`` at ``rate`` as a 16-bit PCM WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype("<i2").tobytes())


def speech_plan(
    fmt: MediaFormat,
    seconds: float,
    pcm: Int16Array,
    rate: int,
    *,
    start_s: float = 0.0,
    silence_dbfs: float = -40.0,
    min_gap_ms: int = 400,
) -> SendPlan:
    """Caller speech from ``pcm`` at ``rate``, starting ``start_s`` into the call, cut or
    padded with silence to ``seconds``."""
    if rate != fmt.sample_rate:
        from audiocodecs.resample import resample

        pcm = resample(pcm, rate, fmt.sample_rate)
    spf = fmt.sample_rate * FRAME_MS // 1000
    n_frames = round(seconds * 1000 / FRAME_MS)
    signal = np.zeros(n_frames * spf, dtype=np.int16)
    offset = min(len(signal), round(start_s * fmt.sample_rate))
    n = min(len(pcm), len(signal) - offset)
    signal[offset : offset + n] = pcm[:n]
    frames, sent = _frames_b64(signal, fmt)
    rms = np.sqrt(np.mean(sent.reshape(-1, spf).astype(np.float64) ** 2, axis=1))
    active = rms > 32768 * 10 ** (silence_dbfs / 20)
    utterances: list[tuple[int, int]] = []
    gap = min_gap_ms // FRAME_MS
    for j in np.flatnonzero(active):
        if utterances and j - utterances[-1][1] < gap:
            utterances[-1] = (utterances[-1][0], int(j) + 1)
        else:
            utterances.append((int(j), int(j) + 1))
    # Ignore clicks: an utterance is at least 100 ms of speech.
    utterances = [u for u in utterances if u[1] - u[0] >= 5]
    return SendPlan("speech", fmt, frames, sent, utterances=utterances)
