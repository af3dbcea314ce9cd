"""What the parts of the server need from each other, as protocols (no import circles).

The server (:mod:`.server`) builds connections and HTTP routes, and a media socket
(:mod:`.websocket`) talks to the connection that owns it; each only sees the narrow
interfaces below, so :mod:`.connection` and :mod:`.http` never import :mod:`.server`, nor
:mod:`.websocket` :mod:`.connection`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from aiohttp import web

from mediastream.agents import AgentRegistry
from mediastream.config import Config
from mediastream.protocols.base import MediaStreamProtocol
from mediastream.protocols.events import CallInfo
from mediastream.recording import Recordings
from mediastream.session import ResampleBatcher

from .calls import CallBook, CallDirectory
from .metrics import ServerMetrics

if TYPE_CHECKING:
    from .cluster import CallTable
    from .commands import CommandTarget
    from .routes import MediaRoute

__all__ = ["CallHost", "CallSocket", "ServerState", "SocketClosed", "SocketHandler"]


class _Server(Protocol):
    """What every part reads of the server: its settings, agents and metrics."""

    @property
    def config(self) -> Config: ...

    @property
    def agents(self) -> AgentRegistry: ...

    @property
    def metrics(self) -> ServerMetrics: ...

    #: This process's live and recently ended calls (``GET /calls``, the dashboard).
    calls: CallBook


class CallHost(_Server, Protocol):
    """What a media connection needs from the server that accepted it."""

    @property
    def batcher(self) -> ResampleBatcher:
        """Runs every call's resampler steps (batched per loop turn, or one at a time)."""

    @property
    def recordings(self) -> Recordings | None:
        """Where calls are recorded; ``None``: recording is off."""

    def check_stream_start(
        self,
        info: CallInfo,
        protocol: MediaStreamProtocol,
        *,
        query: Mapping[str, str],
        headers: Mapping[str, str],
    ) -> CallInfo:
        """Authenticate the stream at ``start`` (AuthenticationError: 1008); returns the
        call description the bot gets."""

    #: The shared state (``mediastream.cluster``): spends stream tokens deployment-wide.
    cluster: CallTable

    def admit(self, connection: CommandTarget) -> None:
        """Count a started call; CapacityError (1013) if a race got past the 503 check."""

    def release(self, connection: CommandTarget) -> None:
        """A started call ended."""

    async def provider_hangup(self, info: CallInfo) -> bool:
        """Hang the call up through the provider's REST API; False when not configured."""


class ServerState(_Server, Protocol):
    """What the upgrade policy (:mod:`.upgrade`) and the health and metrics routes
    (:mod:`.http`) read of the server."""

    @property
    def draining(self) -> bool: ...

    @property
    def active_calls(self) -> int: ...

    @property
    def media_connections(self) -> int: ...

    def add_control_routes(self, app: web.Application) -> None: ...

    #: Where ``GET /calls`` reads its listing (default: this process's book).
    call_directory: CallDirectory


class SocketHandler(Protocol):
    """What a :class:`MediaSocket` tells the connection that owns it."""

    def on_message(self, message: str | bytes) -> None:
        """A complete message; must not raise (the connection maps its own errors)."""

    def on_closed(self, why: SocketClosed) -> None:
        """The WebSocket ended without the handler closing it (called once)."""

    def on_writable(self) -> None:
        """The write buffer drained below its low-water mark: sending may go on."""


class CallSocket(Protocol):
    """What a call's connection, reader and writer use of its WebSocket.

    Two implementations: :class:`~.websocket.MediaSocket`, our own protocol on our own
    port, and :class:`mediastream.asgi.AsgiMediaSocket`, the WebSocket of an ASGI server
    (uvicorn ...). Everything above this line -- protocol, session, bot -- is the same
    for both; only the socket differs.
    """

    #: Unique id (for logs before the call has one).
    id: UUID
    #: Where the upgrade was going (set before the connection is built).
    route: MediaRoute | None
    #: The upgrade request's query string.
    query: str
    #: The connection the socket delivers to.
    handler: SocketHandler | None
    #: Loop time since which sends have been over the high-water mark, or None.
    paused_since: float | None

    @property
    def writable(self) -> bool:
        """A send now goes out at once (open, under the high-water mark)."""

    def hold(self) -> None:
        """Deliver nothing more until :meth:`release` (what arrives waits, in order)."""

    def release(self) -> None:
        """Go on delivering what waits, in order."""

    def send_texts(self, messages: list[str]) -> bool:
        """Send text messages now, in order; False (nothing sent) when not open."""

    async def drain(self) -> None:
        """Wait until the sends are below the high-water mark (or the socket is gone)."""

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake with ``code`` and ``reason``."""

    def abort(self) -> None:
        """Drop the connection at once."""

    async def wait_closed(self) -> None:
        """Wait until the connection is gone (bounded by the close timeout)."""


@dataclass(frozen=True, slots=True)
class SocketClosed:
    """Why a WebSocket ended on the peer's account."""

    #: The close frame the peer sent (code, reason), if any.
    received: tuple[int, str] | None = None
    #: The close frame sent because the peer broke RFC 6455 (1002, 1007, 1009), if any.
    failed: tuple[int, str] | None = None
    #: The peer kept sending while reading none of our replies (MAX_WRITE_BUFFER).
    overflowed: bool = False
