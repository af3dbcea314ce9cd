"""The media WebSocket: websockets' connection with a synchronous data path.

websockets' asyncio connection delivers each message through a queue to a task awaiting
``recv()``, and each ``send()`` runs an async context manager: per 20 ms frame and call
that is a task wake-up and a future on the way in, and a coroutine on the way out -- the
larger part of a media server's CPU next to the codec work. Once a call is live,
:class:`MediaSocket` hands each complete text message to a callback straight from
``data_received`` (:attr:`MediaSocket.direct`), and :meth:`MediaSocket.send_texts` writes
messages synchronously, all of one batch in one ``write``. Everything else -- the
handshake, control frames, fragmented or non-text messages, invalid UTF-8 (1007), the
close handshake, flow control -- stays websockets' own: such messages take the ``recv()``
path, and direct delivery waits until the messages queued there have been read, so
messages are always handled in the order they arrived. One read delivers at most
:data:`DIRECT_BATCH` messages directly; the rest of a burst (a flooding peer) queues for
``recv()``, whose reader yields to the other calls between batches, and websockets stops
reading the socket while that queue is full.

On that direct path the common frames skip websockets' parser and serializer too: whole,
masked, unfragmented text frames are cut out of the read and unmasked here while
websockets' parser stands between frames, and ``send_texts`` writes the frame headers
itself. In a warm loop websockets' parse and serialize of one Twilio media message in
and one out take ~3.5 µs together, these ~0.5 µs. Every other byte goes to websockets,
in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, SERVER, Protocol
from websockets.streams import StreamReader
from websockets.typing import Data

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets ships it compiled for CPython
    from websockets.utils import apply_mask

from .routes import MediaRoute

__all__ = [
    "DIRECT_BATCH",
    "MAX_QUEUE",
    "MAX_WRITE_BUFFER",
    "WRITE_LIMIT",
    "MediaSocket",
    "text_frame_header",
]

#: Frames websockets buffers per connection before it stops reading the socket.
MAX_QUEUE = 32
#: Write buffer high-water mark per connection (websockets' default): ~3 s of μ-law.
WRITE_LIMIT = 32 * 1024
#: Unread bytes we let pile up for a peer before cutting it off. Our own sends wait for
#: the buffer to fall below WRITE_LIMIT, so only websockets' automatic replies (pongs,
#: close frames) to a peer that keeps sending but never reads can get this far: a ping
#: flood would otherwise grow the buffer by megabytes a second.
MAX_WRITE_BUFFER = 16 * WRITE_LIMIT
#: Messages one ``data_received`` hands to the direct callback; more wait for ``recv()``.
DIRECT_BATCH = 32

_TEXT = Opcode.TEXT
_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)

# The frame fast path (MediaSocket.data_received) reads a few of websockets' internals
# to know that its parser stands between two frames: the parser generator's chain ends
# in Protocol.parse waiting in StreamReader.at_eof, its buffer is empty, and no
# fragmented message is open (current_size is None). When any of them is missing (another
# websockets version) the fast path stays off and websockets parses everything.
_PARSE_CODE = getattr(getattr(Protocol, "parse", None), "__code__", None)
_AT_EOF_CODE = getattr(getattr(StreamReader, "at_eof", None), "__code__", None)
_PROBE = Protocol(SERVER)
if not all(
    hasattr(_PROBE, name)
    for name in ("reader", "parser", "current_size", "max_message_size", "max_fragment_size")
):  # pragma: no cover - another websockets layout: websockets parses everything
    _PARSE_CODE = None
del _PROBE
#: One unfragmented, unextended, masked text frame: FIN + TEXT, then MASK + length.
_FIN_TEXT = 0x81


def _at_frame_boundary(protocol: Protocol) -> bool:
    """True when websockets' parser waits for the first byte of a new frame."""
    if _PARSE_CODE is None or _AT_EOF_CODE is None:
        return False
    try:
        if protocol.reader.buffer or protocol.current_size is not None:
            return False
        gen: Any = protocol.parser
        while True:
            inner = gen.gi_yieldfrom
            if inner is None:
                return False
            if inner.gi_code is _AT_EOF_CODE:
                return bool(gen.gi_code is _PARSE_CODE)
            gen = inner
    except AttributeError:  # pragma: no cover - another websockets layout
        return False


