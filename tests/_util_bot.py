"""Helpers for the bot tests: timeouts, tones, and an in-memory :class:`Call`.

:class:`MemoryCall` implements the bot-facing ``Call`` contract the way the session
does, with a real-time playout ledger (audio "plays" at its real duration after it is
queued), so the transport can be driven without a server.
"""

from __future__ import annotations

import asyncio
import os
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mediastream.call import (
    Call,
    CallEnded,
    CallEvent,
    DtmfPressed,
    InboundAudio,
    PlayoutStarted,
    PlayoutStopped,
)
from mediastream.protocols.events import PCMU_8K, CallInfo

ASSETS = Path(__file__).resolve().parent.parent / "bot" / "assets"


def scaled(seconds: float) -> float:
    """A timeout scaled by MEDIASTREAM_TEST_TIMEOUT_SCALE (see tests/conftest.py)."""
    try:
        scale = max(0.1, float(os.environ.get("MEDIASTREAM_TEST_TIMEOUT_SCALE", "1")))
    except ValueError:
        scale = 1.0
    return seconds * scale


def tone(freq: float, seconds: float, rate: int, level: float = 0.3) -> bytes:
    """A sine tone as int16 LE PCM."""
    t = np.arange(round(seconds * rate)) / rate
    return np.round(np.sin(2 * np.pi * freq * t) * level * 32767).astype("<i2").tobytes()


def load_wav(name: str) -> tuple[bytes, int]:
    """A committed asset's PCM and rate."""
    with wave.open(str(ASSETS / name)) as w:
        return w.readframes(w.getnframes()), w.getframerate()


def frames_of(pcm: bytes, rate: int, ms: int = 20) -> list[bytes]:
    """Cut PCM into ``ms`` frames (the last one may be short)."""
    step = rate * ms // 1000 * 2
    return [pcm[i:i + step] for i in range(0, len(pcm), step)]


def make_info(provider: str = "twilio", **custom: str) -> CallInfo:
    return CallInfo(
        provider=provider,  # type: ignore[arg-type]
        call_id="CA-test",
        stream_id="MZ-test",
        inbound_format=PCMU_8K,
        outbound_format=PCMU_8K,
        from_number="+15550001111",
        to_number="+15550002222",
        custom_parameters=custom,
    )


@dataclass
class Sent:
    pcm: bytes
    rate: int
    at: float


@dataclass
class MemoryCall(Call):
    """A Call whose caller is the test: ``feed``/``press``/``end``, and records of output."""

    info: CallInfo = field(default_factory=make_info)
    sample_rate: int = 16000
    sent: list[Sent] = field(default_factory=list)
    utterance_ends: list[float] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    dtmf_sent: list[str] = field(default_factory=list)
    hangups: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._events: asyncio.Queue[CallEvent] = asyncio.Queue()
        self._ended: CallEnded | None = None
        self._play_until = 0.0
        self._speaking = False
        self._stop_timer: asyncio.TimerHandle | None = None
        self._utterance_start = 0.0
        self._played_cond = asyncio.Event()
        self._played_cond.set()

    # ---------------------------------------------------------------- caller side

    def feed(self, pcm: bytes) -> None:
        for chunk in frames_of(pcm, self.sample_rate):
            self._events.put_nowait(InboundAudio(chunk, self.sample_rate))

    async def feed_realtime(self, pcm: bytes) -> None:
        """Feed 20 ms frames at real-time pace, as a provider does."""
        start = time.monotonic()
        for i, chunk in enumerate(frames_of(pcm, self.sample_rate)):
            self._events.put_nowait(InboundAudio(chunk, self.sample_rate))
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))

    def press(self, digit: str) -> None:
        self._events.put_nowait(DtmfPressed(digit))

    def end(self, reason: str = "stop") -> None:
        self._finish(reason)

    def sent_pcm(self) -> bytes:
        return b"".join(s.pcm for s in self.sent)

    # ------------------------------------------------------------------ Call API

    async def receive(self) -> CallEvent:
        if self._ended is not None and self._events.empty():
            return self._ended
        return await self._events.get()

    def send_audio(self, pcm: bytes, sample_rate: int) -> None:
        assert isinstance(pcm, bytes | bytearray | memoryview), type(pcm)
        assert len(pcm) % 2 == 0
        if self._ended is not None:
            return
        now = time.monotonic()
        self.sent.append(Sent(bytes(pcm), sample_rate, now))
        self._play_until = max(self._play_until, now) + len(pcm) / 2 / sample_rate
        self._played_cond.clear()
        if not self._speaking:
            self._speaking = True
            self._utterance_start = now
            self._events.put_nowait(PlayoutStarted())
        self._arm()

    def _arm(self) -> None:
        if self._stop_timer is not None:
            self._stop_timer.cancel()
        delay = max(0.0, self._play_until - time.monotonic())
        self._stop_timer = asyncio.get_running_loop().call_later(delay, self._played)

    def _played(self) -> None:
        self._stop_timer = None
        if self._speaking:
            self._speaking = False
            self._events.put_nowait(PlayoutStopped(time.monotonic() - self._utterance_start))
        self._played_cond.set()

    def end_utterance(self) -> None:
        self.utterance_ends.append(time.monotonic())

    def clear(self) -> None:
        self.clears.append(time.monotonic())
        if self._stop_timer is not None:
            self._stop_timer.cancel()
            self._stop_timer = None
        self._play_until = 0.0
        if self._speaking:
            self._speaking = False
            self._events.put_nowait(
                PlayoutStopped(time.monotonic() - self._utterance_start, cut=True))
        self._played_cond.set()

    async def wait_played(self, timeout: float | None = None) -> bool:
        if self._ended is not None:
            return False
        try:
            await asyncio.wait_for(self._played_cond.wait(), timeout)
        except TimeoutError:
            return False
        return self._ended is None

    def send_dtmf(self, digits: str) -> None:
        self.dtmf_sent.append(digits)

    async def hangup(self, reason: str = "bot") -> None:
        self.hangups.append((reason, time.monotonic()))
        self._finish("hangup")

    def _finish(self, reason: str) -> None:
        if self._ended is None:
            self._ended = CallEnded(reason)
            if self._stop_timer is not None:
                self._stop_timer.cancel()
            self._played_cond.set()
            self._events.put_nowait(self._ended)

    @property
    def bot_speaking(self) -> bool:
        return self._speaking

    @property
    def ended(self) -> bool:
        return self._ended is not None
