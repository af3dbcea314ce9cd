"""A small media server for the caller simulator's tests.

It speaks the *server* side of the three dialects just enough to check the simulator: it
records every message the simulated caller sends, and echoes each media payload back
exactly ``delay`` seconds after its bytes reached the socket, in the provider's
server-to-provider form. It is built on websockets' sans-I/O ``ServerProtocol`` with the
echo scheduled by ``loop.call_at`` straight from ``data_received``, so the only error in
the delay is the event loop's timer resolution (< 1 ms on an idle machine). A ``script``
coroutine can drive marks, checkpoints, clears and DTMF on a connection. The path of the
WebSocket URL names the provider: ``ws://127.0.0.1:PORT/twilio``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from _util_timing import scaled as scaled  # re-exported for the tests
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from mediastream.caller import CallReport

Script = Callable[["Connection"], Awaitable[None]]


@dataclass(eq=False)
class Connection(asyncio.Protocol):
    """One accepted stream: what arrived, and ways to send provider commands."""

    server: EchoServer
    provider: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    binary_frames: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    #: When the caller's close frame arrived (it sends one right after hanging up).
    close_at: float | None = None
    stream_id: str = ""
    request_headers: dict[str, str] = field(default_factory=dict)
    lost_at: float | None = None
    media_count: int = 0
    #: Arrival time of each media message, and when its echo actually left.
    media_arrivals: list[float] = field(default_factory=list)
    echoed_at: dict[int, float] = field(default_factory=dict)
    #: (loop time, message) of everything sent with send()/at().
    sent: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ws = ServerProtocol(max_size=1 << 20)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.script_task: asyncio.Task[None] | None = None
        self._resume_at = 0.0  # the sender is paused until then
        self._backlog: list[tuple[int, dict[str, Any]]] = []

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = self.loop.time()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self.provider = event.path.strip("/").split("/")[0]
                self.request_headers = {k.lower(): v for k, v in event.headers.raw_items()}
                if self.server.reject:
                    self.ws.send_response(self.ws.reject(self.server.reject, "rejected\n"))
                else:
                    self.ws.send_response(self.ws.accept(event))
                self.server.connections.append(self)
            elif isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self._message(json.loads(event.data), now)
                elif event.opcode is Opcode.BINARY:
                    self.binary_frames += 1
                elif event.opcode is Opcode.CLOSE:
                    self.close_code = Close.parse(event.data).code
                    self.close_at = now
        self._flush()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_at = self.loop.time()
        self.closed.set()
        if self.script_task is not None:
            self.script_task.cancel()

    def _flush(self) -> None:
        assert self.transport is not None
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()
        if self.ws.close_expected():
            self.loop.call_later(1.0, self.transport.close)

    def _message(self, msg: dict[str, Any], now: float) -> None:
        self.received.append(msg)
        self.arrivals.append(now)
        event = msg.get("event")
        if event == "start":
            self.stream_id = (
                msg.get("streamSid") or msg.get("stream_id")
                or msg.get("start", {}).get("streamId", "")
            )
            self.started.set()
            if self.server.script is not None:
                self.script_task = self.loop.create_task(self.server.script(self))
        elif event == "media":
            self.media_count += 1
            self.media_arrivals.append(now)
            payload = base64.b64decode(msg["media"]["payload"])
            if self.server.on_media is not None:
                self.server.on_media(self, payload, now)
            if not self.server.echo or self.server.drop(self.media_count - 1):
                return
            reply = self.media(payload, self.server.plivo_format)
            index = self.media_count - 1
            if self.server.delay:
                self.loop.call_at(now + self.server.delay, self._echo, index, reply)
            else:
                self._echo(index, reply)

    def _echo(self, index: int, reply: dict[str, Any]) -> None:
        now = self.loop.time()
        pause = self.server.pause
        if pause is not None and index == pause[0]:
            self._resume_at = now + pause[1]
            self.loop.call_at(self._resume_at, self._resume)
        if now < self._resume_at or self._backlog:  # behind the held ones, in order
            self._backlog.append((index, reply))
            return
        self.echoed_at[index] = now
        self.send(reply)

    def _resume(self) -> None:
        backlog, self._backlog = self._backlog, []
        for index, reply in backlog:
            self.echoed_at[index] = self.loop.time()
            self.send(reply)

    # -- sending
    def send(self, message: dict[str, Any]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        try:
            self.ws.send_text(json.dumps(message).encode())
        except Exception:  # closed meanwhile
            return
        self.sent.append((self.loop.time(), message))
        self._flush()

    def at(self, when: float, message: dict[str, Any]) -> None:
        """Send ``message`` at loop time ``when``."""
        self.loop.call_at(when, self.send, message)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.ws.send_close(code, reason)
        self._flush()

    def echoed_before_close(self) -> int:
        """How many echoes went out before the caller's close frame arrived."""
        assert self.close_at is not None, "the caller did not close"
        return sum(1 for t in self.echoed_at.values() if t < self.close_at)

    def hold_ms(self, index: int) -> float:
        """How long the server actually held media message ``index`` before echoing it."""
        return (self.echoed_at[index] - self.media_arrivals[index]) * 1000

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("event") == name]

    # -- provider command shapes (protocols.md §1.3, §2.3, §3.3)
    def media(
        self, payload: bytes, fmt: tuple[str, int] = ("audio/x-mulaw", 8000)
    ) -> dict[str, Any]:
        b64 = base64.b64encode(payload).decode()
        if self.provider == "twilio":
            return {"event": "media", "streamSid": self.stream_id, "media": {"payload": b64}}
        if self.provider == "telnyx":
            return {"event": "media", "media": {"payload": b64}}
        return {
            "event": "playAudio",
            "media": {"contentType": fmt[0], "sampleRate": fmt[1], "payload": b64},
        }

    def mark(self, name: str) -> dict[str, Any]:
        if self.provider == "twilio":
            return {"event": "mark", "streamSid": self.stream_id, "mark": {"name": name}}
        if self.provider == "telnyx":
            return {"event": "mark", "mark": {"name": name}}
        return {"event": "checkpoint", "streamId": self.stream_id, "name": name}

    def clear(self) -> dict[str, Any]:
        if self.provider == "twilio":
            return {"event": "clear", "streamSid": self.stream_id}
        if self.provider == "telnyx":
            return {"event": "clear"}
        return {"event": "clearAudio", "streamId": self.stream_id}


