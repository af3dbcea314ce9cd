"""The server: one port, media WebSockets + plain HTTP, limits, graceful shutdown.

Embedding::

    from mediastream.config import Config
    from mediastream.server import MediaStreamServer

    async def bot(call):                      # or an AgentRegistry
        async for event in call: ...

    async with MediaStreamServer(Config(port=0), bot=bot) as server:
        print(server.port)
        await server.serve_forever()          # until aclose() or cancellation

The listening socket speaks to :class:`~.demux.HeadDemux` first, which hands media
upgrades to our own :class:`~.websocket.MediaSocket` (websockets' sans-I/O protocol
inside) and everything else to aiohttp's low-level server (``AppRunner.server``). Each
upgraded socket gets a :class:`~.connection.MediaConnection`, whose one task this
server owns and awaits at shutdown.

Checks before the upgrade are :mod:`.upgrade`'s (HTTP status); checks at ``start`` the
connection's (close code): stream token 1008, unknown agent 1008, capacity raced 1013.

Shutdown (:meth:`MediaStreamServer.aclose`, SIGTERM/SIGINT in :func:`~.serve.serve`):
stop accepting, let live calls end by themselves for up to ``drain_timeout``, then flush
what each bot already produced and close the rest with 1001; finally every connection
this server owns is closed -- a connection whose end is stuck is cancelled and its socket
aborted after :data:`CLOSE_GRACE_S` -- and HTTP keep-alive connections and the control
plane's HTTP client are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Mapping
from typing import Final

from aiohttp import web

from mediastream.agents import AgentRegistry, registry_from_config, share_listen_only
from mediastream.call import BotRunner
from mediastream.config import Config
from mediastream.control.clients import ProviderClients
from mediastream.errors import CapacityError
from mediastream.protocols.base import MediaStreamProtocol
from mediastream.protocols.events import CallInfo
from mediastream.recording import Recordings, open_recordings
from mediastream.session import ResampleBatcher

from . import control
from .callapi import CallTable, CommandTarget, add_call_routes
from .calls import CallBook, CallDirectory
from .connection import HANGUP_TIMEOUT_S, MediaConnection
from .host import CallSocket
from .http import HTTP_LOGGER, add_routes, mount_media_fallback
from .listener import Listener, address
from .metrics import ServerMetrics
from .tls import tls_context
from .upgrade import answer_upgrade, request_headers
from .websocket import MediaSocket

__all__ = ["MediaStreamServer", "tls_context"]

logger = logging.getLogger(__name__)

#: Idle HTTP keep-alive connections are closed after this long.
_HTTP_KEEPALIVE_S: Final = 75.0
#: In-flight HTTP requests get this long to finish at shutdown.
_HTTP_SHUTDOWN_S: Final = 5.0
#: After a connection's end at shutdown, its close handshake, bot exit and hang-up are
#: each bounded; past their sum plus this, the connection is cancelled and aborted.
CLOSE_GRACE_S: Final = 1.0

#: Batch resampling from this many frames per product (session/batch.py); the server
#: bench: at once is cheaper at 10-20 calls (1.4-1.9), equal at 50 (3.4), batching at 100.
BATCH_FROM: Final = 3.0


class MediaStreamServer:
    """A media-stream server on one port; use as ``async with`` or start()/aclose().

    ``bot`` is a :data:`~mediastream.call.BotRunner` or an
    :class:`~mediastream.agents.AgentRegistry`; ``None`` loads ``config.bot`` and
    ``config.agents``. ``app``: an aiohttp application of yours to serve the plain-HTTP
    side from (the server mounts its routes on it). ``sock``: an already bound
    listening socket (the server then ignores ``config.host``/``config.port``).
    ``reuse_port`` sets ``SO_REUSEPORT`` (``--workers``). ``ssl``: serve TLS with this
    context (default: one built from ``config.tls_cert``/``tls_key`` when set).
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        bot: BotRunner | AgentRegistry | None = None,
        app: web.Application | None = None,
        sock: socket.socket | None = None,
        reuse_port: bool = False,
        ssl: ssl.SSLContext | None = None,
    ) -> None:
        self._config = config if config is not None else Config()
        self._ssl = ssl if ssl is not None else tls_context(self._config)
        self._agents = (
            registry_from_config(self._config) if bot is None else AgentRegistry.of(bot)
        )
        self._config = share_listen_only(self._config, self._agents)
        self._recordings = open_recordings(self._config)  # ValueError: DIR not writable
        self._metrics = ServerMetrics(self._config.metrics_multiproc_dir)
        self._app = app
        self._sock = sock
        self._reuse_port = reuse_port
        self._connections: set[MediaConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._calls = 0
        self.calls = CallBook()
        self.cluster = CallTable(self._config, self._metrics, self.calls)
        self.call_directory: CallDirectory = self.cluster.listing
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None
        self._port: int | None = None
        self._tick: asyncio.Task[None] | None = None
        self._draining = False
        self._closed = asyncio.Event()
        self._drain_cut = asyncio.Event()
        self._close_task: asyncio.Task[None] | None = None
        self._clients: ProviderClients | None = None
        self._batcher = ResampleBatcher()

    # ------------------------------------------------------------------ public state

    @property
    def config(self) -> Config:
        return self._config

    @property
    def agents(self) -> AgentRegistry:
        return self._agents

    @property
    def metrics(self) -> ServerMetrics:
        return self._metrics

    @property
    def batcher(self) -> ResampleBatcher:
        """Runs every call's resampler steps: batched once per loop turn when
        ``config.batch_resampling``, else one at a time."""
        return self._batcher

    @property
    def recordings(self) -> Recordings | None:
        """Where calls are recorded (``config.record_dir``); ``None``: not recorded."""
        return self._recordings

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with ``port=0``)."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        if self._listener is None:
            raise RuntimeError("the server is not started")
        return self._listener.sockets

    @property
    def active_calls(self) -> int:
        """Calls whose ``start`` was accepted and that have not ended."""
        return self._calls

    @property
    def media_connections(self) -> int:
        """Upgraded media WebSockets (calls plus connections still waiting for start)."""
        return len(self._connections)

    @property
    def started(self) -> bool:
        """True once :meth:`start` ran (with or without a port)."""
        return self._tick is not None

    @property
    def draining(self) -> bool:
        """True once shutdown began."""
        return self._draining

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> MediaStreamServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self, *, listen: bool = True) -> None:
        """Bind, set up the HTTP app and the control plane, start accepting; ``listen=False``:
        all but the port, sockets come through :meth:`open_connection` (mediastream.asgi)."""
        if self._listener is not None or self._tick is not None:
            raise RuntimeError("the server is already started")
        try:
            await self._start(listen)
        except BaseException:
            await self._cleanup_failed_start()
            raise

    async def _start(self, listen: bool) -> None:
        config = self._config
        loop = asyncio.get_running_loop()
        self._batcher = ResampleBatcher(
            loop.call_soon if config.batch_resampling else None, batch_from=BATCH_FROM)
        self._metrics.add_scrape_hook(self._sync_batches)
        self._clients = await control.start(config)
        await self.cluster.start(self._clients)
        self._tick = asyncio.create_task(self._housekeeping(), name="mediastream-tick")
        if not listen:
            return
        app = self._app if self._app is not None else web.Application()
        add_routes(app, self)
        mount_media_fallback(app)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, keepalive_timeout=_HTTP_KEEPALIVE_S,
            shutdown_timeout=_HTTP_SHUTDOWN_S, max_field_size=config.max_head_size,
            max_line_size=config.max_head_size, logger=HTTP_LOGGER)
        await self._runner.setup()
        self._listener = Listener(
            config, self._runner,
            answer_upgrade=lambda media, request: answer_upgrade(self, media, request),
            open_media=self._on_open, ssl_context=self._ssl, sock=self._sock,
            reuse_port=self._reuse_port)
        await self._listener.start()
        self._port = int(self.sockets[0].getsockname()[1])
        logger.info(
            "listening on %s (media: /ws, /ws/{twilio,telnyx,plivo}[/<agent>]; bot agents: %s)",
            ", ".join(address(s) for s in self.sockets),
            ", ".join(self._agents.names) or "-",
        )

    async def _cleanup_failed_start(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        if self._listener is not None:
            self._listener.stop_accepting()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.cluster.stop()
        await control.stop(self._clients)
        self._clients = None
        self._listener = None

    async def serve_forever(self) -> None:
        """Serve until :meth:`aclose` is called; cancelling this closes the server."""
        try:
            await self._closed.wait()
        except asyncio.CancelledError:
            await asyncio.shield(self.aclose())
            raise

    async def aclose(self, drain_timeout: float | None = None) -> None:
        """Graceful shutdown (idempotent); ``drain_timeout`` overrides the config's.

        Called again with ``drain_timeout=0`` while draining, it cuts the drain short.
        """
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._shutdown(drain_timeout))
        elif drain_timeout == 0:
            self._drain_cut.set()
        await asyncio.shield(self._close_task)

    async def _shutdown(self, drain_timeout: float | None) -> None:
        drain = self._config.drain_timeout if drain_timeout is None else drain_timeout
        self._draining = True
        if self._listener is not None:
            self._listener.stop_accepting()
        live = [c for c in self._connections if not c.done]
        if live:
            logger.info("shutdown: draining %d media connections (up to %.1fs)", len(live), drain)
            waiters = [asyncio.ensure_future(c.wait_done()) for c in live]
            everyone = asyncio.ensure_future(asyncio.wait(waiters))
            cut = asyncio.ensure_future(self._drain_cut.wait())
            await asyncio.wait({everyone, cut}, timeout=drain, return_when="FIRST_COMPLETED")
            for future in (everyone, cut, *waiters):
                future.cancel()
            remaining = [c for c in self._connections if not c.done]
            if remaining:
                logger.info("shutdown: closing %d calls with 1001", len(remaining))
                for connection in remaining:
                    connection.shutdown()
        await self._close_connections()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._tick is not None:
            self._tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick
        await self.cluster.stop()
        await control.stop(self._clients)
        self._clients = None
        if self._recordings is not None:
            await self._recordings.aclose()  # every recording's last block is on disk
        self._closed.set()
        logger.info("server closed")

    async def _close_connections(self) -> None:
        """Every connection this server owns ends: each gets the bounded time its end
        takes; one still stuck after that is cancelled and its socket aborted."""
        config = self._config
        bound = config.send_timeout + 2 * config.bot_exit_timeout + HANGUP_TIMEOUT_S
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=bound + CLOSE_GRACE_S)
        stuck = [task for task in self._tasks if not task.done()]
        if stuck:
            logger.error("shutdown: %d connections did not end in %.1fs; cancelling them",
                         len(stuck), bound + CLOSE_GRACE_S)
            for task in stuck:
                task.cancel()
            await asyncio.wait(stuck, timeout=CLOSE_GRACE_S)
        if self._listener is not None:  # what is left: rejected upgrades still lingering
            self._listener.abort_media()

    # ------------------------------------------------------------------ connections

    def _on_open(self, media: MediaSocket) -> None:
        assert media.request is not None
        self.open_connection(media, request_headers(media.request.headers))

    def open_connection(self, socket: CallSocket, headers: Mapping[str, str]) -> None:
        """Run an accepted media WebSocket's call (``socket.route`` set) as this server's."""
        connection = MediaConnection(self, socket, headers)
        self._connections.add(connection)
        task = asyncio.get_running_loop().create_task(self._run(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, connection: MediaConnection) -> None:
        try:
            await connection.run()
        except Exception:
            connection.log.exception("media connection failed")
        finally:
            self._connections.discard(connection)

    # ------------------------------------------------------------------ CallHost

    def check_stream_start(
        self,
        info: CallInfo,
        protocol: MediaStreamProtocol,
        *,
        query: Mapping[str, str],
        headers: Mapping[str, str],
    ) -> CallInfo:
        """Authenticate the stream at ``start`` (AuthenticationError: 1008).

        Returns the call description the bot gets: without our stream token.
        """
        control.check_stream_start(self._config, info, protocol, query=query, headers=headers)
        return control.public_call_info(info)

    def admit(self, connection: CommandTarget) -> None:
        """Count a started call; CapacityError (1013) if a race got past the 503 check."""
        if self._calls >= self._config.max_calls:
            raise CapacityError(f"at capacity ({self._config.max_calls} calls)")
        self._calls += 1
        self._metrics.active_calls.inc()
        self.cluster.add(connection)

    def release(self, connection: CommandTarget) -> None:
        """A started call ended."""
        self._calls -= 1
        self._metrics.active_calls.dec()
        self.cluster.remove(connection)

    async def provider_hangup(self, info: CallInfo) -> bool:
        """Hang the call up through the provider's REST API; False when not configured."""
        return await control.hangup(self._clients, info)

    def add_control_routes(self, app: web.Application) -> None:
        """Mount the control plane's webhook and REST routes on ``app``."""
        control.add_routes(app, self._config, self._agents, self._clients)
        add_call_routes(app, self._config, self.cluster)

    def control_routes(self) -> list[control.ControlRoute]:
        """The same routes as (method, path, handler), for :mod:`mediastream.asgi`."""
        return control.routes(self._config, self._agents, self._clients)

    # ------------------------------------------------------------------ tick

    async def _housekeeping(self) -> None:
        config = self._config
        period = max(0.01, min(1.0, config.idle_media_timeout / 4, config.send_timeout / 4))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            self._tick_connections(loop.time())

    def _sync_batches(self) -> None:
        batcher = self._batcher
        self._metrics.sync_batches(batcher.frames, batcher.products)

    def _tick_connections(self, now: float) -> None:
        # A function of its own: a loop variable in _housekeeping would keep the last
        # connection (its session, buffers and socket) alive while the server idles.
        self._sync_batches()
        for connection in list(self._connections):
            try:
                connection.check_timeouts(now)
                connection.sync_metrics()
            except Exception:
                connection.log.exception("housekeeping failed")