class MediaSocket(ServerConnection):
    """A websockets server connection that remembers where its upgrade request was
    going, delivers and sends media messages synchronously once the call is live, and
    cuts off a peer that keeps sending while it reads none of our replies."""

    route: MediaRoute | None = None
    query: str = ""
    #: Set when the connection was aborted for MAX_WRITE_BUFFER (MediaConnection logs it).
    overflowed: bool = False
    #: Bytes that followed the request head before our response (see the server).
    early: bytes = b""
    #: Receives each complete text message from ``data_received`` once set; it must not
    #: raise (the connection's own code catches and maps its errors).
    direct: Callable[[str], None] | None = None
    #: Complete messages queued for ``recv()``: direct delivery waits until they are read.
    queued: int = 0
    _batch: int = 0
    #: websockets' parser is known to stand between frames (nothing fed since checked).
    _synced: bool = False
    #: Config.fast_frames: False hands every frame to websockets' parser.
    fast: bool = True

    def data_received(self, data: bytes) -> None:
        self._batch = 0
        pos = self._fast_frames(data) if self.direct is not None and self.fast else 0
        if pos < len(data):
            self._synced = False
            super().data_received(data[pos:] if pos else data)
        # ``paused``: the transport is over its high-water mark (flow control).
        if self.paused and self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.overflowed = True
            self.transport.abort()

    def _fast_frames(self, data: bytes) -> int:
        """Deliver the complete text frames at the start of ``data``; returns the bytes used.

        The common case of a live call -- whole, masked, unfragmented text frames of
        valid UTF-8 within the size limit -- is parsed here, with no per-frame
        generator steps or event objects; it is what websockets' parser would produce
        for them (the tests feed the same bytes both ways). The first byte that is
        anything else (a control frame, a fragment, a partial frame, invalid UTF-8, an
        oversized message) and everything after it go to websockets, in order, and so
        does all data while websockets holds part of a frame or a fragmented message,
        while messages wait for ``recv()`` and once the connection is no longer open.
        """
        protocol = self.protocol
        if self.queued or protocol.state is not OPEN:
            return 0
        if not self._synced:
            if not _at_frame_boundary(protocol):
                return 0
            self._synced = True
        limit = protocol.max_message_size
        fragment = protocol.max_fragment_size
        if limit is None or (fragment is not None and fragment < limit):
            limit = fragment
        n = len(data)
        pos = 0
        while n - pos >= 6:
            if data[pos] != _FIN_TEXT:
                break
            length = data[pos + 1] ^ 0x80  # the mask bit must be set: clients mask
            if length < 126:
                start = pos + 6
            elif length == 126:  # 16-bit extended length
                start = pos + 8
                if start > n:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
            else:  # unmasked (protocol error) or a 64-bit length: websockets decides
                break
            end = start + length
            if end > n or (limit is not None and length > limit):
                break
            direct = self.direct
            if direct is None or self._batch >= DIRECT_BATCH:
                break
            try:
                text = apply_mask(data[start:end], data[start - 4 : start]).decode()
            except UnicodeDecodeError:
                break  # websockets closes with 1007
            pos = end
            self._batch += 1
            direct(text)
            if protocol.state is not OPEN:
                break
        return pos

    def process_event(self, event: object) -> None:
        if type(event) is Frame:
            direct = self.direct
            if (
                direct is not None
                and event.opcode is _TEXT
                and event.fin
                and not self.queued
                and self._batch < DIRECT_BATCH
            ):
                data = event.data
                try:
                    text = (data if type(data) is bytes else bytes(data)).decode()
                except UnicodeDecodeError:
                    pass  # recv() turns it into 1007, as for any other connection
                else:
                    self._batch += 1
                    direct(text)
                    return
            if event.fin and event.opcode in _DATA:
                self.queued += 1
        super().process_event(event)  # type: ignore[arg-type]

    async def receive(self) -> Data:
        """``recv()``, keeping count of the messages queued behind the direct path."""
        message = await self.recv()
        if self.queued:
            self.queued -= 1
        return message

    def send_texts(self, messages: list[str]) -> bool:
        """Send text messages now, in one write; ``False`` (nothing sent) when the
        connection is not open or the peer is not keeping up (then ``await send()``)."""
        transport = self.transport
        if self.protocol.state is not OPEN or self.paused or transport.is_closing():
            return False
        # Whole text frames, server to client (unmasked), built here: what
        # protocol.send_text() would write, without its per-frame objects. Anything
        # websockets itself still has to send (a pong) goes first.
        chunks = self.protocol.data_to_send()
        for message in messages:
            payload = message.encode()
            chunks.append(text_frame_header(len(payload)))
            chunks.append(payload)
        transport.write(b"".join(chunks))
        return True


def text_frame_header(size: int) -> bytes:
    """The header of an unmasked, unfragmented text frame of ``size`` payload bytes
    (RFC 6455 §5.2: the shortest length encoding, as websockets writes it)."""
    if size < 126:
        return bytes((_FIN_TEXT, size))
    if size < 65536:
        return bytes((_FIN_TEXT, 126, size >> 8, size & 0xFF))
    return bytes((_FIN_TEXT, 127)) + size.to_bytes(8, "big")
