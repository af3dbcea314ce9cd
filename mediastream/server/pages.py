"""``GET /calls`` (JSON), and the softphone and dashboard pages, on the server's HTTP side.

All of them follow one access rule (:mod:`.access`). ``GET /calls`` is a thin route over
the server's :class:`~.calls.CallDirectory`: what it lists -- this process, or a whole
deployment -- is the directory's business, the JSON shape is documented in
docs/design.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web

from .access import Access, access_mode, check_access, startup_note
from .host import ServerState

__all__ = ["add_page_routes", "calls_response"]

logger = logging.getLogger("mediastream.server.pages")

_SERVER: web.AppKey[ServerState] = web.AppKey("mediastream.pages.server")
_MODE: web.AppKey[Access] = web.AppKey("mediastream.pages.access")

#: Listings are live: never cached by a browser or a proxy.
NO_STORE = {"Cache-Control": "no-store"}


def add_page_routes(app: web.Application, server: ServerState) -> None:
    """Add ``GET /calls`` to ``app`` and log what the access rule decided."""
    mode = access_mode(server.config)
    app[_SERVER] = server
    app[_MODE] = mode
    app.router.add_get("/calls", _calls)
    logger.info("%s", startup_note(server.config, mode))


async def calls_response(server: ServerState, mode: Access,
                         headers: Mapping[str, str]) -> web.Response:
    """The ``GET /calls`` answer for ``server`` under access ``mode``."""
    check_access(mode, server.config.api_token, headers, data=True)
    listing = await server.call_directory.listing()
    return web.json_response(listing, headers=NO_STORE)


async def _calls(request: web.Request) -> web.Response:
    return await calls_response(request.app[_SERVER], request.app[_MODE], request.headers)
