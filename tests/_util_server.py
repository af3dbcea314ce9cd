"""Helpers for the server tests: a running server, and a fake provider per protocols.md.

:class:`FakeProvider` plays the provider's side of a media stream over a real
``websockets`` client: it sends the provider's messages exactly as protocols.md §1.2,
§2.2 and §3.2 document them, and checks every message the server sends against §1.3,
§2.3 and §3.3 (only the documented events, the right stream id, whole 20 ms frames of
the negotiated codec in base64), the way the real provider would reject anything else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from _util_timing import scaled as scaled  # re-exported for the tests
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect

from mediastream.call import Call, CallEvent, InboundAudio
from mediastream.config import Config
from mediastream.server import MediaStreamServer

PROVIDERS = ("twilio", "telnyx", "plivo")


def server_config(**changes: Any) -> Config:
    """A config for tests: an ephemeral port, 8 kHz bots (exact G.711 echo), short waits."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "bot": "echo",
        "bot_sample_rate": 8000,
        "first_message_timeout": scaled(5.0),
        "idle_media_timeout": scaled(10.0),
        "send_timeout": scaled(2.0),
        "drain_timeout": scaled(5.0),
    }
    values.update(changes)
    return Config(**values)


@contextlib.asynccontextmanager
async def running_server(bot: Any = None, **changes: Any) -> AsyncIterator[MediaStreamServer]:
    """A started server on 127.0.0.1:<ephemeral>, closed afterwards."""
    async with MediaStreamServer(server_config(**changes), bot=bot) as server:
        yield server


def ulaw_payload(frames: int, seed: int = 1) -> bytes:
    """Random μ-law bytes without 0x7F (-0 decodes to 0, which encodes back as 0xFF)."""
    rng = random.Random(seed)
    codes = [c for c in range(256) if c != 0x7F]
    return bytes(rng.choice(codes) for _ in range(160 * frames))


async def echo_call(port: int, frames: int, seed: int) -> bytes:
    """One Twilio call to an echo bot on 127.0.0.1:``port``: ``frames`` 20 ms frames of
    random μ-law (2 ms apart), then the audio it got back, as long as what was sent."""
    provider = FakeProvider("twilio")
    sent = ulaw_payload(frames, seed=seed)

    class _Server:  # FakeProvider.connect wants something with a port
        pass

    server: Any = _Server()
    server.port = port
    async with provider.connect(server):
        await provider.open()
        provider.start_pump()
        for i in range(frames):
            await provider.send(provider.media(sent[i * 160 : (i + 1) * 160]))
            await asyncio.sleep(0.002)
        audio = await provider.wait_audio(len(sent), timeout=20)
        await provider.send(provider.stop())
        await provider.closed()
    return audio[: len(sent)]


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files under ``tmp``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path


# --------------------------------------------------------------------------- provider