class EchoServer:
    """``async with EchoServer(delay=0.04) as srv: srv.url('twilio')``.

    ``drop(i)`` says whether to leave media message ``i`` (0-based) unechoed; ``pause``
    ``(i, seconds)`` stalls the sender when echo ``i`` is due: it and every echo due
    meanwhile go out, in order, ``seconds`` later (late, nothing lost); ``on_media``
    sees every inbound payload; ``reject`` answers the upgrade with that HTTP status.
    """

    def __init__(
        self,
        delay: float = 0.0,
        *,
        echo: bool = True,
        script: Script | None = None,
        plivo_format: tuple[str, int] = ("audio/x-mulaw", 8000),
        drop: Callable[[int], bool] = lambda index: False,
        pause: tuple[int, float] | None = None,
        on_media: Callable[[Connection, bytes, float], None] | None = None,
        reject: int = 0,
        ssl: Any = None,
    ) -> None:
        self.ssl = ssl
        self.drop = drop
        self.pause = pause
        self.on_media = on_media
        self.reject = reject
        self.delay = delay
        self.echo = echo
        self.script = script
        self.plivo_format = plivo_format
        self.connections: list[Connection] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> EchoServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self), "127.0.0.1", 0, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for conn in self.connections:
            if conn.transport is not None:
                conn.transport.abort()
        await self._server.wait_closed()

    def url(self, provider: str) -> str:
        scheme = "wss" if self.ssl is not None else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/{provider}"


def check_echo_call(call: CallReport) -> None:
    """A simulated call to an echo bot went as it should: completed, every probe back,
    nothing lost, no protocol error, and playout marks placed and acknowledged."""
    assert not call.handshake_failed, call.failure
    assert call.end == "completed", (call.end, call.close_code, call.close_reason)
    assert call.probes > 0 and call.probes_returned == call.probes
    assert call.lost_ms == 0
    assert call.protocol_errors == 0, call.protocol_error_samples
    # The server places playout marks/checkpoints; the caller acknowledges each once played.
    assert call.marks_received > 0
    assert call.marks_acknowledged >= call.marks_received - 1
