"""A call's WebSocket when an ASGI server owns the socket (uvicorn, hypercorn ...).

:class:`AsgiMediaSocket` is the second implementation of
:class:`~mediastream.server.host.CallSocket` (the first is our own
:class:`~mediastream.server.websocket.MediaSocket`): the connection, reader, writer,
session and bot above it are the very same objects either way. Only what lies below
differs -- here the ASGI server parses frames and answers pings, and we see whole
messages through ``receive()`` and write them through ``send()``.

* Reading: one task awaits ``receive()`` and hands each message to the connection
  synchronously, in order. While the connection holds delivery (its session waits for a
  resampler step) the task stops reading, so the ASGI server's own flow control pushes
  back on the peer; messages already read wait here, in order.
* Writing: :meth:`send_texts` never waits. Messages go into a queue that one task
  writes through ``send()`` (which waits while the ASGI server's transport is over its
  high-water mark); over :data:`WRITE_LIMIT` queued bytes the socket reports itself not
  writable (``paused_since``), and below it again calls the connection's
  ``on_writable`` -- the same contract as our own socket's transport buffer.
* Closing: :meth:`close` queues ``websocket.close`` behind what was queued before it;
  the socket is done when the ASGI server reports the disconnect, or ``close_timeout``
  after the close was sent. :meth:`abort` stops both tasks at once and leaves the TCP
  connection to the ASGI server (ASGI has no abort).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from uuid import UUID, uuid4

from mediastream.server.host import SocketClosed, SocketHandler
from mediastream.server.routes import MediaRoute

__all__ = ["WRITE_LIMIT", "AsgiMediaSocket", "Message", "Receive", "Send"]

#: An ASGI event.
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Queued bytes over which the socket reports itself not writable (as our own socket's
#: transport high-water mark, :data:`mediastream.server.websocket.WRITE_LIMIT`).
WRITE_LIMIT: Final = 32 * 1024

logger = logging.getLogger(__name__)


class AsgiMediaSocket:
    """One media WebSocket accepted by an ASGI server (see the module docstring)."""

    def __init__(
        self,
        receive: Receive,
        send: Send,
        *,
        route: MediaRoute,
        query: str,
        max_message_size: int,
        close_timeout: float,
    ) -> None:
        self.id: UUID = uuid4()
        self.route: MediaRoute | None = route
        self.query = query
        self.handler: SocketHandler | None = None
        self.paused_since: float | None = None
        self._receive = receive
        self._send = send
        self._max_size = max_message_size
        self._close_timeout = close_timeout
        self._loop = asyncio.get_running_loop()
        self._out: deque[Message] = deque()
        self._out_bytes = 0
        self._out_ready = asyncio.Event()
        self._inbox: deque[str | bytes] = deque()
        self._held = False
        self._unheld = asyncio.Event()
        self._unheld.set()
        self._open = True  # accepted; no close queued, no disconnect seen
        self._told = False
        self._drained: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._close_timer: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ CallSocket

    @property
    def writable(self) -> bool:
        return self._open and self.paused_since is None

    def hold(self) -> None:
        self._held = True
        self._unheld.clear()

    def release(self) -> None:
        self._held = False
        self._unheld.set()

    def send_texts(self, messages: list[str]) -> bool:
        if not self._open:
            return False
        out = self._out
        for message in messages:
            out.append({"type": "websocket.send", "text": message})
            self._out_bytes += len(message)
        if self._out_bytes > WRITE_LIMIT and self.paused_since is None:
            self.paused_since = self._loop.time()
        self._out_ready.set()
        return True

    async def drain(self) -> None:
        if self.paused_since is None or self._closed.done():
            return
        if self._drained is None or self._drained.done():
            self._drained = self._loop.create_future()
        await asyncio.shield(self._drained)

    def close(self, code: int, reason: str) -> None:
        self._told = True  # the handler started it: nothing to tell it
        if not self._open:
            return
        self._open = False
        self._out.append({"type": "websocket.close", "code": code, "reason": reason})
        self._out_ready.set()
        self._unheld.set()  # read on (and discard) until the peer's close arrives

    def abort(self) -> None:
        self._open = False
        self._done()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Read and write until the socket is done (the ASGI application's body)."""
        self._tasks = [
            asyncio.create_task(self._reading(), name=f"asgi-read-{self.id.hex[:8]}"),
            asyncio.create_task(self._writing(), name=f"asgi-write-{self.id.hex[:8]}"),
        ]
        try:
            await asyncio.shield(self._closed)
        finally:
            self._done()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _reading(self) -> None:
        try:
            while True:
                while self._inbox or (self._held and self._open):
                    if not self._open:
                        self._inbox.clear()  # closing: nothing more is delivered
                    elif self._held:
                        await self._unheld.wait()
                    else:
                        self._deliver(self._inbox.popleft())
                message = await self._receive()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    code = message.get("code", 1005)
                    self._peer_closed(SocketClosed((int(code), str(message.get("reason") or ""))))
                    return
                if kind != "websocket.receive" or not self._open:
                    continue
                data: str | bytes | None = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                if len(data) > self._max_size:
                    # RFC 6455 §7.4.1: 1009, as our own socket (websockets) answers.
                    self._fail(1009, "message too big")
                    continue
                if self._held or self._inbox:
                    self._inbox.append(data)
                else:
                    self._deliver(data)
        except Exception as exc:  # the ASGI server went away under us
            logger.debug("media socket %s: receive failed: %r", self.id.hex[:8], exc)
            self._peer_closed(SocketClosed())

    def _deliver(self, data: str | bytes) -> None:
        handler = self.handler
        if handler is not None and self._open:
            handler.on_message(data)

    async def _writing(self) -> None:
        out, send = self._out, self._send
        try:
            while True:
                if not out:
                    self._out_ready.clear()
                    await self._out_ready.wait()
                    continue
                message = out.popleft()
                closing = message["type"] == "websocket.close"
                if not closing:
                    self._out_bytes -= len(message["text"])
                await send(message)
                if closing:
                    self._close_timer = self._loop.call_later(self._close_timeout, self._done)
                    return
                if self.paused_since is not None and self._out_bytes <= WRITE_LIMIT // 2:
                    self._writable_again()
        except Exception as exc:
            logger.debug("media socket %s: send failed: %r", self.id.hex[:8], exc)
            self._peer_closed(SocketClosed())

    def _writable_again(self) -> None:
        self.paused_since = None
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)
        if self.handler is not None and self._open:
            self.handler.on_writable()

    def _fail(self, code: int, reason: str) -> None:
        """We close because the peer broke the protocol: the handler hears of it."""
        if not self._open:
            return
        self.close(code, reason)
        self._told = False
        self._tell(SocketClosed(failed=(code, reason)))

    def _peer_closed(self, why: SocketClosed) -> None:
        self._open = False
        self._tell(why)
        self._done()

    def _tell(self, why: SocketClosed) -> None:
        if self._told:
            return
        self._told = True
        if self.handler is not None:
            self.handler.on_closed(why)

    def _done(self) -> None:
        """Both directions are over: stop the tasks, wake every waiter."""
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._out.clear()
        self._out_bytes = 0
        for future in (self._drained, self._closed):
            if future is not None and not future.done():
                future.set_result(None)
