"""The server: one port, media WebSockets + plain HTTP, limits, graceful shutdown.

Embedding::

    from mediastream.config import Config
    from mediastream.server import MediaStreamServer

    async def bot(call):                      # or an AgentRegistry
        async for event in call: ...

    async with MediaStreamServer(Config(port=0), bot=bot) as server:
        print(server.port)
        await server.serve_forever()          # until aclose() or cancellation

The listening socket speaks to :class:`~mediastream.server.demux.HeadDemux` first, which
hands media upgrades to a ``websockets`` :class:`ServerConnection` and everything else
to aiohttp's low-level server (``AppRunner.server``). ``websockets``' :class:`Server`
object is kept for what it does well -- tracking handler tasks and answering 503 to
handshakes that race a shutdown -- but connections reach it through the demultiplexer
rather than its own listener.

Checks before the upgrade (HTTP status, DESIGN.md §3): unknown path or agent 404,
draining or at capacity 503, authentication 403 (stream token / signature, when the
control plane is installed). Checks at ``start`` (close code): stream token 1008,
unknown agent 1008, capacity raced 1013.

Shutdown (:meth:`MediaStreamServer.aclose`, SIGTERM/SIGINT in :func:`serve`): stop
accepting, let live calls end by themselves for up to ``drain_timeout``, then flush what
each bot already produced and close the rest with 1001; finally close HTTP keep-alive
connections and the control plane's HTTP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http
import logging
import signal
import socket
import ssl
from collections.abc import Mapping
from types import TracebackType
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from websockets.asyncio.server import Server as WebSocketServer
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from mediastream.agents import AgentRegistry, load_bot, parse_agent_option
from mediastream.call import BotRunner
from mediastream.config import Config
from mediastream.control.clients import ProviderClients
from mediastream.errors import AuthenticationError, CapacityError
from mediastream.protocols.base import MediaStreamProtocol
from mediastream.protocols.events import CallInfo

from . import control
from .batch import ResampleBatcher
from .connection import MediaConnection
from .demux import HandOver, HeadDemux, RequestHead
from .http import mount, mount_media_fallback
from .media_socket import MAX_QUEUE, WRITE_LIMIT, MediaSocket
from .metrics import ServerMetrics
from .routes import is_media_prefix, parse_media_path

__all__ = ["MediaStreamServer", "registry_from_config", "serve", "tls_context"]

logger = logging.getLogger(__name__)
_ws_logger = logging.getLogger("mediastream.server.websocket")
_http_logger = logging.getLogger("mediastream.server.http")


class _PeerErrorFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (no Host, a bad header ...) as an ERROR with
    a traceback; it is the peer's mistake, answered 4xx: log it as INFO, one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            text = record.getMessage()
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "%s (answered %d: %s)", (
                text, exc.code, str(exc.message).strip()[:200])
            record.exc_info = None
            record.exc_text = None
        return True


_http_logger.addFilter(_PeerErrorFilter())

#: Idle HTTP keep-alive connections are closed after this long.
_HTTP_KEEPALIVE_S = 75.0
#: In-flight HTTP requests get this long to finish at shutdown.
_HTTP_SHUTDOWN_S = 5.0
_SERVER_HEADER = "mediastream"


def tls_context(config: Config) -> ssl.SSLContext | None:
    """A server TLS context from ``config.tls_cert``/``tls_key``, or ``None``."""
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key or None)
    return context


def registry_from_config(config: Config) -> AgentRegistry:
    """Load ``config.bot`` and ``config.agents`` (``NAME=SPEC,...``) into a registry."""
    agents = [
        parse_agent_option(item) for item in config.agents.split(",") if item.strip()
    ]
    return AgentRegistry(
        load_bot(config.bot) if config.bot else None,
        [(name, load_bot(spec)) for name, spec in agents],
    )


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
        self.config = config if config is not None else Config()
        self._ssl = ssl if ssl is not None else tls_context(self.config)
        self.agents = registry_from_config(self.config) if bot is None else AgentRegistry.of(bot)
        self.metrics = ServerMetrics(self.config.metrics_multiproc_dir)
        self._app = app
        self._sock = sock
        self._reuse_port = reuse_port
        self._connections: set[MediaConnection] = set()
        self._calls = 0
        self._pending_heads: set[HeadDemux] = set()
        self._runner: web.AppRunner | None = None
        self._ws_server: WebSocketServer | None = None
        self._listener: asyncio.Server | None = None
        self._port: int | None = None
        self._tick: asyncio.Task[None] | None = None
        self._draining = False
        self._closed = asyncio.Event()
        self._drain_cut = asyncio.Event()
        self._close_task: asyncio.Task[None] | None = None
        self._clients: ProviderClients | None = None
        #: Resampling of all calls batched per loop turn (None when turned off).
        self.batcher: ResampleBatcher | None = None

    # ------------------------------------------------------------------ public state

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
        return tuple(self._listener.sockets)

    @property
    def active_calls(self) -> int:
        """Calls whose ``start`` was accepted and that have not ended."""
        return self._calls

    @property
    def media_connections(self) -> int:
        """Upgraded media WebSockets (calls plus connections still waiting for start)."""
        return len(self._connections)

    @property
    def draining(self) -> bool:
        """True once shutdown began."""
        return self._draining

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> MediaStreamServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Bind, set up the HTTP app and the control plane, start accepting."""
        if self._listener is not None:
            raise RuntimeError("the server is already started")
        try:
            await self._start()
        except BaseException:
            await self._cleanup_failed_start()
            raise

    async def _start(self) -> None:
        config = self.config
        if config.batch_resampling:
            frames, products = self.metrics.batch_frames.inc, self.metrics.batch_products.inc

            def count(n_frames: int, n_products: int) -> None:
                frames(n_frames)
                products(n_products)

            self.batcher = ResampleBatcher(asyncio.get_running_loop(), on_converted=count)
        self._clients = await control.start(config)
        app = self._app if self._app is not None else web.Application()
        mount(app, self)
        mount_media_fallback(app)
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=_HTTP_KEEPALIVE_S,
            shutdown_timeout=_HTTP_SHUTDOWN_S,
            max_field_size=config.max_head_size,
            max_line_size=config.max_head_size,
            logger=_http_logger,
        )
        await self._runner.setup()
        self._ws_server = WebSocketServer(self._create_listener, self._ws_handler, _ws_logger)
        await self._ws_server  # calls _create_listener
        self._port = int(self.sockets[0].getsockname()[1])
        self._tick = asyncio.create_task(self._housekeeping(), name="mediastream-tick")
        logger.info(
            "listening on %s (media: /ws, /ws/{twilio,telnyx,plivo}[/<agent>]; bot agents: %s)",
            ", ".join(_address(s) for s in self.sockets),
            ", ".join(self.agents.names) or "-",
        )

    async def _cleanup_failed_start(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
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
        drain = self.config.drain_timeout if drain_timeout is None else drain_timeout
        self._draining = True
        if self._listener is not None:
            self._listener.close()  # stop accepting; handshakes racing this get 503
        for demux in list(self._pending_heads):
            demux.close()
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
        if self._ws_server is not None:
            # Nothing is left open normally; this closes stragglers and awaits handlers.
            self._ws_server.close(close_connections=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._ws_server is not None:
            await self._ws_server.wait_closed()
        if self._tick is not None:
            self._tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick
        await control.stop(self._clients)
        self._clients = None
        self._closed.set()
        logger.info("server closed")

    # ------------------------------------------------------------------ listener

    async def _create_listener(self) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        # The TLS handshake gets the WebSocket handshake's bound (asyncio's own is 60 s).
        handshake = self.config.handshake_timeout if self._ssl is not None else None
        if self._sock is not None:
            self._listener = await loop.create_server(
                self._new_demux, sock=self._sock, ssl=self._ssl, ssl_handshake_timeout=handshake
            )
        else:
            self._listener = await loop.create_server(
                self._new_demux,
                self.config.host,
                self.config.port,
                reuse_port=self._reuse_port or None,
                backlog=1024,
                ssl=self._ssl,
                ssl_handshake_timeout=handshake,
            )
        return self._listener

    def _new_demux(self) -> HeadDemux:
        return HeadDemux(
            self._route_head,
            max_head=self.config.max_head_size,
            timeout=self.config.head_timeout,
            pending=self._pending_heads,
        )

    def _route_head(self, head: RequestHead) -> HandOver:
        # Every upgrade under /ws is ours (an unknown one is answered 404 there); other
        # upgrades belong to the aiohttp app, which may have WebSocket routes of its own.
        if head.is_websocket_upgrade and is_media_prefix(head.path):
            return self._to_websocket
        return self._to_http

    def _to_http(self, transport: asyncio.Transport, data: bytes) -> None:
        assert self._runner is not None and self._runner.server is not None
        handler = self._runner.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(data)

    def _to_websocket(self, transport: asyncio.Transport, data: bytes) -> None:
        assert self._ws_server is not None
        protocol = ServerProtocol(max_size=self.config.max_message_size, logger=_ws_logger)
        connection = MediaSocket(
            protocol,
            self._ws_server,
            # Providers' JSON protocols define no ping and whether they answer ours is
            # unknown (protocols.md §5.7): the idle-media timeout detects dead peers.
            ping_interval=None,
            ping_timeout=None,
            close_timeout=self.config.send_timeout,
            max_queue=MAX_QUEUE,
            write_limit=WRITE_LIMIT,
        )
        connection.fast = self.config.fast_frames
        transport.set_protocol(connection)
        connection.connection_made(transport)  # starts _ws_handler
        # Only the head until the handshake is done: a client must send nothing before
        # our 101 (RFC 6455 §4.1), and websockets would answer frames (pongs) or an EOF
        # sent early ahead of the 101 itself. Such bytes are held and replayed once the
        # connection is open, as if the client had waited; reading pauses meanwhile.
        end = data.find(b"\r\n\r\n") + 4
        connection.early = data[end:]
        transport.pause_reading()
        connection.data_received(data[:end])

    # ------------------------------------------------------------------ media

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        route = parse_media_path(path)
        if route is None:
            return self._reject(connection, http.HTTPStatus.NOT_FOUND, "no such media path")
        if route.agent is not None and route.agent not in self.agents:
            return self._reject(connection, http.HTTPStatus.NOT_FOUND, "unknown agent")
        if self._draining:
            return self._reject(
                connection, http.HTTPStatus.SERVICE_UNAVAILABLE, "server is shutting down"
            )
        if len(self._connections) >= self.config.max_calls:
            response = self._reject(
                connection, http.HTTPStatus.SERVICE_UNAVAILABLE, "server at capacity"
            )
            response.headers["Retry-After"] = "1"
            return response
        try:
            control.check_media_upgrade(
                self.config,
                path=request.path,
                query=dict(parse_qsl(query, keep_blank_values=True)),
                headers=_headers(request.headers),
            )
        except AuthenticationError as exc:
            logger.warning("media upgrade to %s refused: %s", path, exc)
            return self._reject(connection, http.HTTPStatus.FORBIDDEN, "forbidden")
        assert isinstance(connection, MediaSocket)
        connection.route = route
        connection.query = query
        return None

    def _reject(
        self, connection: ServerConnection, status: http.HTTPStatus, text: str
    ) -> Response:
        self.metrics.rejected.labels(str(status.value)).inc()
        return connection.respond(status, text + "\n")

    async def _ws_handler(self, connection: ServerConnection) -> None:
        assert self._ws_server is not None
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                await connection.handshake(self._process_request, None, _SERVER_HEADER)
            if connection.protocol.state is not OPEN:
                # Rejected (404/403/503): the response is written; let it flush, then go.
                connection.transport.close()
                return
            assert isinstance(connection, MediaSocket) and connection.route is not None
            connection.transport.resume_reading()
            if connection.early:
                early, connection.early = connection.early, b""
                connection.data_received(early)
            assert connection.request is not None
            media = MediaConnection(
                self,
                connection,
                connection.route,
                connection.query,
                _headers(connection.request.headers),
            )
            self._connections.add(media)
            try:
                await media.run()
            finally:
                self._connections.discard(media)
        except TimeoutError:
            logger.info("WebSocket handshake did not complete in time; dropping")
            connection.transport.abort()
        except Exception:
            logger.exception("media connection handler failed")
            connection.transport.abort()
        finally:
            self._ws_server.handler_tasks.discard(asyncio.current_task())

    # ---------------------------------------------- used by MediaConnection

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
        control.check_stream_start(self.config, info, protocol, query=query, headers=headers)
        return control.public_call_info(info)

    def admit(self, connection: MediaConnection) -> None:
        """Count a started call; CapacityError (1013) if a race got past the 503 check."""
        if self._calls >= self.config.max_calls:
            raise CapacityError(f"at capacity ({self.config.max_calls} calls)")
        self._calls += 1
        self.metrics.active_calls.inc()

    def release(self, connection: MediaConnection) -> None:
        """A call or connection ended."""
        if connection.started:
            self._calls -= 1
            self.metrics.active_calls.dec()

    async def provider_hangup(self, info: CallInfo) -> bool:
        """Hang the call up through the provider's REST API; False when not configured."""
        return await control.hangup(self._clients, info)

    def add_control_routes(self, app: web.Application) -> None:
        """Mount the control plane's webhook and REST routes on ``app``."""
        control.add_routes(app, self.config, self.agents, self._clients)

    # ------------------------------------------------------------------ tick

    async def _housekeeping(self) -> None:
        config = self.config
        period = max(0.01, min(1.0, config.idle_media_timeout / 4, config.send_timeout / 4))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            self._tick_connections(loop.time())

    def _tick_connections(self, now: float) -> None:
        # A function of its own: a loop variable in _housekeeping would keep the last
        # connection (its session, buffers and socket) alive while the server idles.
        for connection in list(self._connections):
            try:
                connection.check_timeouts(now)
                connection.sync_metrics()
            except Exception:
                connection.log.exception("housekeeping failed")


def _headers(headers: Headers) -> Mapping[str, str]:
    # Lower-case keys, repeated headers joined: what the sans-I/O protocols expect.
    merged: dict[str, str] = {}
    for name, value in headers.raw_items():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _address(sock: socket.socket) -> str:
    name = sock.getsockname()
    return f"[{name[0]}]:{name[1]}" if sock.family == socket.AF_INET6 else f"{name[0]}:{name[1]}"


_background: set[asyncio.Future[None]] = set()


async def serve(
    config: Config | None = None,
    bot: BotRunner | AgentRegistry | None = None,
    *,
    reuse_port: bool = False,
) -> None:
    """Run a server until SIGTERM or SIGINT, then shut down gracefully.

    The first signal starts the drain (``config.drain_timeout``); a second one during
    the drain closes the remaining calls at once.
    """
    server = MediaStreamServer(config, bot=bot, reuse_port=reuse_port)
    await server.start()
    # serve() owns the process: everything loaded by now (the bots, Pipecat's large object
    # graph) leaves the cyclic collector's view, so a full collection scans only what
    # calls allocate. With Pipecat loaded a full collection cost 65-84 ms of CPU, a pause
    # every live call hears (python -m bench pipecat --unfrozen: p99 at 50 calls 50 ms
    # instead of 120 ms). Embedders running MediaStreamServer themselves decide for
    # their own process.
    gc.freeze()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum: int) -> None:
        if stop.is_set():
            logger.warning("second %s: closing remaining calls now", signal.Signals(signum).name)
            task = asyncio.ensure_future(server.aclose(drain_timeout=0))
            _background.add(task)
            task.add_done_callback(_background.discard)
            return
        logger.info("%s: shutting down gracefully", signal.Signals(signum).name)
        stop.set()

    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
    try:
        await stop.wait()
        await server.aclose()
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await server.aclose()
