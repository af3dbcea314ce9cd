"""One port for HTTP and media WebSockets: read the first request head, then hand over.

``websockets``' server answers anything that is not a WebSocket upgrade with an error
(it rejects requests that carry a body), while webhooks are form POSTs. So the
listening socket's protocol is this small demultiplexer: it buffers the first request
head (bounded in size and time), decides where it goes, swaps the transport's protocol
with :meth:`asyncio.Transport.set_protocol` and replays the bytes read so far through
the new protocol's ``connection_made`` + ``data_received``. After the hand-over it is out
of the picture: no per-message cost, no copy, no extra task.

Answers it gives itself, before any hand-over (RFC 9110 §15.5, RFC 6585 §5):

* ``400`` -- the bytes are not an HTTP/1.x request head (garbage, a TLS ClientHello sent
  to a plain-text port), decided as early as the first bytes allow;
* ``408`` -- the head did not arrive within ``head_timeout``;
* ``431`` -- the head is larger than ``max_head_size``.

After such an answer the connection lingers (RFC 9112 §9.6): our side is half-closed and
whatever the peer still sends is read and dropped until its EOF or ``_LINGER_S``, so a
peer still sending its endless head reads the answer instead of a reset.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["HeadDemux", "RequestHead", "parse_head"]

logger = logging.getLogger(__name__)

_END = b"\r\n\r\n"
# RFC 9110 §5.6.2 token characters, for the method.
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_REQUEST_LINE = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}) ([\x21-\x7e]{1,8192}) HTTP/1\.[01]"
)
_MAX_METHOD = 32
#: How long a refused connection may keep sending after our answer (lingering close).
_LINGER_S = 2.0

_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}


class BadHead(ValueError):
    """The bytes are not an HTTP/1.x request head."""


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What the dispatcher needs to route a request; the full parse is the next owner's."""

    method: str
    target: str
    path: str
    query: str
    #: Header names lower-cased; a repeated header keeps its values joined by ", ".
    headers: dict[str, str]

    @property
    def is_websocket_upgrade(self) -> bool:
        """``Upgrade: websocket`` is present (RFC 6455 §4.2.1); the rest is checked later."""
        upgrade = self.headers.get("upgrade", "")
        return any(p.strip().lower() == "websocket" for p in upgrade.split(","))


def parse_head(head: bytes) -> RequestHead:
    """Parse a request head (without the final blank line). Raises :class:`BadHead`."""
    lines = head.split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise BadHead("malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or any(c not in _TOKEN for c in name):
            raise BadHead("malformed header line")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    target = match.group(2).decode("ascii")
    path, _, query = target.partition("?")
    return RequestHead(match.group(1).decode("ascii"), target, path, query, headers)


#: Gets the transport and every byte read so far, and must install a new protocol.
HandOver = Callable[[asyncio.Transport, bytes], None]


class HeadDemux(asyncio.Protocol):
    """The listening socket's protocol until the first request head has arrived.

    ``route(head)`` returns the hand-over for that request; it runs synchronously inside
    :meth:`data_received`, so no byte can arrive between the decision and the swap.
    """

    __slots__ = (
        "_buffer",
        "_done",
        "_max_head",
        "_pending",
        "_route",
        "_timeout",
        "_timer",
        "_transport",
    )

    def __init__(
        self,
        route: Callable[[RequestHead], HandOver],
        *,
        max_head: int,
        timeout: float,
        pending: set[HeadDemux],
    ) -> None:
        self._route = route
        self._max_head = max_head
        self._pending = pending
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timeout = timeout
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._pending.add(self)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        buffer = self._buffer
        start = max(0, len(buffer) - 3)
        buffer += data
        end = buffer.find(_END, start)
        if end < 0:
            if len(buffer) > self._max_head:
                self._reject(431, "request head too large")
            elif not _plausible_prefix(buffer):
                self._reject(400, "not an HTTP/1.x request")
            return
        if end + len(_END) > self._max_head:
            self._reject(431, "request head too large")
            return
        try:
            head = parse_head(bytes(buffer[:end]))
        except BadHead as exc:
            self._reject(400, str(exc))
            return
        self._finish()
        transport = self._transport
        assert transport is not None
        try:
            hand_over = self._route(head)
            hand_over(transport, bytes(buffer))
        except Exception:
            logger.exception("hand-over of %s %.200s failed", head.method, head.target)
            transport.abort()

    def eof_received(self) -> bool:
        # A peer that half-closes before finishing its head will never finish it.
        if not self._done:
            self._finish()
            if self._transport is not None:
                self._transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def close(self) -> None:
        """Drop a connection whose head has not arrived, or that lingers after our
        answer (server shutdown)."""
        self._finish()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    # ------------------------------------------------------------------ internals

    def _finish(self) -> None:
        self._done = True
        self._pending.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if not self._done:
            self._reject(408, "request head not received in time")

    def _reject(self, status: int, detail: str) -> None:
        # Done with the head, but still pending (and reading) while the answer lingers.
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self._transport
        if transport is None:
            self._finish()
            return
        peer = transport.get_extra_info("peername")
        logger.info("rejected connection from %s: %d %s", peer, status, detail)
        body = f"{status} {_REASONS[status]}: {detail}\n".encode()
        transport.write(
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status].encode())
            + b"Content-Type: text/plain; charset=utf-8\r\n"
            + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            + body
        )
        if not transport.can_write_eof():
            transport.close()
            return
        # Lingering close (RFC 9112 §9.6): closing while the peer is still sending (an
        # endless head, a slowloris) makes the kernel answer with a reset that can
        # destroy our answer before the peer reads it. Half-close instead, discard what
        # still arrives, and close at the peer's EOF or after _LINGER_S.
        transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(_LINGER_S, transport.close)


def _plausible_prefix(buffer: bytearray) -> bool:
    """False as soon as the bytes so far cannot begin an HTTP/1.x request line.

    A TLS ClientHello (first byte 0x16) or binary noise fails on its first byte, so the
    peer hears 400 at once instead of waiting for the head timeout.
    """
    space = buffer.find(b" ")
    method = buffer if space < 0 else buffer[:space]
    if len(method) > _MAX_METHOD or any(c not in _TOKEN for c in method):
        return False
    if space == 0:
        return False
    line_end = buffer.find(b"\r\n")
    if line_end >= 0:
        return _REQUEST_LINE.fullmatch(bytes(buffer[:line_end])) is not None
    if buffer.endswith(b"\r"):
        # The line's CR arrived, its LF not yet (a segment may end anywhere).
        return _REQUEST_LINE.fullmatch(bytes(buffer[:-1])) is not None
    if b"\r" in buffer:
        # A CR not followed by LF: no request line can contain it. Refused now, as it is
        # when a segment happens to end right after it (the decision must not depend on
        # where the bytes were split).
        return False
    # An incomplete request line: "METHOD SP target SP" then a prefix of "HTTP/1.x".
    parts = bytes(buffer).split(b" ")
    if len(parts) > 3:
        return False
    if len(parts) == 3:
        version = parts[2]
        return b"HTTP/1.0".startswith(version) or b"HTTP/1.1".startswith(version)
    return True
