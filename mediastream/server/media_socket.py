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
"""

from __future__ import annotations

from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.typing import Data

from .routes import MediaRoute

__all__ = ["DIRECT_BATCH", "MAX_QUEUE", "MAX_WRITE_BUFFER", "WRITE_LIMIT", "MediaSocket"]

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

    def data_received(self, data: bytes) -> None:
        self._batch = 0
        super().data_received(data)
        # ``paused``: the transport is over its high-water mark (flow control).
        if self.paused and self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.overflowed = True
            self.transport.abort()

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
        protocol = self.protocol
        for message in messages:
            protocol.send_text(message.encode())
        chunks = protocol.data_to_send()
        if len(chunks) == 1:
            transport.write(chunks[0])
        elif chunks:
            transport.write(b"".join(chunks))
        return True