@dataclass
class FakeProvider:
    """The provider's side of one media stream (see the module docstring)."""

    provider: str
    encoding: str = "pcmu"
    sample_rate: int = 8000
    params: dict[str, str] = field(default_factory=dict)
    call_id: str = ""
    stream_id: str = ""
    ws: ClientConnection | None = None
    seq: int = 0
    chunk: int = 0
    #: The tracks the stream carries (a both-tracks fork: ("inbound", "outbound")).
    tracks: tuple[str, ...] = ("inbound",)
    #: Chunk counters of tracks other than inbound (each track numbers its own).
    other_chunks: dict[str, int] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    _pump: asyncio.Task[None] | None = None
    _progress: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Future[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        n = random.randrange(1 << 30)
        if self.provider == "twilio":
            self.call_id = self.call_id or f"CA{n:032x}"
            self.stream_id = self.stream_id or f"MZ{n:032x}"
        elif self.provider == "telnyx":
            self.call_id = self.call_id or f"v3:call-{n:x}"
            self.stream_id = self.stream_id or f"32DE0DEA-53CB-4B21-89A4-{n:012X}"
        else:
            self.call_id = self.call_id or f"12345678-1234-1234-1234-{n:012x}"
            self.stream_id = self.stream_id or f"87654321-4321-4321-4321-{n:012x}"

    @property
    def frame_bytes(self) -> int:
        per_sample = 2 if self.encoding == "l16" else 1
        return self.sample_rate // 50 * per_sample

    # ---------------------------------------------------------------- messages

    def connected(self) -> dict[str, Any] | None:
        if self.provider == "twilio":
            return {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        if self.provider == "telnyx":
            return {"event": "connected", "version": "1.0.0"}
        return None  # Plivo opens with start (§3.1)

    def start(self) -> dict[str, Any]:
        self.seq = 1
        if self.provider == "twilio":
            return {
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": "AC" + "0" * 32,
                    "streamSid": self.stream_id,
                    "callSid": self.call_id,
                    "tracks": list(self.tracks),
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": dict(self.params),
                },
                "streamSid": self.stream_id,
            }
        if self.provider == "telnyx":
            encoding = {"pcmu": "PCMU", "pcma": "PCMA", "l16": "L16"}[self.encoding]
            return {
                "event": "start",
                "sequence_number": "1",
                "stream_id": self.stream_id,
                "start": {
                    "user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
                    "call_control_id": self.call_id,
                    "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
                    "from": "+13122010094",
                    "to": "+13122123456",
                    "custom_parameters": dict(self.params),
                    "media_format": {
                        "encoding": encoding,
                        "sample_rate": self.sample_rate,
                        "channels": 1,
                    },
                },
            }
        content = "audio/x-l16" if self.encoding == "l16" else "audio/x-mulaw"
        message: dict[str, Any] = {
            "event": "start",
            "sequenceNumber": 1,
            "start": {
                "callId": self.call_id,
                "streamId": self.stream_id,
                "accountId": "MAXXXXXXXXXXXXXXXXXX",
                "tracks": list(self.tracks),
                "mediaFormat": {"encoding": content, "sampleRate": self.sample_rate},
            },
        }
        if self.params:
            message["extra_headers"] = ";".join(f"{k}={v}" for k, v in self.params.items())
        return message

    def media(self, payload: bytes, track: str = "inbound") -> dict[str, Any]:
        self.seq += 1
        if track == "inbound":
            self.chunk += 1
            chunk = self.chunk
        else:
            chunk = self.other_chunks[track] = self.other_chunks.get(track, 0) + 1
        b64 = base64.b64encode(payload).decode()
        ts = str((chunk - 1) * 20)
        if self.provider == "twilio":
            return {
                "event": "media",
                "sequenceNumber": str(self.seq),
                "media": {"track": track, "chunk": str(chunk), "timestamp": ts,
                          "payload": b64},
                "streamSid": self.stream_id,
            }
        if self.provider == "telnyx":
            return {
                "event": "media",
                "sequence_number": str(self.seq),
                "stream_id": self.stream_id,
                "media": {"track": track, "chunk": str(chunk), "timestamp": ts,
                          "payload": b64},
            }
        return {
            "event": "media",
            "sequenceNumber": self.seq,
            "streamId": self.stream_id,
            "media": {"track": track, "timestamp": str(1705312200000 + int(ts)),
                      "chunk": chunk, "payload": b64},
        }

    def dtmf(self, digit: str) -> dict[str, Any]:
        self.seq += 1
        if self.provider == "twilio":
            return {"event": "dtmf", "streamSid": self.stream_id, "sequenceNumber": str(self.seq),
                    "dtmf": {"track": "inbound_track", "digit": digit}}
        if self.provider == "telnyx":
            return {"event": "dtmf", "stream_id": self.stream_id,
                    "sequence_number": str(self.seq), "dtmf": {"digit": digit}}
        return {"event": "dtmf", "sequenceNumber": self.seq, "streamId": self.stream_id,
                "dtmf": {"digit": digit}}

    def mark_echo(self, name: str) -> dict[str, Any]:
        """The provider's acknowledgement of a mark (Plivo: of a checkpoint)."""
        self.seq += 1
        if self.provider == "twilio":
            return {"event": "mark", "sequenceNumber": str(self.seq), "streamSid": self.stream_id,
                    "mark": {"name": name}}
        if self.provider == "telnyx":
            return {"event": "mark", "sequence_number": str(self.seq),
                    "stream_id": self.stream_id, "mark": {"name": name}}
        return {"event": "playedStream", "streamId": self.stream_id, "name": name}

    def cleared(self) -> dict[str, Any]:
        """Plivo's acknowledgement of clearAudio (§3.2)."""
        return {"sequenceNumber": 0, "event": "clearedAudio", "streamId": self.stream_id}

    def stop(self) -> dict[str, Any]:
        self.seq += 1
        if self.provider == "twilio":
            return {"event": "stop", "sequenceNumber": str(self.seq), "streamSid": self.stream_id,
                    "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_id}}
        if self.provider == "telnyx":
            return {"event": "stop", "sequence_number": str(self.seq),
                    "stream_id": self.stream_id,
                    "stop": {"user_id": "3E6F995F", "call_control_id": self.call_id}}
        return {"event": "stop", "sequenceNumber": self.seq, "streamId": self.stream_id}

    # ---------------------------------------------------------------- checks

    def check(self, message: dict[str, Any]) -> str:
        """Validate a server message as the provider would; returns its kind.

        Kinds: ``media``, ``mark`` (mark/checkpoint), ``clear`` (clear/clearAudio),
        ``dtmf`` (Plivo sendDTMF).
        """
        event = message.get("event")
        if self.provider == "twilio":
            assert message.get("streamSid") == self.stream_id, message  # 31951 otherwise
            allowed = {"media": {"event", "streamSid", "media"},
                       "mark": {"event", "streamSid", "mark"},
                       "clear": {"event", "streamSid"}}
            assert event in allowed and set(message) == allowed[event], message
            if event == "media":
                assert set(message["media"]) == {"payload"}, message
                self._check_payload(message["media"]["payload"])
            if event == "mark":
                assert isinstance(message["mark"]["name"], str) and message["mark"]["name"]
            return str(event)
        if self.provider == "telnyx":
            assert event in {"media", "mark", "clear"}, message
            assert message.get("stream_id", self.stream_id) == self.stream_id
            if event == "media":
                self._check_payload(message["media"]["payload"])
            if event == "mark":
                assert message["mark"]["name"]
            return str(event)
        assert message.get("streamId", self.stream_id) == self.stream_id, message
        if event == "playAudio":
            media = message["media"]
            content = "audio/x-l16" if self.encoding == "l16" else "audio/x-mulaw"
            assert media["contentType"] == content and media["sampleRate"] == self.sample_rate
            self._check_payload(media["payload"])
            return "media"
        if event == "checkpoint":
            assert isinstance(message["name"], str) and message["name"]
            return "mark"
        if event == "clearAudio":
            return "clear"
        if event == "sendDTMF":
            assert isinstance(message["dtmf"], str) and message["dtmf"]
            return "dtmf"
        raise AssertionError(f"plivo does not accept {message}")

    def _check_payload(self, b64: str) -> None:
        raw = base64.b64decode(b64, validate=True)
        assert raw and len(raw) % self.frame_bytes == 0, len(raw)  # whole 20 ms frames

    @staticmethod
    def payload_of(message: dict[str, Any]) -> bytes:
        return base64.b64decode(message["media"]["payload"])

    @staticmethod
    def mark_name(message: dict[str, Any]) -> str:
        return str(message["mark"]["name"] if "mark" in message else message["name"])

    # ---------------------------------------------------------------- I/O

    def path(self, agent: str | None = None, *, auto: bool = False) -> str:
        base = "/ws" if auto else f"/ws/{self.provider}"
        return base + (f"/{agent}" if agent else "")

    @contextlib.asynccontextmanager
    async def connect(
        self, server: MediaStreamServer, path: str | None = None, **kwargs: Any
    ) -> AsyncIterator[FakeProvider]:
        scheme = "wss" if kwargs.get("ssl") is not None else "ws"
        url = f"{scheme}://127.0.0.1:{server.port}{path or self.path()}"
        async with connect(url, compression=None, max_size=None, open_timeout=scaled(5),
                           close_timeout=scaled(5), **kwargs) as ws:
            self.ws = ws
            yield self

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        assert self.ws is not None
        await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def open(self) -> None:
        """Send the provider's opening messages (connected, start)."""
        first = self.connected()
        if first is not None:
            await self.send(first)
        await self.send(self.start())

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next server message, validated (not while :meth:`pump` runs)."""
        assert self.ws is not None
        async with asyncio.timeout(scaled(timeout)):
            raw = await self.ws.recv()
        assert isinstance(raw, str), "servers must send text frames (protocols.md §0)"
        message: dict[str, Any] = json.loads(raw)
        self.check(message)
        self.received.append(message)
        return message

    def start_pump(self, *, echo_marks: bool = True) -> None:
        """Read in the background like the provider (see :meth:`pump`)."""
        self._pump = asyncio.create_task(self.pump(echo_marks=echo_marks))

    async def pump(self, *, echo_marks: bool = True) -> None:
        """Play the provider's side of the outbound stream, with a real-time playout model.

        Audio "plays" in arrival order at its real duration. A mark is acknowledged when
        the audio before it has played (§1.2, §2.2; Plivo ``playedStream``, §3.2). A clear
        drops what has not played; Twilio and Telnyx then return every pending mark at
        once (§5.2), Plivo answers ``clearedAudio`` and never acknowledges them (§3.3).
        """
        assert self.ws is not None
        loop = asyncio.get_running_loop()
        play_end = loop.time()
        pending: list[tuple[asyncio.TimerHandle, str]] = []
        frame_s = 0.02 / self.frame_bytes

        def acknowledge(name: str) -> None:
            pending[:] = [(h, n) for h, n in pending if n != name]
            self._spawn(self.send(self.mark_echo(name)))

        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                assert isinstance(raw, str), "servers must send text frames (protocols.md §0)"
                message: dict[str, Any] = json.loads(raw)
                kind = self.check(message)
                self.received.append(message)
                now = loop.time()
                if kind == "media":
                    payload = self.payload_of(message)
                    self.audio += payload
                    play_end = max(play_end, now) + len(payload) * frame_s
                elif kind == "mark" and echo_marks:
                    name = self.mark_name(message)
                    pending.append((loop.call_at(play_end, acknowledge, name), name))
                elif kind == "clear":
                    play_end = now
                    for handle, name in pending:
                        handle.cancel()
                        if self.provider != "plivo" and echo_marks:
                            await self.send(self.mark_echo(name))
                    pending.clear()
                    if self.provider == "plivo":
                        await self.send(self.cleared())
                self._progress.set()
                self._progress.clear()
        for handle, _ in pending:
            handle.cancel()
        self._progress.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_ignore_closed)

    async def wait_until(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait (while pumping) until ``predicate(self)`` holds; fails on close/timeout."""
        async with asyncio.timeout(scaled(timeout)):
            while not predicate(self):
                assert self._pump is not None and not self._pump.done(), "closed while waiting"
                await self._progress.wait()

    async def wait_audio(self, nbytes: int, timeout: float = 10.0) -> bytes:
        await self.wait_until(lambda f: len(f.audio) >= nbytes, timeout)
        return bytes(self.audio)

    def kinds(self) -> list[str]:
        return [self.check(m) for m in self.received]

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str | None]:
        """Wait for the server's close; its code and reason."""
        assert self.ws is not None
        async with asyncio.timeout(scaled(timeout)):
            if self._pump is not None:
                await self._pump
            else:
                with contextlib.suppress(websockets.ConnectionClosed):
                    while True:
                        await self.ws.recv()
            await self.ws.wait_closed()
        # protocol.close_*: the connection object only has them from websockets 15 on.
        return self.ws.protocol.close_code, self.ws.protocol.close_reason


def _ignore_closed(task: asyncio.Future[None]) -> None:
    # An acknowledgement racing the close is not an error of the server's.
    if not task.cancelled() and isinstance(task.exception(), websockets.ConnectionClosed):
        return


# --------------------------------------------------------------------------- bots


class RecordingBot:
    """A bot that records every event and optionally echoes audio."""

    def __init__(self, *, echo: bool = True) -> None:
        self.echo = echo
        self.events: list[CallEvent] = []
        self.calls: list[Call] = []
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self._changed = asyncio.Event()

    async def __call__(self, call: Call) -> None:
        self.calls.append(call)
        self.started.set()
        try:
            async for event in call:
                self.events.append(event)
                self._changed.set()
                self._changed.clear()
                if self.echo and isinstance(event, InboundAudio):
                    call.send_audio(event.pcm, event.sample_rate)
        finally:
            self.ended.set()
            self._changed.set()

    async def wait_for(self, kind: type, count: int = 1, timeout: float = 10.0) -> list[Any]:
        """Wait until ``count`` events of ``kind`` arrived; returns them."""
        async with asyncio.timeout(scaled(timeout)):
            while len(self.of(kind)) < count:
                assert not self.ended.is_set(), f"bot ended before {count} {kind.__name__}"
                await self._changed.wait()
        return self.of(kind)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


async def failing_call_beside_a_good_one(
    server: MediaStreamServer, bad_agent: str, *, bad_frames: int, good: str = "telnyx"
) -> tuple[FakeProvider, tuple[int | None, str]]:
    """A ``good`` provider's call and a Twilio call routed to ``bad_agent`` side by side.

    The bad call sends ``bad_frames`` media frames and its close (code, reason) is
    returned with its fake provider; then the good call must still echo exactly and end
    cleanly with 1000: one call's failure must not harm another.
    """
    ok = FakeProvider(good)
    bad = FakeProvider("twilio")
    async with ok.connect(server), bad.connect(server, bad.path(bad_agent)):
        await ok.open()
        ok.start_pump()
        await bad.open()
        bad.start_pump()
        for i in range(bad_frames):
            await bad.send(bad.media(ulaw_payload(1, seed=i)))
        closed = await bad.closed()
        sent = ulaw_payload(3, seed=9)
        for i in range(3):
            await ok.send(ok.media(sent[i * 160 : (i + 1) * 160]))
        assert await ok.wait_audio(len(sent)) == sent
        await ok.send(ok.stop())
        assert (await ok.closed())[0] == 1000
    return bad, closed


# --------------------------------------------------------------------------- raw frames


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next frame a server sends on a raw connection: (opcode, payload); server
    frames are unmasked and, from us, unfragmented."""
    first, second = await reader.readexactly(2)
    n = second & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await reader.readexactly(n)


def upgrade_request(path: str) -> bytes:
    """A WebSocket upgrade request head for ``path`` (RFC 6455 §4.1)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    """One client frame (RFC 6455 §5.2), any length, masked unless told otherwise."""
    n = len(payload)
    if n < 126:
        length = bytes([n])
    elif n < 65536:
        length = bytes([126]) + n.to_bytes(2, "big")
    else:
        length = bytes([127]) + n.to_bytes(8, "big")
    first = bytes([(0x80 if fin else 0) | opcode])
    if not masked:
        return first + length + payload
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return first + bytes([length[0] | 0x80]) + length[1:] + mask + body


@contextlib.asynccontextmanager
async def served_elsewhere(app: web.Application) -> AsyncIterator[int]:
    """``app`` served by aiohttp on 127.0.0.1:<free port> (not the server's); the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
