"""What the control plane's handlers read of an HTTP request, whoever parsed it.

The handlers (:mod:`.webhooks`, :mod:`.dialout`) are served by aiohttp on our own port
and by :mod:`mediastream.asgi` inside an ASGI application (FastAPI, Starlette ...). Both
hand them an object with the attributes below: :class:`aiohttp.web.Request` has them
as they are; the ASGI side builds one from the ASGI scope. Responses are aiohttp
``web.Response`` objects in both cases (plain values until a server writes them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol

__all__ = ["MOUNT_PREFIX", "BodyReader", "HttpRequest", "mount_prefix"]

#: Request key holding the path the control routes are mounted at (``""`` at the root):
#: URLs built from a request -- a signature's URL, the media URL of an answer -- go
#: through it.
MOUNT_PREFIX: Final = "mediastream.mount_prefix"


class BodyReader(Protocol):
    """The request body: ``read(n)`` returns what has arrived, ``b""`` at its end."""

    async def read(self, n: int = -1, /) -> bytes: ...


class HttpRequest(Protocol):
    """The request attributes the handlers use (a subset of aiohttp's ``web.Request``)."""

    @property
    def method(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive."""

    @property
    def content(self) -> BodyReader: ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def content_type(self) -> str: ...

    @property
    def scheme(self) -> str:
        """How the request reached this process (``http``/``https``)."""

    @property
    def host(self) -> str: ...

    @property
    def path(self) -> str:
        """The path, below the mount prefix, without the query."""

    @property
    def raw_path(self) -> str:
        """Path and query as sent, below the mount prefix."""

    @property
    def query(self) -> Mapping[str, str]: ...

    @property
    def remote(self) -> str | None: ...

    def get(self, key: str, default: Any, /) -> Any:
        """Per-request values (:data:`MOUNT_PREFIX`)."""


def mount_prefix(request: HttpRequest) -> str:
    """The path the routes serving ``request`` are mounted at (``""``: the root)."""
    prefix = request.get(MOUNT_PREFIX, "")
    return prefix if isinstance(prefix, str) else ""
