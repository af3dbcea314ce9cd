"""The answer to a media upgrade request: reject before the upgrade what can be rejected.

Checks, in order, each with its HTTP status (RFC 9110 §15; docs/design.md): unknown media
path or agent 404, draining 503, at capacity 503 + ``Retry-After``, authentication (stream
token / signature, when the control plane requires it) 403; then websockets' own
checks of the upgrade itself (RFC 6455 §4.2.1: 400, 405, 426 ...) and the 101.
"""

from __future__ import annotations

import http
import logging
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from mediastream.errors import AuthenticationError

from . import control
from .host import ServerState
from .routes import MediaRoute, parse_media_path
from .websocket import MediaSocket

__all__ = ["AT_CAPACITY", "SERVER_HEADER", "answer_upgrade", "check_upgrade", "request_headers"]

logger = logging.getLogger("mediastream.server")

#: The ``Server`` header of our responses.
SERVER_HEADER: Final = "mediastream"
#: The refusal text at capacity (answered with ``Retry-After``).
AT_CAPACITY: Final = "server at capacity"


def answer_upgrade(server: ServerState, socket: MediaSocket, request: Request) -> Response:
    """The response to ``request``; on success ``socket.route`` and ``socket.query`` say
    where it was going."""
    path, _, query = request.path.partition("?")
    route, refusal = check_upgrade(
        server, path, request.path, query, request_headers(request.headers))
    if refusal is not None:
        status, text = refusal
        response = socket.reject(status, text + "\n")
        response.headers["Server"] = SERVER_HEADER
        if status == http.HTTPStatus.SERVICE_UNAVAILABLE and text == AT_CAPACITY:
            response.headers["Retry-After"] = "1"
        return response
    response = socket.accept(request)  # websockets' checks of the upgrade itself
    response.headers["Server"] = SERVER_HEADER
    if response.status_code == http.HTTPStatus.SWITCHING_PROTOCOLS:
        socket.route = route
        socket.query = query
    else:
        server.metrics.rejected.labels(str(response.status_code)).inc()
    return response


def check_upgrade(
    server: ServerState,
    path: str,
    target: str,
    query: str,
    headers: Mapping[str, str],
    *,
    mount_prefix: str = "",
) -> tuple[MediaRoute | None, tuple[http.HTTPStatus, str] | None]:
    """The policy before a media upgrade, whoever owns the socket: ``(route, None)`` to
    go on, or ``(None, (status, text))`` to refuse (counted in the metrics).

    ``path`` is the media path (``/ws/...``, below any mount), ``target`` the path and
    query the request named (what a signature covers, below ``mount_prefix``, the path
    an ASGI application is mounted at).
    """
    route = parse_media_path(path)
    refusal: tuple[http.HTTPStatus, str] | None = None
    if route is None:
        refusal = (http.HTTPStatus.NOT_FOUND, "no such media path")
    elif route.agent is not None and route.agent not in server.agents:
        refusal = (http.HTTPStatus.NOT_FOUND, "unknown agent")
    elif server.draining:
        refusal = (http.HTTPStatus.SERVICE_UNAVAILABLE, "server is shutting down")
    elif server.media_connections >= server.config.max_calls:
        refusal = (http.HTTPStatus.SERVICE_UNAVAILABLE, AT_CAPACITY)
    else:
        try:
            control.check_media_upgrade(
                server.config,
                path=target,
                query=dict(parse_qsl(query, keep_blank_values=True)),
                headers=headers,
                mount_prefix=mount_prefix,
            )
        except AuthenticationError as exc:
            logger.warning("media upgrade to %s refused: %s", mount_prefix + path, exc)
            refusal = (http.HTTPStatus.FORBIDDEN, "forbidden")
    if refusal is not None:
        server.metrics.rejected.labels(str(refusal[0].value)).inc()
        return None, refusal
    return route, None


def request_headers(headers: Headers) -> Mapping[str, str]:
    """Lower-case keys, repeated headers joined: what the sans-I/O protocols expect."""
    merged: dict[str, str] = {}
    for name, value in headers.raw_items():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged
