"""AsgiMediaSocket's contract with its connection, driven through the ASGI interface
itself (``receive``/``send`` coroutines, as an ASGI server calls them): order, holding,
flow control, the peer's close, a message over the limit, abort."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest

from mediastream.asgi.socket import WRITE_LIMIT, AsgiMediaSocket
from mediastream.server.host import SocketClosed
from mediastream.server.routes import MediaRoute


class Handler:
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.closed: list[SocketClosed] = []
        self.writable = 0
        self.socket: AsgiMediaSocket | None = None
        self.hold_after: int | None = None

    def on_message(self, message: str | bytes) -> None:
        self.messages.append(message)
        if self.hold_after is not None and len(self.messages) == self.hold_after:
            assert self.socket is not None
            self.socket.hold()

    def on_closed(self, why: SocketClosed) -> None:
        self.closed.append(why)

    def on_writable(self) -> None:
        self.writable += 1


class Asgi:
    """The ASGI server's side: a queue of events in, the messages sent out; ``gate``
    stands for a transport over its high-water mark (``send`` waits on it)."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[MutableMapping[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        await self.gate.wait()
        self.sent.append(message)


def _socket(asgi: Asgi, handler: Handler, max_size: int = 1000) -> AsgiMediaSocket:
    sock = AsgiMediaSocket(asgi.receive, asgi.send, route=MediaRoute("twilio"), query="",
                           max_message_size=max_size, close_timeout=0.5)
    sock.handler = handler
    handler.socket = sock
    return sock


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_messages_in_order_held_then_released_then_the_peers_close() -> None:
    asgi, handler = Asgi(), Handler()
    sock = _socket(asgi, handler)
    handler.hold_after = 2
    run = asyncio.create_task(sock.run())
    for i in range(5):
        asgi.incoming.put_nowait({"type": "websocket.receive", "text": f"m{i}"})
    await _turns()
    assert handler.messages == ["m0", "m1"]  # held: the rest waits, unread or in order
    sock.release()
    await _turns()
    assert handler.messages == [f"m{i}" for i in range(5)]
    asgi.incoming.put_nowait({"type": "websocket.disconnect", "code": 1001, "reason": "bye"})
    await asyncio.wait_for(run, 5)
    assert handler.closed == [SocketClosed((1001, "bye"))]
    assert not sock.send_texts(["late"])


@pytest.mark.asyncio
async def test_flow_control_and_a_close_behind_what_was_queued() -> None:
    asgi, handler = Asgi(), Handler()
    sock = _socket(asgi, handler)
    run = asyncio.create_task(sock.run())
    asgi.gate.clear()  # the transport is full: send() waits
    chunk = "x" * 1000
    n = 0
    while sock.writable:
        assert sock.send_texts([chunk])
        n += 1
    assert n == WRITE_LIMIT // 1000 + 1  # over the high-water mark: not writable
    assert sock.paused_since is not None
    drained = asyncio.ensure_future(sock.drain())
    await _turns()
    assert not drained.done() and asgi.sent == []
    asgi.gate.set()  # the transport drained
    await asyncio.wait_for(drained, 5)
    assert handler.writable == 1 and sock.writable
    sock.send_texts(["last"])
    sock.close(1000, "done")
    await _turns(10)
    assert [m["type"] for m in asgi.sent] == ["websocket.send"] * (n + 1) + ["websocket.close"]
    assert asgi.sent[-2]["text"] == "last"
    assert asgi.sent[-1] == {"type": "websocket.close", "code": 1000, "reason": "done"}
    asgi.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(run, 5)
    assert handler.closed == []  # the handler closed it: nothing to tell


@pytest.mark.asyncio
async def test_a_message_over_the_limit_fails_1009_and_abort_ends_at_once() -> None:
    asgi, handler = Asgi(), Handler()
    sock = _socket(asgi, handler, max_size=10)
    run = asyncio.create_task(sock.run())
    asgi.incoming.put_nowait({"type": "websocket.receive", "text": "x" * 11})
    await _turns(10)
    assert handler.messages == []
    assert handler.closed == [SocketClosed(failed=(1009, "message too big"))]
    assert asgi.sent[-1]["code"] == 1009
    # The peer never answers the close: the socket is done close_timeout later.
    await asyncio.wait_for(run, 5)

    asgi2, handler2 = Asgi(), Handler()
    sock2 = _socket(asgi2, handler2)
    run2 = asyncio.create_task(sock2.run())
    asgi2.gate.clear()
    sock2.send_texts(["stuck"])  # send() will never return
    await _turns()
    sock2.abort()
    await asyncio.wait_for(run2, 5)
    await asyncio.wait_for(sock2.wait_closed(), 5)
