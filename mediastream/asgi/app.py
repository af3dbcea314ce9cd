"""The ASGI application: mediastream's media and control routes inside any ASGI server.

See :mod:`mediastream.asgi` for how to mount it; this module is the routing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

from mediastream.agents import AgentRegistry
from mediastream.call import BotRunner
from mediastream.config import Config
from mediastream.control.requests import HttpRequest
from mediastream.control.urls import public_origin
from mediastream.control.webhooks import answer_document
from mediastream.server import MediaStreamServer
from mediastream.server.access import access_mode
from mediastream.server.http import health, metrics
from mediastream.server.pages import calls_response
from mediastream.server.routes import is_media_prefix, parse_media_path
from mediastream.server.upgrade import AT_CAPACITY, SERVER_HEADER, check_upgrade

from .http import AsgiRequest, asgi_headers, send_response, send_text
from .socket import AsgiMediaSocket, Message, Receive, Send

__all__ = ["MediaStreamASGI", "asgi_app"]

logger = logging.getLogger("mediastream.asgi")

_Handler = Callable[[HttpRequest], Awaitable[web.StreamResponse]]
_CONTENT_TYPES = {"twilio": "text/xml", "telnyx": "text/xml", "plivo": "application/xml"}


def asgi_app(
    config: Config | None = None,
    bot: BotRunner | AgentRegistry | None = None,
    *,
    server: MediaStreamServer | None = None,
) -> MediaStreamASGI:
    """An ASGI application serving mediastream's media WebSockets and HTTP routes.

    ``config`` and ``bot`` as for :class:`~mediastream.server.MediaStreamServer`
    (``bot=None`` loads ``config.bot``/``config.agents``). ``server``: share the state --
    calls, capacity, metrics, drain -- of a server you run yourself (on its own port or
    not) instead of creating one.
    """
    return MediaStreamASGI(config, bot, server=server)


class MediaStreamASGI:
    """mediastream as an ASGI application (see :mod:`mediastream.asgi`).

    Its state is a :class:`~mediastream.server.MediaStreamServer` (:attr:`server`),
    started without a port of its own on the first request (or on ASGI lifespan startup
    when this is the top-level application, or ``async with``) and drained by
    :meth:`aclose`.
    """

    def __init__(
        self,
        config: Config | None = None,
        bot: BotRunner | AgentRegistry | None = None,
        *,
        server: MediaStreamServer | None = None,
    ) -> None:
        if server is not None and (config is not None or bot is not None):
            raise TypeError("pass either server= or config and bot, not both")
        #: The server whose state (calls, metrics, drain) this application serves.
        self.server = server if server is not None else MediaStreamServer(config, bot=bot)
        self._starting: asyncio.Task[None] | None = None
        self._routes: dict[tuple[str, str], _Handler] = {}

    @property
    def config(self) -> Config:
        return self.server.config

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the server state (control-plane clients, periodic checks); idempotent."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        if not self.server.started:
            await self.server.start(listen=False)
        self._routes = {(method, path): handler
                        for method, path, handler in self.server.control_routes()}

    async def aclose(self, drain_timeout: float | None = None) -> None:
        """Graceful shutdown: new media upgrades get 503, ``/healthz`` says draining,
        live calls end by themselves for up to ``drain_timeout`` (the config's by
        default), then flush what their bots produced and close with 1001."""
        await self.server.aclose(drain_timeout)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Start with your application and drain when it stops:
        ``FastAPI(lifespan=telephony.lifespan)`` (Starlette does not pass lifespan
        events on to mounted applications)."""
        await self.start()
        try:
            yield
        finally:
            await self.aclose()

    async def __aenter__(self) -> MediaStreamASGI:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ answers for your routes

    def answer(
        self,
        scope: Mapping[str, Any],
        *,
        mount_path: str,
        call_id: str | None,
        provider: str = "twilio",
        agent: str | None = None,
        parameters: Mapping[str, str] | None = None,
    ) -> str:
        """An answer document (TwiML ``<Connect><Stream>``, TeXML or Plivo XML) for an
        endpoint of your own, connecting the call to this application's media route.

        ``scope`` is your request's ASGI scope (``request.scope`` in FastAPI/Starlette:
        the public host comes from ``MEDIASTREAM_PUBLIC_URL``, else from its headers),
        ``mount_path`` where this application is mounted (``"/telephony"``), ``call_id``
        the provider's call id (Twilio ``CallSid``: the stream token is bound to it;
        ``None`` issues an unbound single-use token), ``parameters`` custom parameters
        the bot sees in ``call.info.custom_parameters``. Raises ``ValueError`` when the
        public URL cannot be told (no ``MEDIASTREAM_PUBLIC_URL``, no ``Host`` header).
        """
        if agent is not None and agent not in self.server.agents:
            raise ValueError(f"unknown agent {agent!r}: this application does not run it")
        config = self.config
        origin = public_origin(
            config.public_url, config.trust_forwarded, scheme=str(scope.get("scheme", "http")),
            headers=asgi_headers(scope))
        if origin is None:
            raise ValueError("cannot tell the public URL: set MEDIASTREAM_PUBLIC_URL")
        return answer_document(config, provider, origin.below(_mount(mount_path)),
                               call_id=call_id, agent=agent, parameters=parameters)

    @staticmethod
    def answer_content_type(provider: str = "twilio") -> str:
        """The media type to answer :meth:`answer`'s document with."""
        return _CONTENT_TYPES[provider]

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.start()
        root = str(scope.get("root_path", ""))
        path = str(scope["path"])
        if root and path.startswith(root):  # Starlette >= 0.33 keeps the full path
            path = path[len(root):] or "/"
        if kind == "websocket":
            await self._websocket(scope, receive, send, path, root)
        elif kind == "http":
            await self._http(scope, receive, send, path, root)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Message, receive: Receive, send: Send, path: str, root: str
                    ) -> None:
        method = str(scope["method"]).upper()
        server = self.server
        if path in ("/healthz", "/metrics") and method in ("GET", "HEAD"):
            await send_response(send, health(server) if path == "/healthz" else metrics(server))
            return
        if path == "/calls" and method in ("GET", "HEAD"):
            # The ASGI server's address is not known here: never open, the API token only.
            mode = access_mode(server.config, bound_to="")
            try:
                listing = await calls_response(server, mode, asgi_headers(scope))
            except web.HTTPException as refusal:
                listing = refusal
            await send_response(send, listing)
            return
        if is_media_prefix(path):
            if parse_media_path(path) is None:
                await send_text(send, 404, "no such media path\n")
            else:
                await send_text(
                    send, 426, "media streams need a WebSocket upgrade on a fresh connection\n",
                    {"Upgrade": "websocket", "Connection": "Upgrade"})
            return
        handler = self._routes.get((method, path))
        if handler is None:
            allowed = any(p == path for (_, p) in self._routes)
            await send_text(send, 405 if allowed else 404,
                            "method not allowed\n" if allowed else "not found\n")
            return
        request = AsgiRequest(scope, receive, path=path, mount_prefix=root)
        response = await handler(request)
        assert isinstance(response, web.Response)
        await send_response(send, response)

    async def _websocket(self, scope: Message, receive: Receive, send: Send, path: str,
                         root: str) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        server, config = self.server, self.config
        query = scope.get("query_string", b"").decode("latin-1")
        headers = {k.lower(): v for k, v in _joined(asgi_headers(scope)).items()}
        target = path + ("?" + query if query else "")
        route, refusal = check_upgrade(server, path, target, query, headers, mount_prefix=root)
        if refusal is not None or route is None:
            status, text = refusal if refusal is not None else (500, "internal error")
            await _deny(scope, send, int(status), text)
            return
        await send({"type": "websocket.accept", "headers": [(b"server", SERVER_HEADER.encode())]})
        socket = AsgiMediaSocket(
            receive, send, route=route, query=query,
            max_message_size=config.max_message_size, close_timeout=config.send_timeout)
        server.open_connection(socket, headers)
        await socket.run()


def _joined(headers: Mapping[str, str]) -> dict[str, str]:
    """Repeated headers joined with ``", "`` (what the sans-I/O protocols expect)."""
    merged: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _mount(path: str) -> str:
    path = path.rstrip("/")
    return path if not path or path.startswith("/") else "/" + path


async def _deny(scope: Message, send: Send, status: int, text: str) -> None:
    """Refuse an upgrade with an HTTP status when the ASGI server lets us (the
    ``websocket.http.response`` extension), else with its default 403."""
    if "websocket.http.response" in scope.get("extensions", {}):
        headers = [(b"content-type", b"text/plain; charset=utf-8"),
                   (b"server", SERVER_HEADER.encode())]
        if status == 503 and text == AT_CAPACITY:
            headers.append((b"retry-after", b"1"))
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": headers})
        await send({"type": "websocket.http.response.body", "body": (text + "\n").encode()})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": text})
