"""One simulated call's WebSocket: websockets' sans-I/O client on an asyncio Protocol.

A load run holds hundreds of these on one event loop, so there is no task per connection:
``data_received`` feeds :class:`websockets.client.ClientProtocol` and hands finished text
messages straight to the call (timestamped once per read), and the shared ticker writes
frames through :meth:`WebSocketClient.send_text`. Pings are answered by the protocol
object itself (RFC 6455 §5.5.2).

Fault hooks live on the write path: :meth:`stall` buffers writes and pauses reading,
:meth:`go_half_open` drops every write (pongs included) and ignores what arrives, while
still noticing when the server closes the TCP connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Protocol

from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

__all__ = ["CallHandler", "HandshakeFailed", "WebSocketClient"]

log = logging.getLogger(__name__)

#: After our close frame, how long to wait for the server to close TCP (RFC 6455 §7.1.1).
CLOSE_TIMEOUT = 2.0


class HandshakeFailed(Exception):
    """The WebSocket opening handshake did not complete."""


class CallHandler(Protocol):
    """What the connection tells its call about."""

    def on_text(self, text: str, now: float) -> None: ...
    def on_binary(self, data: bytes, now: float) -> None: ...
    def on_close_frame(self, code: int | None, reason: str, now: float) -> None: ...
    def on_connection_lost(self, now: float) -> None: ...


class WebSocketClient(asyncio.Protocol):
    """The client side of one WebSocket over one transport."""

    def __init__(
        self,
        url: str,
        handler: CallHandler,
        *,
        headers: Mapping[str, str] | None = None,
        max_size: int = 1 << 20,
        call_id: str = "-",
    ) -> None:
        self.ws = ClientProtocol(parse_uri(url), max_size=max_size)
        self._headers = dict(headers or {})
        self.handler = handler
        self.call_id = call_id
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.half_open = False
        self._stalled = False
        self._backlog: list[bytes] = []
        self._fragments: list[bytes] = []
        self._fragment_text = True
        self._close_received = False
        self._close_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request = self.ws.connect()
        for name, value in self._headers.items():
            request.headers[name] = value
        self.ws.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.half_open:
            return
        self.ws.receive_data(data)
        self._process(now)

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._process(time.monotonic())
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        now = time.monotonic()
        if self._close_timer is not None:
            self._close_timer.cancel()
        if not self.opened.done():
            reason = f"connection lost: {exc}" if exc else "connection closed during handshake"
            self.opened.set_exception(HandshakeFailed(reason))
        if self.opened.done() and self.opened.exception() is None:
            self.handler.on_connection_lost(now)

    # -- events

    def _process(self, now: float) -> None:
        for event in self.ws.events_received():
            if isinstance(event, Response):
                self._handshake_done(event)
            elif isinstance(event, Frame):
                self._frame(event, now)
        self._flush()
        if self.ws.close_expected() and self._close_timer is None and self.transport:
            loop = asyncio.get_running_loop()
            self._close_timer = loop.call_later(CLOSE_TIMEOUT, self._force_close)

    def _handshake_done(self, response: Response) -> None:
        if self.opened.done():
            return
        if self.ws.handshake_exc is not None:
            exc = self.ws.handshake_exc
            self.opened.set_exception(
                HandshakeFailed(f"HTTP {response.status_code}: {exc}")
            )
        else:
            self.opened.set_result(None)

    def _frame(self, frame: Frame, now: float) -> None:
        op = frame.opcode
        if op is Opcode.TEXT or op is Opcode.BINARY:
            if not frame.fin:
                self._fragments = [bytes(frame.data)]
                self._fragment_text = op is Opcode.TEXT
                return
            self._deliver(op is Opcode.TEXT, bytes(frame.data), now)
        elif op is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._deliver(self._fragment_text, data, now)
        elif op is Opcode.CLOSE:
            self._close_received = True
            # ws.close_code is only set once CLOSED; read the frame itself (RFC 6455 §5.5.1).
            try:
                close = Close.parse(bytes(frame.data))
            except Exception:  # the protocol object has already failed the connection
                return
            self.handler.on_close_frame(close.code, close.reason, now)

    def _deliver(self, text: bool, data: bytes, now: float) -> None:
        # Not ws.state: a close frame read in the same chunk as the messages before it
        # has already moved the state on; those messages were sent first and count.
        if self._close_received:
            return
        try:
            if text:
                self.handler.on_text(data.decode("utf-8", "replace"), now)
            else:
                self.handler.on_binary(data, now)
        except Exception:  # our bug: keep the call (and the run) going, but say so
            log.exception("call %s: error handling a server message", self.call_id)

    # -- writing

    def _flush(self) -> None:
        for chunk in self.ws.data_to_send():
            if chunk == b"":
                if self.transport and self.transport.can_write_eof() and not self.half_open:
                    self.transport.write_eof()
            else:
                self._write(chunk)

    def _write(self, chunk: bytes) -> None:
        if self.half_open or self.transport is None or self.transport.is_closing():
            return
        if self._stalled:
            self._backlog.append(chunk)
        else:
            self.transport.write(chunk)

    def send_text(self, data: bytes) -> None:
        """Send one text message (``data`` is UTF-8)."""
        if self.ws.state is not State.OPEN:
            return
        self.ws.send_text(data)
        self._flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; the TCP close follows (or a timeout forces it)."""
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason)
            self._flush()
        if self._close_timer is None and self.transport is not None:
            loop = asyncio.get_running_loop()
            self._close_timer = loop.call_later(CLOSE_TIMEOUT, self._force_close)

    def _force_close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            log.debug("call %s: server did not close TCP in time; closing", self.call_id)
            self.transport.close()

    def abort(self) -> None:
        """Drop the TCP connection at once (no close frame)."""
        if self.transport is not None:
            self.transport.abort()

    # -- faults

    def stall(self) -> None:
        """Freeze both directions: buffer writes, stop reading."""
        self._stalled = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def unstall(self) -> None:
        """Release the backlog in one burst and resume reading."""
        self._stalled = False
        if self.transport is None or self.transport.is_closing():
            return
        backlog, self._backlog = self._backlog, []
        if backlog and not self.half_open:
            self.transport.writelines(backlog)
        self.transport.resume_reading()

    def go_half_open(self) -> None:
        """Stop answering anything while keeping the socket open."""
        self.half_open = True
        self._backlog.clear()
        if self.transport is not None and not self.transport.is_closing() and self._stalled:
            self.transport.resume_reading()
