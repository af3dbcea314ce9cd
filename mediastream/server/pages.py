"""``GET /calls`` (JSON), and the softphone and dashboard pages, on the server's HTTP side.

=============================  ===================================================
``GET /calls``                 the live and recently ended calls (JSON)
``GET /phone``                 the softphone page
``GET /dashboard``             the calls dashboard page
``GET /phone/<file>``          their scripts and stylesheet (a fixed list)
``GET /phone/config``          what the page needs to know: the access mode, whether
                               streams need a stream token
``POST /phone/token``          a one-time stream token for one call (JSON body
                               ``{"provider": ..., "call_id": ...}``)
=============================  ===================================================

All of them follow one access rule (:mod:`.access`). ``GET /calls`` is a thin route over
the server's :class:`~.calls.CallDirectory`: what it lists -- this process, or a whole
deployment -- is the directory's business, the JSON shape is documented in
docs/design.md.

The pages are static files shipped inside the package (``mediastream/web/``, read through
:mod:`importlib.resources`, so an installed wheel serves them): vanilla JavaScript, no
build step, nothing fetched from elsewhere. They are served as they are, with an ETag and
``Cache-Control: no-cache`` (the browser revalidates, so an upgrade is picked up at once)
and a Content-Security-Policy that allows this origin only.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources

from aiohttp import web

from mediastream.control.auth import auth_enabled, stream_tokens

from .access import Access, access_mode, check_access, startup_note
from .host import ServerState
from .routes import PROVIDERS

__all__ = ["STATIC_FILES", "add_page_routes", "calls_response", "static_file"]

logger = logging.getLogger("mediastream.server.pages")

_SERVER: web.AppKey[ServerState] = web.AppKey("mediastream.pages.server")
_MODE: web.AppKey[Access] = web.AppKey("mediastream.pages.access")

#: Listings are live: never cached by a browser or a proxy.
NO_STORE = {"Cache-Control": "no-store"}

#: The files of ``mediastream/web/`` served, and their content types.
STATIC_FILES: dict[str, str] = {
    "phone.html": "text/html; charset=utf-8",
    "dashboard.html": "text/html; charset=utf-8",
    "phone.js": "text/javascript; charset=utf-8",
    "worklet.js": "text/javascript; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "phone.css": "text/css; charset=utf-8",
}
#: This origin only; the media WebSocket is on this origin too (ws: / wss: for the
#: schemes, as CSP 'self' does not cover them in every browser).
_CSP = ("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "media-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
_MAX_CALL_ID = 128


def add_page_routes(app: web.Application, server: ServerState, *,
                    bound_to: str | None = None) -> None:
    """Add the routes to ``app`` and log what the access rule decided; ``bound_to``: the
    address ``app`` listens on when it is not ``config.host`` (``""``: unknown)."""
    mode = access_mode(server.config, bound_to=bound_to)
    app[_SERVER] = server
    app[_MODE] = mode
    app.router.add_get("/calls", _calls)
    app.router.add_get("/phone", _page("phone.html"))
    app.router.add_get("/dashboard", _page("dashboard.html"))
    app.router.add_get("/phone/config", _config)
    app.router.add_post("/phone/token", _token)
    app.router.add_get("/phone/{name}", _asset)
    logger.info("%s", startup_note(server.config, mode, bound_to=bound_to))


@functools.cache
def static_file(name: str) -> tuple[bytes, str]:
    """A shipped file's bytes and ETag (read once per process)."""
    if name not in STATIC_FILES:
        raise KeyError(name)
    data = resources.files("mediastream").joinpath("web", name).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _serve(request: web.Request, name: str) -> web.Response:
    check_access(request.app[_MODE], request.app[_SERVER].config.api_token, request.headers,
                 data=False)
    data, etag = static_file(name)
    headers = {
        "Content-Type": STATIC_FILES[name],
        "Cache-Control": "no-cache",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if name.endswith(".html"):
        headers["Content-Security-Policy"] = _CSP
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, headers=headers)


def _page(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return _serve(request, name)

    return handler


async def _asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES or name.endswith(".html"):
        raise web.HTTPNotFound(text="no such file\n")
    return _serve(request, name)


async def _config(request: web.Request) -> web.Response:
    config = request.app[_SERVER].config
    mode = request.app[_MODE]
    check_access(mode, config.api_token, request.headers, data=False)
    body = {"access": mode.value, "stream_tokens": auth_enabled(config),
            "providers": list(PROVIDERS)}
    return web.json_response(body, headers=NO_STORE)


async def _token(request: web.Request) -> web.Response:
    """A stream token for the softphone's next call, bound to the call id it will send."""
    config = request.app[_SERVER].config
    check_access(request.app[_MODE], config.api_token, request.headers, data=True)
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body must be JSON\n") from None
    provider = body.get("provider") if isinstance(body, dict) else None
    call_id = body.get("call_id") if isinstance(body, dict) else None
    if provider not in PROVIDERS:
        raise web.HTTPBadRequest(text=f"provider must be one of {', '.join(PROVIDERS)}\n")
    if not isinstance(call_id, str) or not 0 < len(call_id) <= _MAX_CALL_ID:
        raise web.HTTPBadRequest(text=f"call_id must be a string of 1..{_MAX_CALL_ID} "
                                      "characters\n")
    token = stream_tokens(config).issue(provider, call_id)
    return web.json_response({"token": token, "ttl_s": config.stream_token_ttl},
                             headers=NO_STORE)


async def calls_response(server: ServerState, mode: Access,
                         headers: Mapping[str, str]) -> web.Response:
    """The ``GET /calls`` answer for ``server`` under access ``mode``."""
    check_access(mode, server.config.api_token, headers, data=True)
    listing = await server.call_directory.listing()
    return web.json_response(listing, headers=NO_STORE)


async def _calls(request: web.Request) -> web.Response:
    return await calls_response(request.app[_SERVER], request.app[_MODE], request.headers)
