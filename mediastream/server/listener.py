"""The one public port: each accepted connection's first request head decides its owner.

The listening socket speaks to :class:`~.demux.HeadDemux` first, which reads the first
request head and hands the connection over: WebSocket upgrades under ``/ws`` to a new
:class:`~.websocket.MediaSocket`, everything else to aiohttp's low-level server. The
listener keeps count of both kinds of connection it has not handed over for good (heads
still arriving, media sockets still open), so a shutdown can close every one of them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from aiohttp import web

from mediastream.config import Config

from .demux import HandOver, HeadDemux, RequestHead
from .routes import is_media_prefix
from .websocket import MediaSocket, OnOpen, OnRequest

__all__ = ["Listener", "address"]

_ws_logger = logging.getLogger("mediastream.server.websocket")


class Listener:
    """Accepts connections on the server's port (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        http: web.AppRunner,
        *,
        answer_upgrade: OnRequest,
        open_media: OnOpen,
        ssl_context: ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._config = config
        self._http = http
        self._answer = answer_upgrade
        self._open = open_media
        self._ssl = ssl_context
        self._sock = sock
        self._reuse_port = reuse_port
        self._server: asyncio.Server | None = None
        #: Connections whose first request head has not arrived (or that linger after
        #: the demultiplexer's own error answer).
        self.pending_heads: set[HeadDemux] = set()
        #: Media sockets not yet closed, upgraded or not.
        self.media_sockets: set[MediaSocket] = set()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return tuple(self._server.sockets)

    async def start(self) -> None:
        """Bind (or take ``sock``) and start accepting."""
        loop = asyncio.get_running_loop()
        config = self._config
        # The TLS handshake gets the WebSocket handshake's bound (asyncio's own is 60 s).
        handshake = config.handshake_timeout if self._ssl is not None else None
        if self._sock is not None:
            self._server = await loop.create_server(
                self._new_demux, sock=self._sock, ssl=self._ssl, ssl_handshake_timeout=handshake
            )
        else:
            self._server = await loop.create_server(
                self._new_demux, config.host, config.port, reuse_port=self._reuse_port or None,
                backlog=1024, ssl=self._ssl, ssl_handshake_timeout=handshake,
            )

    def stop_accepting(self) -> None:
        """Close the listening sockets and drop connections whose head never came."""
        if self._server is not None:
            self._server.close()
        for demux in list(self.pending_heads):
            demux.close()

    def abort_media(self) -> None:
        """Drop every media socket still open (the end of a shutdown)."""
        for media in list(self.media_sockets):
            media.abort()

    def _new_demux(self) -> HeadDemux:
        return HeadDemux(
            self._route_head,
            max_head=self._config.max_head_size,
            timeout=self._config.head_timeout,
            pending=self.pending_heads,
        )

    def _route_head(self, head: RequestHead) -> HandOver:
        # Every upgrade under /ws is ours (an unknown one is answered 404 there); other
        # upgrades belong to the aiohttp app, which may have WebSocket routes of its own.
        if head.is_websocket_upgrade and is_media_prefix(head.path):
            return self._to_media
        return self._to_http

    def _to_http(self, transport: asyncio.Transport, data: bytes) -> None:
        assert self._http.server is not None
        handler = self._http.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(data)

    def _to_media(self, transport: asyncio.Transport, data: bytes) -> None:
        config = self._config
        media = MediaSocket(
            on_request=self._answer,
            on_open=self._open,
            max_message_size=config.max_message_size,
            close_timeout=config.send_timeout,
            fast_frames=config.fast_frames,
            logger=_ws_logger,
            sockets=self.media_sockets,
        )
        transport.set_protocol(media)
        media.connection_made(transport)
        media.data_received(data)


def address(sock: socket.socket) -> str:
    """``host:port`` of a listening socket (``[host]:port`` for IPv6), for logs."""
    name = sock.getsockname()
    return f"[{name[0]}]:{name[1]}" if sock.family == socket.AF_INET6 else f"{name[0]}:{name[1]}"
