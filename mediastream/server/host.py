"""What the parts of the server need from each other, as protocols (no import circles).

The server (:mod:`.server`) builds connections and HTTP routes, and a media socket
(:mod:`.websocket`) talks to the connection that owns it; each only sees the narrow
interfaces below, so :mod:`.connection` and :mod:`.http` never import :mod:`.server`, nor
:mod:`.websocket` :mod:`.connection`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from mediastream.agents import AgentRegistry
from mediastream.config import Config
from mediastream.protocols.base import MediaStreamProtocol
from mediastream.protocols.events import CallInfo
from mediastream.session import ResampleBatcher

from .metrics import ServerMetrics

__all__ = ["CallHost", "ServerState", "SocketClosed", "SocketHandler"]


class _Server(Protocol):
    """What every part reads of the server: its settings, agents and metrics."""

    @property
    def config(self) -> Config: ...

    @property
    def agents(self) -> AgentRegistry: ...

    @property
    def metrics(self) -> ServerMetrics: ...


class CallHost(_Server, Protocol):
    """What a media connection needs from the server that accepted it."""

    @property
    def batcher(self) -> ResampleBatcher:
        """Runs every call's resampler steps (batched per loop turn, or one at a time)."""

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

    def admit(self) -> None:
        """Count a started call; CapacityError (1013) if a race got past the 503 check."""

    def release(self) -> None:
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


class SocketHandler(Protocol):
    """What a :class:`MediaSocket` tells the connection that owns it."""

    def on_message(self, message: str | bytes) -> None:
        """A complete message; must not raise (the connection maps its own errors)."""

    def on_closed(self, why: SocketClosed) -> None:
        """The WebSocket ended without the handler closing it (called once)."""

    def on_writable(self) -> None:
        """The write buffer drained below its low-water mark: sending may go on."""


@dataclass(frozen=True, slots=True)
class SocketClosed:
    """Why a WebSocket ended on the peer's account."""

    #: The close frame the peer sent (code, reason), if any.
    received: tuple[int, str] | None = None
    #: The close frame sent because the peer broke RFC 6455 (1002, 1007, 1009), if any.
    failed: tuple[int, str] | None = None
    #: The peer kept sending while reading none of our replies (MAX_WRITE_BUFFER).
    overflowed: bool = False
