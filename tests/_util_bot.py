"""Helpers for the bot tests: timeouts, tones, and an in-memory :class:`Call`.

:class:`MemoryCall` implements the bot-facing ``Call`` contract the way the session
does, with a real-time playout ledger (audio "plays" at its real duration after it is
queued), so the transport can be driven without a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _util_timing import scaled as scaled  # re-exported for the tests

from mediastream.call import (
    Call,
    CallEnded,
    CallEvent,
    CallListener,
    DtmfPressed,
    InboundAudio,
    PlayoutStarted,
    PlayoutStopped,
)
from mediastream.errors import LocalProtocolError
from mediastream.protocols import protocol_for
from mediastream.protocols.events import LISTEN_ONLY, PCMU_8K, CallInfo, Capabilities

ASSETS = Path(__file__).resolve().parent.parent / "bot" / "assets"


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
    #: A listen-only call (both tracks, nothing sent back), as LiveCall makes one.
    listening: bool = False

    def __post_init__(self) -> None:
        self._events: asyncio.Queue[CallEvent] = asyncio.Queue()
        self._ended: CallEnded | None = None
        self._play_until = 0.0
        self._speaking = False
        self._stop_timer: asyncio.TimerHandle | None = None
        self._utterance_start = 0.0
        self._played_cond = asyncio.Event()
        self._played_cond.set()
        self._listener: CallListener | None = None

    def _put(self, event: CallEvent) -> None:
        # As LiveCall: to the listener if one is set (CallEnded also stays for receive()).
        if self._listener is not None:
            self._listener(event)
            if type(event) is not CallEnded:
                return
        self._events.put_nowait(event)

    # ---------------------------------------------------------------- caller side

    def feed(self, pcm: bytes, track: str = "caller") -> None:
        for chunk in frames_of(pcm, self.sample_rate):
            self._put(InboundAudio(chunk, self.sample_rate, track=track))

    async def feed_realtime(self, pcm: bytes) -> None:
        """Feed 20 ms frames at real-time pace, as a provider does."""
        start = time.monotonic()
        for i, chunk in enumerate(frames_of(pcm, self.sample_rate)):
            self._put(InboundAudio(chunk, self.sample_rate))
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))

    def press(self, digit: str) -> None:
        self._put(DtmfPressed(digit))

    def end(self, reason: str = "stop") -> None:
        self._finish(reason)

    def sent_pcm(self) -> bytes:
        return b"".join(s.pcm for s in self.sent)

    # ------------------------------------------------------------------ Call API

    async def receive(self) -> CallEvent:
        if self._ended is not None and self._events.empty():
            return self._ended
        return await self._events.get()

    def set_listener(self, listener: CallListener | None) -> None:
        self._listener = listener
        while listener is not None and not self._events.empty():
            event = self._events.get_nowait()
            listener(event)
            if type(event) is CallEnded:
                self._events.put_nowait(event)
                break

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
            self._put(PlayoutStarted())
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
            self._put(PlayoutStopped(time.monotonic() - self._utterance_start))
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
            self._put(
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
        if not self.capabilities.send_dtmf:  # as LiveCall does
            raise LocalProtocolError(f"{self.info.provider} cannot send DTMF on the socket")
        self.dtmf_sent.append(digits)

    @property
    def capabilities(self) -> Capabilities:
        # What the provider's own protocol class declares, as on a live call.
        if self.listening:
            return LISTEN_ONLY
        return protocol_for(self.info.provider).capabilities

    async def hangup(self, reason: str = "bot") -> None:
        self.hangups.append((reason, time.monotonic()))
        self._finish("hangup")

    def _finish(self, reason: str) -> None:
        if self._ended is None:
            self._ended = CallEnded(reason)
            if self._stop_timer is not None:
                self._stop_timer.cancel()
            self._played_cond.set()
            self._put(self._ended)

    @property
    def bot_speaking(self) -> bool:
        return self._speaking

    @property
    def ended(self) -> bool:
        return self._ended is not None


# --------------------------------------------------------------------- Twilio peer


@dataclass
class Segment:
    """Bot audio the phone received: when it starts and stops playing, and its samples."""

    start: float
    pcm: np.ndarray  # int16 at 8 kHz
    end: float = 0.0

    def __post_init__(self) -> None:
        self.end = self.start + len(self.pcm) / 8000


class TwilioPhone:
    """A Twilio Media Streams peer (protocols.md §1) for end-to-end tests.

    It sends ``connected`` and ``start``, the caller's audio as 20 ms μ-law ``media``
    messages, ``dtmf`` and ``stop``; it plays the server's audio out in real time like
    Twilio's jitter buffer, echoes each ``mark`` once the audio before it has played,
    and on ``clear`` drops what has not played yet and echoes pending marks at once.
    """

    def __init__(self, url: str, **custom: str) -> None:
        self.url = url
        self.custom = custom
        self.stream_sid = "MZ" + "0" * 31 + "1"
        self.call_sid = "CA" + "0" * 31 + "1"
        self.segments: list[Segment] = []
        self.marks: list[tuple[str, float]] = []
        self.clears: list[float] = []
        self.closed: tuple[int | None, str] | None = None
        self._seq = 0
        self._chunk = 0
        self._play_end = 0.0
        self._pending_marks: list[tuple[float, str]] = []
        self._ws: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._speech: list[np.ndarray] = []
        self._said = asyncio.Event()

    async def __aenter__(self) -> TwilioPhone:
        from websockets.asyncio.client import connect

        self._ws = await connect(self.url, max_size=2**20)
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send({
            "event": "start", "sequenceNumber": self._next_seq(), "streamSid": self.stream_sid,
            "start": {
                "accountSid": "AC" + "0" * 32, "streamSid": self.stream_sid,
                "callSid": self.call_sid, "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": self.custom,
            },
        })
        self._t0 = time.monotonic()
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._echo_marks())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def _send(self, message: dict[str, Any]) -> None:
        import json

        await self._ws.send(json.dumps(message))

    async def send_pcm(self, pcm: np.ndarray, realtime: bool = True) -> None:
        """Send int16 8 kHz samples as μ-law media frames, paced like a phone if ``realtime``."""
        import base64

        from audiocodecs.g711 import ulaw_encode

        payload = ulaw_encode(np.asarray(pcm, dtype=np.int16)).tobytes()
        start = time.monotonic()
        for i in range(0, len(payload), 160):
            if self.closed is not None:
                return  # the server hung up: a phone stops sending
            self._chunk += 1
            await self._send({
                "event": "media", "sequenceNumber": self._next_seq(), "streamSid": self.stream_sid,
                "media": {"track": "inbound", "chunk": str(self._chunk),
                          "timestamp": str(self._chunk * 20),
                          "payload": base64.b64encode(payload[i:i + 160]).decode()},
            })
            if realtime:
                await asyncio.sleep(max(0.0, start + (i // 160 + 1) * 0.02 - time.monotonic()))

    async def send_silence(self, seconds: float) -> None:
        await self.send_pcm(np.zeros(round(seconds * 8000), dtype=np.int16))

    async def line(self) -> None:
        """Stream like a live phone line: queued speech (:meth:`say`), else silence."""
        silence = np.zeros(160, dtype=np.int16)
        while self.closed is None:
            chunk = self._speech.pop(0) if self._speech else silence
            if chunk is not silence and not self._speech:
                self._said.set()
            await self.send_pcm(chunk)

    async def say(self, pcm: np.ndarray) -> float:
        """Queue speech on the :meth:`line`; return once it was sent, with that time."""
        pcm = np.asarray(pcm, dtype=np.int16)
        self._said.clear()
        self._speech.extend(pcm[i:i + 160] for i in range(0, len(pcm), 160))
        await self._said.wait()
        return time.monotonic()

    async def press(self, digit: str) -> None:
        await self._send({"event": "dtmf", "sequenceNumber": self._next_seq(),
                          "streamSid": self.stream_sid, "dtmf": {"track": "inbound_track",
                                                                 "digit": digit}})

    async def stop(self) -> None:
        await self._send({"event": "stop", "sequenceNumber": self._next_seq(),
                          "streamSid": self.stream_sid,
                          "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid}})

    async def wait_closed(self, timeout: float) -> tuple[int | None, str]:
        await asyncio.wait_for(self._closed_event.wait(), timeout)
        assert self.closed is not None
        return self.closed

    # ------------------------------------------------------------------ playout

    def heard(self, until: float | None = None) -> np.ndarray:
        """Everything played (not cleared) so far, concatenated."""
        now = time.monotonic() if until is None else until
        parts = []
        for s in self.segments:
            if s.start >= now:
                break
            n = len(s.pcm) if s.end <= now else round((now - s.start) * 8000)
            parts.append(s.pcm[:n])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def audio_times(self, threshold: int = 500) -> list[tuple[float, float]]:
        """(start, end) play times of each run of non-silent audio heard."""
        runs: list[tuple[float, float]] = []
        for s in self.segments:
            loud = bool(np.abs(s.pcm.astype(np.int32)).max(initial=0) > threshold)
            if not loud:
                continue
            if runs and s.start - runs[-1][1] < 0.03:
                runs[-1] = (runs[-1][0], s.end)
            else:
                runs.append((s.start, s.end))
        return runs

    async def _read(self) -> None:
        import base64
        import json

        from websockets.exceptions import ConnectionClosed

        from audiocodecs.g711 import ulaw_decode

        try:
            async for raw in self._ws:
                assert isinstance(raw, str), "Twilio requires text frames"
                msg = json.loads(raw)
                assert msg.get("streamSid") == self.stream_sid, msg
                now = time.monotonic()
                event = msg["event"]
                if event == "media":
                    pcm = ulaw_decode(np.frombuffer(base64.b64decode(msg["media"]["payload"]),
                                                    dtype=np.uint8))
                    start = max(now, self._play_end)
                    seg = Segment(start, np.asarray(pcm, dtype=np.int16))
                    self.segments.append(seg)
                    self._play_end = seg.end
                elif event == "mark":
                    self._pending_marks.append((max(now, self._play_end), msg["mark"]["name"]))
                    self._wake.set()
                elif event == "clear":
                    self.clears.append(now)
                    kept = []
                    for s in self.segments:
                        if s.start >= now:
                            continue
                        if s.end > now:
                            s.pcm = s.pcm[: round((now - s.start) * 8000)]
                            s.end = now
                        kept.append(s)
                    self.segments = kept
                    self._play_end = now
                    pending, self._pending_marks = self._pending_marks, []
                    for _, name in pending:
                        await self._echo(name)
                else:
                    raise AssertionError(f"unexpected message from the server: {msg}")
        except ConnectionClosed:
            pass
        finally:
            self.closed = (self._ws.protocol.close_code, self._ws.protocol.close_reason or "")
            self._closed_event.set()

    async def _echo(self, name: str) -> None:
        from websockets.exceptions import ConnectionClosed

        self.marks.append((name, time.monotonic()))
        with contextlib.suppress(ConnectionClosed):
            await self._send({"event": "mark", "sequenceNumber": self._next_seq(),
                              "streamSid": self.stream_sid, "mark": {"name": name}})

    async def _echo_marks(self) -> None:
        while True:
            if not self._pending_marks:
                self._wake.clear()
                await self._wake.wait()
                continue
            due, name = self._pending_marks[0]
            delay = due - time.monotonic()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            self._pending_marks.pop(0)
            await self._echo(name)
