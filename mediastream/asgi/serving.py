"""Run uvicorn so that live calls drain before uvicorn closes their sockets.

uvicorn's shutdown (SIGTERM, Ctrl-C) closes every open WebSocket with 1012 at once and
only then runs the application's lifespan shutdown: a call in progress would be cut
mid-sentence, before :meth:`~.app.MediaStreamASGI.aclose` could let it finish.
:func:`serve_with_drain` runs a uvicorn server whose shutdown first drains the given
applications (new media upgrades 503, ``/healthz`` 503, live calls end by themselves
within ``drain_timeout``, the rest flush their bots' audio and close with 1001), then
goes on with uvicorn's own.

uvicorn is imported only here, when called: it is no dependency of mediastream.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn

    from .app import MediaStreamASGI

__all__ = ["serve_with_drain"]


async def serve_with_drain(
    config: uvicorn.Config,
    *apps: MediaStreamASGI,
    sockets: list[socket.socket] | None = None,
    started: asyncio.Future[uvicorn.Server] | None = None,
) -> None:
    """Serve ``config`` (a ``uvicorn.Config``) until a signal or ``should_exit``,
    draining ``apps`` before uvicorn's shutdown. ``sockets``: already bound listening
    sockets; ``started`` receives the running ``uvicorn.Server`` (tests set
    ``should_exit`` on it)."""
    import uvicorn

    class _DrainingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if started is not None and not started.done():
                started.set_result(self)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await asyncio.gather(*(app.aclose() for app in apps))
            await super().shutdown(sockets)

    await _DrainingServer(config).serve(sockets)
