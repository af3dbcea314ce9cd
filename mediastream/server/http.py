"""The plain-HTTP side of the port: health, metrics, webhooks and call control (aiohttp).

:func:`mount` adds the routes to any :class:`aiohttp.web.Application`, so an embedder
can serve them from an app of their own; :class:`~mediastream.server.MediaStreamServer`
mounts them on its own app (or on the one it was given).

* ``GET /healthz`` -- ``200 {"status": "ok", ...}``; ``503 {"status": "draining"}`` once
  shutdown began, so a load balancer stops sending new calls.
* ``GET /metrics`` -- Prometheus exposition (see :mod:`mediastream.server.metrics`).
* ``GET /calls``, ``/phone``, ``/dashboard`` -- live calls, the softphone and the
  dashboard, under the access rule of :mod:`mediastream.server.access`.
* the webhook and REST control routes of :mod:`mediastream.control`.
* ``/ws...`` without a WebSocket upgrade -- ``426 Upgrade Required`` (RFC 9110 §15.5.22).
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .host import ServerState
from .pages import add_page_routes
from .routes import MEDIA_PREFIX, parse_media_path

__all__ = ["HTTP_LOGGER", "add_routes", "health", "metrics", "mount", "mount_media_fallback"]

#: aiohttp's logger for the plain-HTTP side (requests it cannot parse are INFO here).
HTTP_LOGGER = logging.getLogger("mediastream.server.http")

SERVER_KEY: web.AppKey[ServerState] = web.AppKey("mediastream.server")


class _PeerErrorFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (no Host, a bad header ...) as an ERROR with
    a traceback; it is the peer's mistake, answered 4xx: log it as INFO, one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            text = record.getMessage()
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "%s (answered %d: %s)", (
                text, exc.code, str(exc.message).strip()[:200])
            record.exc_info = None
            record.exc_text = None
        return True


HTTP_LOGGER.addFilter(_PeerErrorFilter())


def mount(app: web.Application, server: ServerState, *, control: bool = True) -> None:
    """Add ``/healthz``, ``/metrics`` and (``control=True``) the webhook/control routes
    to an aiohttp ``app`` you serve yourself, on a port of your own.

    Call it before ``app`` starts (aiohttp freezes the router then). The routes read
    ``server``'s live state, so the server should be running while ``app`` serves.

    The answer documents must send the media to ``server``'s port, not ``app``'s (which
    has no media routes): with ``control=True`` the server's ``public_url`` must say
    where that is, else ``ValueError`` names the ways out.
    """
    if control and not server.config.public_url:
        raise ValueError(
            "mount(app, server): answer documents built from this app's requests would "
            "send the media to this app's port, which has no media routes. Set "
            "Config(public_url=...) (MEDIASTREAM_PUBLIC_URL) to the URL the media server "
            "is reached at, or pass app= to MediaStreamServer to serve your app on its "
            "port, or mount(app, server, control=False) for /healthz and /metrics only; "
            "an ASGI app can mount mediastream.asgi.asgi_app() instead")
    add_routes(app, server, control=control, own_port=False)


def add_routes(app: web.Application, server: ServerState, *, control: bool = True,
               own_port: bool = True) -> None:
    """:func:`mount` without the check: the server's own app (media on the same port).

    ``own_port=False``: ``app`` is served on a port of its embedder's, whose address the
    access rule of ``/phone``, ``/dashboard`` and ``/calls`` cannot know: they are then
    never open, only behind the API token.
    """
    app[SERVER_KEY] = server
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    add_page_routes(app, server, bound_to=None if own_port else "")
    if control:
        server.add_control_routes(app)


def mount_media_fallback(app: web.Application) -> None:
    """Answer plain HTTP requests to the media paths with 426 (the server's own app)."""
    app.router.add_route("*", MEDIA_PREFIX, _upgrade_required)
    app.router.add_route("*", MEDIA_PREFIX + "/{tail:.*}", _upgrade_required)


def health(server: ServerState) -> web.Response:
    """The ``/healthz`` answer for ``server`` (also served by :mod:`mediastream.asgi`)."""
    body = {
        "status": "draining" if server.draining else "ok",
        "calls": server.active_calls,
        "connections": server.media_connections,
    }
    return web.json_response(body, status=503 if server.draining else 200)


def metrics(server: ServerState) -> web.Response:
    """The ``/metrics`` answer for ``server`` (Prometheus exposition)."""
    body, content_type = server.metrics.render()
    # Content-Type carries parameters (version, charset): set the header verbatim.
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _healthz(request: web.Request) -> web.Response:
    return health(request.app[SERVER_KEY])


async def _metrics(request: web.Request) -> web.Response:
    return metrics(request.app[SERVER_KEY])


async def _upgrade_required(request: web.Request) -> web.Response:
    if parse_media_path(request.path) is None:
        raise web.HTTPNotFound(text="no such media path\n")
    return web.Response(
        status=426,
        text="media streams need a WebSocket upgrade on a fresh connection\n",
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )
