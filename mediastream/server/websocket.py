"""The media WebSocket: our own asyncio protocol driving websockets' sans-I/O server.

:class:`MediaSocket` uses only the public sans-I/O API of
:class:`websockets.server.ServerProtocol` (``receive_data``, ``receive_eof``,
``events_received``, ``data_to_send``, ``close_expected``, ``send_close``, ``fail``,
``accept``/``reject``/``send_response``, ``state``) and owns the rest (docs/design.md):

* the handshake, answered synchronously by the server's policy (:data:`OnRequest`);
  bytes sent before our 101 are read after it, as if the client had waited;
* the byte stream, cut into whole frames by :class:`~.frames.FrameSplitter`: plain text
  frames take the fast path, every other frame goes to websockets *whole*, so its parser
  always stands between frames (``fast_frames=False``: every frame goes there);
* messages: fragments assembled and text checked here (:mod:`.assembly`; bad UTF-8 is
  1007 on both paths), handed to the :class:`SocketHandler` synchronously, at most
  :data:`DELIVERY_BATCH` per loop turn, in order, held while the handler asks;
* writes (:meth:`MediaSocket.send_texts`, flow control at :data:`WRITE_LIMIT`, a peer
  that reads nothing cut off at :data:`MAX_WRITE_BUFFER`) and the close (RFC 6455 §7,
  the TCP connection aborted ``close_timeout`` after websockets expects it to end).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN, State
from websockets.server import ServerProtocol

from .assembly import Assembler
from .frames import FrameSplitter, close_frame_code, text_frame_header
from .host import SocketClosed, SocketHandler
from .routes import MediaRoute

__all__ = [
    "DELIVERY_BATCH",
    "MAX_BUFFERED",
    "MAX_WRITE_BUFFER",
    "WRITE_LIMIT",
    "MediaSocket",
    "OnOpen",
    "OnRequest",
]

#: Write buffer high-water mark per connection (websockets' default): ~3 s of μ-law.
WRITE_LIMIT: Final = 32 * 1024
#: Unread bytes we let pile up for a peer before cutting it off. Our own sends stop at
#: WRITE_LIMIT, so only websockets' automatic replies (pongs, close frames) to a peer
#: that keeps sending but never reads can get this far: a ping flood would otherwise
#: grow the buffer by megabytes a second.
MAX_WRITE_BUFFER: Final = 16 * WRITE_LIMIT
#: Messages one read (or one loop turn) delivers at most; the rest waits a turn.
DELIVERY_BATCH: Final = 32
#: Received bytes waiting for delivery beyond which reading pauses (plus one frame).
MAX_BUFFERED: Final = 64 * 1024

logger = logging.getLogger(__name__)

_CONNECTING: Final = State.CONNECTING
_DATA: Final = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


#: The upgrade policy: the response to an upgrade request (``socket.accept(request)`` or
#: ``socket.reject(...)``); it may set ``socket.route`` and ``socket.query``.
OnRequest = Callable[["MediaSocket", Request], Response]
#: Called once the 101 is written: must set ``socket.handler``.
OnOpen = Callable[["MediaSocket"], None]


class MediaSocket(asyncio.Protocol):
    """One media WebSocket, server side (see the module docstring)."""

    def __init__(
        self,
        *,
        on_request: OnRequest,
        on_open: OnOpen,
        max_message_size: int,
        close_timeout: float,
        fast_frames: bool = True,
        logger: logging.Logger | None = None,
        sockets: set[MediaSocket] | None = None,
    ) -> None:
        self._ws = ServerProtocol(max_size=max_message_size, logger=logger)
        self._on_request = on_request
        self._on_open = on_open
        self._close_timeout = close_timeout
        self._fast = fast_frames
        #: websockets' state is OPEN (kept here: the state changes only in the calls
        #: into it below, and the hot path reads this once per frame).
        self._open = False
        #: The fast path applies now (it is on, and no fragmented message is open).
        self._fast_now = fast_frames
        self._sockets = sockets
        #: Unique id (for logs before the call has one).
        self.id = self._ws.id
        self.transport: asyncio.Transport | None = None
        self.handler: SocketHandler | None = None
        #: Set by the upgrade policy: where the request was going.
        self.route: MediaRoute | None = None
        self.query: str = ""
        self.request: Request | None = None
        #: Loop time since which the transport has been over its high-water mark.
        self.paused_since: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Received bytes not yet delivered, cut into whole frames.
        self._splitter = FrameSplitter(max_message_size)
        self._budget = DELIVERY_BATCH
        self._held = False
        self._delivering = False
        self._continuation: asyncio.Handle | None = None
        self._reading_paused = False
        #: Fragmented messages are put together here (and text checked for UTF-8).
        self._assembler = Assembler()
        self._closing_by_us = False
        self._told = False
        self._overflowed = False
        self._failed: tuple[int, str] | None = None
        self._received: tuple[int, str] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._drained: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ state

    @property
    def writable(self) -> bool:
        """True when a send now is written at once: open, and not over the high-water
        mark (a transport closing meanwhile makes :meth:`send_texts` a no-op)."""
        return self._open and self.paused_since is None

    def accept(self, request: Request) -> Response:
        """The 101 response to ``request`` (or websockets' 4xx when it is not a valid
        WebSocket upgrade, RFC 6455 §4.2.1)."""
        return self._ws.accept(request)

    def reject(self, status: int, text: str) -> Response:
        """A plain-text HTTP error response to the upgrade request."""
        return self._ws.reject(status, text)

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self._closed = self._loop.create_future()
        transport.set_write_buffer_limits(high=WRITE_LIMIT)
        if self._sockets is not None:
            self._sockets.add(self)

    def data_received(self, data: bytes) -> None:
        if self._open:
            self._splitter.feed(data)
            self._budget = DELIVERY_BATCH
            self._deliver()
        elif self._ws.state is _CONNECTING:
            self._handshake(data)
        else:
            self._to_websockets(data)  # the closing handshake is websockets' own

    def eof_received(self) -> bool | None:
        self._ws.receive_eof()
        self._open = self._ws.state is OPEN
        self._write_out()
        self._after_close()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        for handle in (self._close_timer, self._continuation):
            if handle is not None:
                handle.cancel()
        self._close_timer = self._continuation = None
        self._splitter.take_all()
        if self._sockets is not None:
            self._sockets.discard(self)
        self._tell(SocketClosed(self._received, self._failed, self._overflowed))
        for future in (self._drained, self._closed):
            if future is not None and not future.done():
                future.set_result(None)

    def pause_writing(self) -> None:
        assert self._loop is not None
        self.paused_since = self._loop.time()

    def resume_writing(self) -> None:
        self.paused_since = None
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)
        if self.handler is not None and self._open:
            self.handler.on_writable()

    # ------------------------------------------------------------------ handshake

    def _handshake(self, data: bytes) -> None:
        end = data.find(b"\r\n\r\n") + 4
        if end < 4:  # the demultiplexer hands whole heads over; be safe anyway
            end = len(data)
        ws = self._ws
        ws.receive_data(data[:end])
        events = ws.events_received()
        if events:
            request = events[0]
            assert isinstance(request, Request)
            self.request = request
            try:
                response = self._on_request(self, request)
            except Exception:
                logger.exception("upgrade policy failed")
                response = ws.reject(500, "internal error\n")
            ws.send_response(response)
        self._write_out()  # the 101, or an error response and EOF
        self._open = ws.state is OPEN
        if not self._open:
            return
        self._splitter.feed(data[end:])
        self._on_open(self)
        self._deliver()

    # ------------------------------------------------------------------ reading

    def hold(self) -> None:
        """Deliver nothing more until :meth:`release` (what arrives waits, in order)."""
        self._held = True

    def release(self) -> None:
        """Go on delivering what waits, in order (within this turn's message budget)."""
        self._held = False
        if self._splitter.waiting and not self._delivering and self._open:
            self._deliver()

    def _deliver(self) -> None:
        """Hand the whole frames waiting in the buffer on (see the module docstring)."""
        if self._delivering:
            return
        self._delivering = True
        try:
            self._split()
        finally:
            self._delivering = False
        if self._reading_paused or self._continuation is not None or (
            self._held and self._splitter.waiting > MAX_BUFFERED
        ):
            self._flow()

    def _split(self) -> None:
        splitter = self._splitter
        while self._open and not self._held and self.handler is not None:
            if self._budget <= 0:
                if splitter.waiting and self._continuation is None:
                    assert self._loop is not None
                    self._continuation = self._loop.call_soon(self._continue)
                return
            try:
                frame = splitter.next(self._fast_now)
            except UnicodeDecodeError as exc:
                self._invalid_utf8(exc)
                return
            if frame is None:
                return
            self._budget -= 1
            if type(frame) is str:
                self.handler.on_message(frame)
            else:
                self._to_websockets(frame)  # type: ignore[arg-type]

    def _continue(self) -> None:
        self._continuation = None
        self._budget = DELIVERY_BATCH
        if self._open:
            self._deliver()

    def _flow(self) -> None:
        """Pause reading while a turn's budget is spent or too much waits; else resume."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        waiting = self._splitter.waiting
        pause = self._continuation is not None or (self._held and waiting > MAX_BUFFERED)
        if pause and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _to_websockets(self, data: bytes) -> None:
        """Hand bytes to websockets -- one whole frame while the connection is open --
        and act on what it makes of them."""
        ws = self._ws
        ws.receive_data(data)
        self._open = ws.state is OPEN
        frames = [event for event in ws.events_received() if isinstance(event, Frame)]
        for frame in frames:
            if frame.opcode is Opcode.CLOSE:
                close = Close.parse(bytes(frame.data))
                self._received = (close.code, close.reason)
        self._write_out()  # pongs, the close reply, or the close that fails the peer
        for frame in frames:
            if frame.opcode in _DATA and self._open:
                self._data_frame(frame)
        self._fast_now = self._fast and not self._assembler.open
        self._after_close()

    def _data_frame(self, frame: Frame) -> None:
        try:
            message = self._assembler.add(frame)
        except UnicodeDecodeError as exc:
            self._invalid_utf8(exc)
            return
        if message is not None and self.handler is not None:
            self.handler.on_message(message)

    def _invalid_utf8(self, exc: UnicodeDecodeError) -> None:
        # RFC 6455 §8.1: fail the connection with 1007 (websockets' asyncio layer says
        # the same, in the same words).
        self._ws.fail(1007, f"{exc.reason} at position {exc.start}")
        self._open = False
        self._write_out()
        self._after_close()

    # ------------------------------------------------------------------ writing

    def send_texts(self, messages: list[str]) -> bool:
        """Write text messages now, in one ``write``; ``False`` (nothing written) when the
        connection is not open. Check :attr:`writable` first to respect flow control."""
        transport = self.transport
        if not self._open or transport is None or transport.is_closing():
            return False
        chunks: list[bytes] = []
        for message in messages:
            payload = message.encode()
            chunks.append(text_frame_header(len(payload)))
            chunks.append(payload)
        transport.write(b"".join(chunks))
        return True

    async def drain(self) -> None:
        """Wait until the transport is below its high-water mark (or the socket is gone)."""
        if self.paused_since is None or self.transport is None or self.transport.is_closing():
            return
        if self._drained is None or self._drained.done():
            assert self._loop is not None
            self._drained = self._loop.create_future()
        await asyncio.shield(self._drained)

    def _write_out(self) -> None:
        """Write what websockets has to send; half-close when it says so."""
        transport = self.transport
        if transport is None:
            return
        for chunk in self._ws.data_to_send():
            if chunk:
                if not self._closing_by_us and self._failed is None and self._received is None:
                    self._failed = close_frame_code(chunk)  # websockets failing the peer
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()  # TLS: no half-close
        if self._ws.close_expected() and self._close_timer is None and not transport.is_closing():
            assert self._loop is not None
            self._close_timer = self._loop.call_later(self._close_timeout, transport.abort)
        if self.paused_since is not None and transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self._overflowed = True
            transport.abort()

    # ------------------------------------------------------------------ closing

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake (§7.1.2); the TCP connection ends when the peer
        answers, or ``close_timeout`` later."""
        self._told = True  # the handler started it: nothing to tell it
        if self._open:
            self._closing_by_us = True
            self._ws.send_close(code, reason)
            self._open = False
            self._write_out()
            held = self._splitter.take_all()
            if held:  # nothing more is delivered; the peer's close frame may be in there
                self._to_websockets(held)
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is gone."""
        if self._closed is not None:
            await asyncio.shield(self._closed)

    def _after_close(self) -> None:
        if self._ws.state is not OPEN and self._ws.state is not _CONNECTING:
            self._tell(SocketClosed(self._received, self._failed, self._overflowed))

    def _tell(self, why: SocketClosed) -> None:
        if self._told:
            return
        self._told = True
        handler = self.handler
        if handler is not None:
            handler.on_closed(why)
