"""Plain HTTP under ASGI: the control plane's handlers, fed from an ASGI request.

The webhook and dial-out handlers (:mod:`mediastream.control`) read a request through
:class:`~mediastream.control.requests.HttpRequest`; :class:`AsgiRequest` is that view of
an ASGI ``http`` scope, and :func:`send_response` writes the aiohttp ``web.Response``
they return through ASGI ``send``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from mediastream.control.requests import MOUNT_PREFIX

from .socket import Message, Receive, Send

__all__ = ["AsgiRequest", "asgi_headers", "send_response"]


def asgi_headers(scope: Mapping[str, Any]) -> CIMultiDictProxy[str]:
    """The scope's headers, case-insensitive (ASGI gives latin-1 byte pairs)."""
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in scope.get("headers", ()):
        headers.add(name.decode("latin-1"), value.decode("latin-1"))
    return CIMultiDictProxy(headers)


class _Body:
    """The request body as ``receive()`` delivers it, read like aiohttp's stream."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._pending = b""
        self._more = True

    async def read(self, n: int = -1, /) -> bytes:
        while not self._pending and self._more:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._more = False
                break
            self._pending = bytes(message.get("body", b""))
            self._more = bool(message.get("more_body", False))
        if n < 0 or n >= len(self._pending):
            chunk, self._pending = self._pending, b""
        else:
            chunk, self._pending = self._pending[:n], self._pending[n:]
        return chunk


class AsgiRequest:
    """An ASGI ``http`` request as the control handlers read it (``HttpRequest``)."""

    def __init__(self, scope: Message, receive: Receive, *, path: str, mount_prefix: str) -> None:
        self._scope = scope
        self.method: str = scope["method"]
        self.headers = asgi_headers(scope)
        self.content = _Body(receive)
        self.path = path
        query = scope.get("query_string", b"").decode("latin-1")
        self.raw_path = path + ("?" + query if query else "")
        self.query: MultiDictProxy[str] = MultiDictProxy(
            MultiDict(parse_qsl(query, keep_blank_values=True)))
        self._values: dict[str, Any] = {MOUNT_PREFIX: mount_prefix}

    @property
    def scheme(self) -> str:
        return str(self._scope.get("scheme", "http"))

    @property
    def host(self) -> str:
        host = self.headers.get("host")
        if host:
            return host
        server = self._scope.get("server")
        return f"{server[0]}:{server[1]}" if server else ""

    @property
    def remote(self) -> str | None:
        client = self._scope.get("client")
        return str(client[0]) if client else None

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    @property
    def content_type(self) -> str:
        value = self.headers.get("content-type", "application/octet-stream")
        return value.partition(";")[0].strip().lower()

    def get(self, key: str, default: Any, /) -> Any:
        return self._values.get(key, default)


async def send_response(send: Send, response: web.Response) -> None:
    """Write an aiohttp response (status, headers, body) through ASGI ``send``."""
    body = response.body
    if body is None:
        data = b""
    elif isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
    else:  # a streamed payload: our handlers never return one
        raise TypeError(f"cannot send a {type(body).__name__} body over ASGI")
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
               for name, value in response.headers.items()
               if name.lower() not in ("content-length", "transfer-encoding")]
    headers.append((b"content-length", str(len(data)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def send_text(send: Send, status: int, text: str, headers: dict[str, str] | None = None
                    ) -> None:
    """A plain-text answer (404, 405, 426 ...)."""
    response = web.Response(status=status, text=text, headers=headers)
    await send_response(send, response)
