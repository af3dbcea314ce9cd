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
from .routes import parse_media_path
from .websocket import MediaSocket

__all__ = ["SERVER_HEADER", "answer_upgrade", "request_headers"]

logger = logging.getLogger("mediastream.server")

#: The ``Server`` header of our responses.
SERVER_HEADER: Final = "mediastream"


def answer_upgrade(server: ServerState, socket: MediaSocket, request: Request) -> Response:
    """The response to ``request``; on success ``socket.route`` and ``socket.query`` say
    where it was going."""
    path, _, query = request.path.partition("?")
    route = parse_media_path(path)
    if route is None:
        return _reject(server, socket, http.HTTPStatus.NOT_FOUND, "no such media path")
    if route.agent is not None and route.agent not in server.agents:
        return _reject(server, socket, http.HTTPStatus.NOT_FOUND, "unknown agent")
    if server.draining:
        return _reject(server, socket, http.HTTPStatus.SERVICE_UNAVAILABLE,
                       "server is shutting down")
    if server.media_connections >= server.config.max_calls:
        response = _reject(server, socket, http.HTTPStatus.SERVICE_UNAVAILABLE,
                           "server at capacity")
        response.headers["Retry-After"] = "1"
        return response
    try:
        control.check_media_upgrade(
            server.config,
            path=request.path,
            query=dict(parse_qsl(query, keep_blank_values=True)),
            headers=request_headers(request.headers),
        )
    except AuthenticationError as exc:
        logger.warning("media upgrade to %s refused: %s", path, exc)
        return _reject(server, socket, http.HTTPStatus.FORBIDDEN, "forbidden")
    response = socket.accept(request)  # websockets' checks of the upgrade itself
    response.headers["Server"] = SERVER_HEADER
    if response.status_code == http.HTTPStatus.SWITCHING_PROTOCOLS:
        socket.route = route
        socket.query = query
    else:
        server.metrics.rejected.labels(str(response.status_code)).inc()
    return response


def _reject(
    server: ServerState, socket: MediaSocket, status: http.HTTPStatus, text: str
) -> Response:
    server.metrics.rejected.labels(str(status.value)).inc()
    response = socket.reject(status, text + "\n")
    response.headers["Server"] = SERVER_HEADER
    return response


def request_headers(headers: Headers) -> Mapping[str, str]:
    """Lower-case keys, repeated headers joined: what the sans-I/O protocols expect."""
    merged: dict[str, str] = {}
    for name, value in headers.raw_items():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged
