"""One media WebSocket, from the upgrade to the close: reader, writer, bot, one boundary.

Life of a connection::

    await start ----------> live: TaskGroup(reader, writer) + bot -----> close + clean up
    (first_message_timeout)      ends on the first of: provider stop, socket closed,
                                 bot returned (after playout) or hung up, an error,
                                 idle media, send timeout, server shutdown

* The **reader** feeds every message to the sans-I/O protocol and the session and
  queues the resulting bot events. It never waits on the bot, so the provider's socket
  is read continuously (protocols.md §5.7: a slow reader makes Twilio drop audio).
  Once the call is live its work runs straight from ``data_received``
  (:mod:`.media_socket`); its task only takes what must go through ``recv()``.
* The **writer** sleeps until ``session.next_deadline()`` (one future plus one timer
  handle per wake-up), then sends what the pacer released. When the bot queues audio
  while it sleeps, its step runs right there in the bot's call (``wake_writer``), so
  the frame due now leaves with no task wake-up; the task itself wakes for timers and
  for sends that must wait for the peer.
* The **bot** runs as a task. If it raises, only this call ends (1011, no internals in
  the reason); if it returns, the call ends once the caller heard the rest (1000). Once
  the call is over it gets ``bot_exit_timeout`` to return, is then cancelled, and is
  abandoned (logged) if it ignores that too: no bot can hold a connection or a drain.

Every way a call can end goes through :meth:`MediaConnection.finish` (first one wins)
and every exception through :func:`close_for` -- the one mapping from exception to
close code, reason and outcome (DESIGN.md §3), logged with the call id. Timers that
would cost a handle per message (idle media, send timeout) are checked by the server's
periodic tick instead (:meth:`MediaConnection.check_timeouts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl

from websockets.exceptions import ConnectionClosed

from mediastream.agents import UnknownAgentError
from mediastream.call import BotRunner, CallEvent
from mediastream.errors import (
    AuthenticationError,
    BotError,
    CapacityError,
    MediaStreamError,
    MessageTooBigError,
    RemoteProtocolError,
)
from mediastream.protocols.base import MediaStreamProtocol
from mediastream.protocols.detect import ProviderDetector, protocol_for
from mediastream.protocols.events import (
    AudioCleared,
    AudioReceived,
    CallInfo,
    Event,
    MarkPlayed,
    ProviderErrorReported,
    StreamConnected,
    StreamStarted,
    StreamStopped,
)
from mediastream.session import CallSession

from .live import LiveCall
from .log import CallLogger
from .media_socket import MediaSocket
from .metrics import StatsSync
from .routes import MediaRoute

if TYPE_CHECKING:
    from .server import MediaStreamServer

__all__ = ["MediaConnection", "StreamTimeoutError", "close_for"]

logger = logging.getLogger(__name__)

#: Extra wait for the provider's last mark echo after the audio should have played
#: (protocols.md §5.2: "expected duration + ~2 s").
PLAYOUT_GRACE_S = 2.0
#: Bound on a provider REST hang-up.
HANGUP_TIMEOUT_S = 5.0
#: How far ahead the shutdown flush releases the pacer's queue (everything queued).
_FLUSH_HORIZON_S = 3600.0
#: Max bytes of a close reason (RFC 6455 §5.5: control frame payload <= 125 bytes).
_MAX_REASON = 123
#: The reader yields to the event loop after every 32 messages it takes from recv()
#: (a power of two, minus 1; media_socket.DIRECT_BATCH is the direct path's batch).
_YIELD_EVERY_MASK = 31
#: The processing-time histogram samples one message in 8 (see metrics.py).
_TIME_EVERY_MASK = 7


class StreamTimeoutError(MediaStreamError):
    """No ``start`` in time, or no media for too long (1008, policy violation)."""

    close_code = 1008


def close_for(exc: BaseException) -> tuple[int, str, str]:
    """The one mapping from an exception to (close code, reason, outcome).

    Remote errors name the offending field in the reason (useful to whoever sent it);
    our own bugs and bot crashes say only ``internal error`` / ``bot error``.
    """
    if isinstance(exc, RemoteProtocolError):
        return exc.close_code, _reason(str(exc)), "protocol_error"
    if isinstance(exc, UnknownAgentError):
        return exc.close_code, _reason(str(exc)), "unknown_agent"
    if isinstance(exc, AuthenticationError):
        return exc.close_code, "authentication failed", "unauthorized"
    if isinstance(exc, CapacityError):
        return exc.close_code, "server at capacity", "capacity"
    if isinstance(exc, StreamTimeoutError):
        return exc.close_code, _reason(str(exc)), "timeout"
    if isinstance(exc, BotError):
        return exc.close_code, "bot error", "bot_error"
    return 1011, "internal error", "internal_error"


def _reason(text: str) -> str:
    data = text.encode("utf-8")
    if len(data) <= _MAX_REASON:
        return text
    return data[: _MAX_REASON - 3].decode("utf-8", "ignore") + "..."


def _unwrap(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = inner[0] if inner else exc.exceptions[0]
    return exc


class MediaConnection:
    """Drives one upgraded media WebSocket; created by the server's handler."""

    def __init__(
        self,
        server: MediaStreamServer,
        ws: MediaSocket,
        route: MediaRoute,
        query: str,
        headers: Mapping[str, str],
    ) -> None:
        self._server = server
        self._config = server.config
        self._ws = ws
        self._route = route
        self._query_map = dict(parse_qsl(query, keep_blank_values=True))
        self._headers = headers
        self._loop = asyncio.get_running_loop()
        self.log = CallLogger(logger, f"conn-{ws.id.hex[:8]}")
        self.provider: str = route.provider or "unknown"
        self.info: CallInfo | None = None
        self._protocol: MediaStreamProtocol | None = None
        self._session: CallSession | None = None
        self._call: LiveCall | None = None
        self._stats: StatsSync | None = None
        self._finished: asyncio.Future[None] = self._loop.create_future()
        #: (code or None when the socket is already gone, reason, outcome)
        self._close: tuple[int | None, str, str] | None = None
        self._wake: asyncio.Future[None] | None = None
        #: When the sleeping writer's timer fires (``None``: no timer, or not sleeping).
        self._wake_at: float | None = None
        #: Set while live: the writer's job, done synchronously when the bot sends audio.
        self._pump: Callable[[], None] | None = None
        self._urgent: list[str] = []
        self._flush_on_close = False
        self._hangup_started = False
        self._admitted = False
        self._accounted = False
        self._bot: asyncio.Task[None] | None = None
        self._opened_at = self._loop.time()
        #: Loop time of the last message received (idle-media watchdog).
        self.last_rx = self._opened_at
        #: Loop time a send started waiting, ``None`` when no send is in progress.
        self.sending_since: float | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def started(self) -> bool:
        """True once ``start`` was accepted and the call counts against capacity."""
        return self._admitted

    @property
    def done(self) -> bool:
        """True once the call has ended (the socket may still be closing)."""
        return self._finished.done()

    async def wait_done(self) -> None:
        """Wait until the call has ended."""
        await asyncio.shield(self._finished)

    async def run(self) -> None:
        """Serve the connection until it ends; never raises except on cancellation."""
        try:
            started = await self._await_start()
            if started is not None:
                await self._live(*started)
        except Exception as exc:
            self._fail(_unwrap(exc))
        finally:
            await self._teardown()
            self._release_references()

    def _release_references(self) -> None:
        """Drop the links that make a finished call one reference cycle (connection <->
        call <-> session, tasks and closures), so reference counting frees it at once.

        Otherwise every call leaves ~100 objects (and its buffers) for the cyclic
        collector, and the full collections that garbage triggers pause every live
        call -- 30-100 ms measured at 200 calls, each pause a permanent 20 ms step in
        the audible latency of the calls it hits.
        """
        self._call = None
        self._session = None
        self._protocol = None
        self._stats = None
        self._bot = None

    def finish(self, code: int | None, reason: str, outcome: str) -> None:
        """End the call (first caller wins): record how, tell the bot, stop the tasks."""
        if self._close is None:
            self._close = (code, _reason(reason), outcome)
        self._ws.direct = None
        self._pump = None
        if not self._flush_on_close:
            # Shutdown ends the session only after the flush (it drops unsent audio).
            self._end_session()
        if not self._finished.done():
            self._finished.set_result(None)

    def _end_session(self) -> None:
        """Tell the session and the bot the call is over (idempotent)."""
        reason = self._close[1] if self._close is not None else "ended"
        session, call = self._session, self._call
        if session is not None and call is not None and not session.ended:
            call.push(session.end(reason, self._loop.time()))
        if call is not None:
            call.end(reason)

    def shutdown(self) -> None:
        """Server shutdown: send what the bot already produced, then close with 1001."""
        self._flush_on_close = True
        self.finish(1001, "server shutting down", "shutdown")

    def check_timeouts(self, now: float) -> None:
        """Called by the server's tick: half-dead sockets (also while flushing at the
        end of a call) and idle media."""
        since = self.sending_since
        if since is not None and now - since > self._config.send_timeout:
            self.log.warning(
                "peer stopped reading: a send waited %.1fs (send_timeout %.1fs); aborting",
                now - since,
                self._config.send_timeout,
            )
            self.finish(None, "send timeout", "send_timeout")
            self.sending_since = None
            self._ws.transport.abort()
            return
        if self.done:
            return
        if self._admitted and now - self.last_rx > self._config.idle_media_timeout:
            self._fail(
                StreamTimeoutError(f"no media for {self._config.idle_media_timeout:g}s")
            )

    def sync_metrics(self) -> None:
        """Move the session's counters into the server metrics (periodic tick)."""
        if self._stats is not None and self._session is not None:
            self._stats.sync(self._session.stats, self._queued_frames())

    # ------------------------------------------------------------------ phases

    async def _await_start(
        self,
    ) -> tuple[CallInfo, StreamStarted, MediaStreamProtocol, list[Event], BotRunner] | None:
        config = self._config
        options: dict[str, Any] = {
            "query": self._query_map,
            "headers": self._headers,
            "max_message_chars": config.max_message_size,
        }
        receiver: MediaStreamProtocol | ProviderDetector
        if self._route.provider is not None:
            receiver = protocol_for(self._route.provider, **options)
        else:
            receiver = ProviderDetector(**options)
        try:
            async with asyncio.timeout(config.first_message_timeout):
                while True:
                    message = await self._ws.receive()
                    self.last_rx = self._loop.time()
                    events = receiver.receive(message)
                    for index, event in enumerate(events):
                        kind = type(event)
                        if kind is StreamStarted:
                            assert isinstance(event, StreamStarted)
                            protocol = (
                                receiver
                                if isinstance(receiver, MediaStreamProtocol)
                                else receiver.protocol
                            )
                            assert protocol is not None
                            info, runner = self._accept(event.call, protocol)
                            return info, event, protocol, events[index + 1 :], runner
                        if kind is StreamStopped:
                            self.log.info("stream stopped before it started")
                            self.finish(1000, "stream stopped", "stopped")
                            return None
                        self._on_notice(event)
        except TimeoutError:
            raise StreamTimeoutError(
                f"no start message within {config.first_message_timeout:g}s"
            ) from None
        except ConnectionClosed as exc:
            self._on_closed(exc)
            return None

    def _accept(
        self, info: CallInfo, protocol: MediaStreamProtocol
    ) -> tuple[CallInfo, BotRunner]:
        """Checks at ``start``: stream token, agent, capacity. Raises to reject."""
        self.info = info
        self.provider = info.provider
        self._protocol = protocol
        self.log.bind(info.call_id, info.provider)
        info = self._server.check_stream_start(
            info, protocol, query=self._query_map, headers=self._headers
        )
        self.info = info
        runner = self._server.agents.resolve(info, self._route.agent)
        self._server.admit(self)  # CapacityError when a race beat the pre-upgrade check
        self._admitted = True
        return info, runner

    async def _live(
        self,
        info: CallInfo,
        start: StreamStarted,
        protocol: MediaStreamProtocol,
        early: list[Event],
        runner: BotRunner,
    ) -> None:
        config = self._config
        now = self._loop.time()
        session = CallSession(
            info,
            bot_sample_rate=config.bot_sample_rate,
            playout_lead=config.playout_lead,
            mark_interval=config.mark_interval,
            reorder_window=config.reorder_window,
            now=now,
            mark_grace=config.mark_grace,
            idle_flush=config.idle_flush,
        )
        self._session = session
        self._stats = StatsSync(self._server.metrics, info.provider)
        batcher = self._server.batcher
        if batcher is not None:
            session.attach_batcher(batcher.flush)
        call = LiveCall(
            info,
            session,
            protocol,
            self,
            self.log,
            sample_rate=config.bot_sample_rate,
            max_events=config.bot_queue_frames,
            max_audio_s=config.max_bot_audio_s,
            batcher=batcher,
        )
        self._call = call
        self.log.info(
            "call started: %s in=%s/%d out=%s/%d agent=%s",
            info.provider,
            info.inbound_format.encoding,
            info.inbound_format.sample_rate,
            info.outbound_format.encoding,
            info.outbound_format.sample_rate,
            self._route.agent or info.agent or "-",
        )
        out: list[CallEvent] = session.receive_event(start, now)
        for event in early:
            if type(event) is StreamStopped:
                self.finish(1000, "stream stopped", "stopped")
                break
            out += session.receive_event(event, now)
        if out:
            call.push(out)
        # The bot runs outside the task group: a bot that ignores cancellation must not
        # keep the connection (and a server drain) waiting for ever (see _stop_bot).
        self._bot = self._loop.create_task(self._run_bot(runner, call, session))
        async with asyncio.TaskGroup() as tasks:
            reader = tasks.create_task(self._read(protocol, session, call))
            writer = tasks.create_task(self._write(protocol, session, call))
            await self._finished
            reader.cancel()
            writer.cancel()
            if self._flush_on_close:
                await asyncio.wait({writer})
                await self._flush(protocol, session)
                self._end_session()
            await self._close_socket()
        await self._stop_bot()

    # ------------------------------------------------------------------ tasks

    async def _read(
        self, protocol: MediaStreamProtocol, session: CallSession, call: LiveCall
    ) -> None:
        """Handle every message: straight from ``data_received`` once this starts (see
        :mod:`.media_socket`), through ``recv()`` for whatever cannot take that path."""
        receive = protocol.receive
        feed = session.receive_event
        clock = self._loop.time
        perf = time.perf_counter
        observe = self._server.metrics.frame_seconds.observe
        push = call.push
        batcher = self._server.batcher
        batch = batcher.add_inbound if batcher is not None else None
        defer = session.defer_audio
        converted_in = session.receive_converted
        #: A frame of this call is out for conversion (see .batch): what arrives after it
        #: waits in ``backlog`` -- whole messages, not yet parsed, so the protocol's
        #: state (a ``stop`` parsed ends the stream) never runs ahead of the session's,
        #: and the rest of a message whose first event went out -- and the bot gets
        #: everything in the order it came.
        pending = False
        backlog: deque[str | bytes | Event] = deque()
        #: handle and handle_event, for converted(); emptied when reading ends, so the
        #: closures do not keep each other (and the call) alive as a cycle.
        steps: list[Callable[[Any], Any]] = []

        def converted(pcm: bytes) -> None:
            # The batch's result for the frame handed out in handle_event (at the end
            # of this loop turn, or sooner when the session settles).
            nonlocal pending
            pending = False
            try:
                out = converted_in(pcm)
                if out:
                    push(out)
                while backlog and not pending and steps:
                    if self.done:
                        backlog.clear()
                        break
                    item = backlog.popleft()
                    if type(item) is str or type(item) is bytes:
                        steps[0](item)
                    elif not steps[1](item):
                        backlog.clear()
            except Exception as exc:
                self._fail(exc)

        def handle_event(event: Event, now: float | None = None) -> bool:
            """One event; False once the stream stopped."""
            nonlocal pending
            if now is None:
                now = clock()
            kind = type(event)
            if kind is AudioReceived:
                if batch is not None:
                    audio = cast(AudioReceived, event)
                    step = defer(audio)
                    if step is not None:
                        pending = True
                        batch(step, audio.payload, converted)
                        return True
                out = feed(event, now)
                if out:
                    push(out)
                return True
            if kind is StreamStopped:
                self.log.info("provider stopped the stream")
                self.finish(1000, "stream stopped", "stopped")
                return False
            # DTMF, marks, notices; the session logs provider error reports.
            out = feed(event, now)
            if out:
                push(out)
            if kind is MarkPlayed or kind is AudioCleared:
                self.sync_clear()
                if call.waiting_for_playout:
                    call.check_played()
            return True

        timed = 0

        def handle(message: str | bytes) -> None:
            nonlocal timed
            now = clock()
            self.last_rx = now
            if pending:
                backlog.append(message)
                return
            timed += 1
            started = perf() if timed & _TIME_EVERY_MASK == 1 else 0.0  # 1st, 9th, ...
            events = receive(message)
            for i, event in enumerate(events):
                if pending:  # the rest of this message goes first, before later ones
                    backlog.extendleft(reversed(events[i:]))
                    break
                if not handle_event(event, now):
                    return
            if started:
                observe(perf() - started)

        def handle_now(message: str) -> None:
            # Called from data_received: every error ends this call here, none escapes.
            if self.done:
                return
            try:
                handle(message)
            except Exception as exc:
                self._fail(exc)

        steps += (handle, handle_event)
        ws = self._ws
        ws.direct = handle_now
        count = 0
        try:
            while not self.done:
                message = await ws.receive()
                count += 1
                if not count & _YIELD_EVERY_MASK:
                    # recv() returns queued messages without yielding: a peer flooding
                    # us would hold the loop (and every other call) for as long as its
                    # backlog lasts. Let the others run between batches.
                    await asyncio.sleep(0)
                    if self.done:
                        break
                handle(message)
        except ConnectionClosed as exc:
            self._on_closed(exc)
        except RemoteProtocolError as exc:
            self._fail(exc)
        finally:
            ws.direct = None
            steps.clear()
            backlog.clear()

    async def _write(
        self, protocol: MediaStreamProtocol, session: CallSession, call: LiveCall
    ) -> None:
        poll = session.poll
        encode = protocol.send
        clock = self._loop.time
        ws = self._ws
        send_now = ws.send_texts

        def pump() -> None:
            # The writer's step, run synchronously when the bot queues audio while the
            # writer sleeps: the frame due now leaves with no task wake-up.
            commands, events = poll(clock())
            if commands:
                messages: list[str] = []
                for command in commands:
                    messages += encode(command)
                if not send_now(messages):
                    self._urgent += messages  # in order, ahead of anything sent later
            if events:
                call.push(events)
            if call.waiting_for_playout:
                call.check_played()

        try:
            self._pump = pump
            while True:
                if self._urgent:
                    urgent, self._urgent = self._urgent, []
                    if not send_now(urgent):
                        await self._send(urgent)
                pump()  # what could not be sent now is in _urgent: sent above, next turn
                if ws.paused:
                    # A synchronous send left the transport over its write limit: wait
                    # for the peer to read it, under send_timeout like any send.
                    await self._drained()
                elif not self._urgent:
                    await self._sleep_until(session.next_deadline())
        except ConnectionClosed as exc:
            self._on_closed(exc)
        finally:
            self._pump = None

    async def _run_bot(self, runner: BotRunner, call: LiveCall, session: CallSession) -> None:
        try:
            await runner(call)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._close is not None or (task is not None and task.cancelling()):
                raise
            # The bot raised CancelledError of its own (a cancelled inner task leaking
            # out): without this the call would go on with nobody answering.
            self.log.error("bot raised CancelledError; ending the call", exc_info=True)
            self._fail(BotError("bot failed"), log=False)
            return
        except Exception:
            if self._close is not None:
                self.log.warning("bot raised after the call ended", exc_info=True)
                return
            self.log.error("bot failed; ending the call", exc_info=True)
            self._fail(BotError("bot failed"), log=False)
            return
        if self._close is not None:
            return
        timeout = session.queued_s + self._config.playout_lead + PLAYOUT_GRACE_S
        if not await call.wait_played(timeout):
            if self._close is not None:
                return
            self.log.info("bot finished; playout not confirmed within %.1fs", timeout)
        await self.hangup("bot finished")

    # ------------------------------------------------------------------ CallLink

    def wake_writer(self) -> None:
        """New bot audio or a new waiter: do the writer's step now.

        While the writer sleeps, its step runs right here (no task wake-up per frame);
        the writer itself is woken only if that step leaves something it must do sooner
        than its timer, or if a send could not complete without waiting.
        """
        wake = self._wake
        if wake is None or wake.done():
            return  # the writer is running: it polls the session before it sleeps again
        pump = self._pump
        if pump is None or self._urgent:
            wake.set_result(None)
            return
        pump()
        if self._urgent or self._ws.paused:
            wake.set_result(None)
            return
        session = self._session
        deadline = session.next_deadline() if session is not None else None
        if deadline is not None and (self._wake_at is None or deadline < self._wake_at):
            wake.set_result(None)

    def send_now(self, messages: list[str]) -> None:
        """Send encoded messages ahead of paced audio (clear, DTMF)."""
        if not messages or self.done:
            return
        wake = self._wake
        if (
            not self._urgent
            and wake is not None
            and not wake.done()
            and self._ws.send_texts(messages)
        ):
            if self._ws.paused:
                wake.set_result(None)  # the writer waits for the peer to read it
            return
        self._urgent += messages
        self.wake_writer()

    async def hangup(self, reason: str) -> None:
        """End the call: provider REST hang-up when configured, then close with 1000."""
        if self._hangup_started or self.done:
            await self.wait_done()
            return
        self._hangup_started = True
        await self._rest_hangup()
        self.finish(1000, reason, "bot_finished")

    def on_bot_events_dropped(self, count: int) -> None:
        """A slow bot lost inbound audio: count it."""
        self._server.metrics.bot_events_dropped.inc(count)

    def on_bot_audio_overflow(self, queued_s: float, limit_s: float) -> None:
        """The bot queued more audio than ``max_bot_audio_s``: end the call (1011)."""
        if self._close is None:
            self.log.error(
                "bot queued %.1fs of audio ahead of playout (max_bot_audio_s %gs); "
                "ending the call",
                queued_s,
                limit_s,
            )
        self._fail(BotError("bot queued too much audio"), log=False)

    def on_send_error(self, exc: Exception) -> None:
        """Bot audio converted in a batch could not be queued or sent: end the call."""
        self._fail(exc)

    def on_listener_error(self, exc: Exception) -> None:
        """The bot's event listener raised: end the call as a bot error (1011)."""
        if self._close is None:
            self.log.error("bot failed (its event listener raised); ending the call", exc_info=exc)
        self._fail(BotError("bot failed"), log=False)

    # ------------------------------------------------------------------ helpers

    async def _sleep_until(self, deadline: float | None) -> None:
        wake = self._loop.create_future()
        self._wake = wake
        self._wake_at = deadline
        handle = None if deadline is None else self._loop.call_at(deadline, _wake_up, wake)
        try:
            await wake
        finally:
            self._wake = None
            self._wake_at = None
            if handle is not None:
                handle.cancel()

    async def _drained(self) -> None:
        self.sending_since = self._loop.time()
        try:
            await self._ws.drain()
        finally:
            self.sending_since = None

    async def _send(self, messages: list[str]) -> None:
        # ws.send() only yields when the transport is over its write limit; the server's
        # tick aborts the connection if that lasts longer than send_timeout.
        self.sending_since = self._loop.time()
        try:
            for message in messages:
                await self._ws.send(message)
        finally:
            self.sending_since = None

    async def _flush(self, protocol: MediaStreamProtocol, session: CallSession) -> None:
        """Shutdown: release everything the bot produced, unpaced, before closing."""
        now = self._loop.time()
        session.end_utterance(now)
        commands, _ = session.poll(now + _FLUSH_HORIZON_S)
        messages = self._urgent
        self._urgent = []
        for command in commands:
            messages += protocol.send(command)
        if not messages:
            return
        self.log.info("shutdown: flushing %d queued messages before closing", len(messages))
        with contextlib.suppress(ConnectionClosed):
            await self._send(messages)

    async def _close_socket(self) -> None:
        if self._close is None:
            return
        self._account()
        code, reason, _ = self._close
        if code is None:
            return
        try:
            await self._ws.close(code, reason)
        except Exception:  # the socket is going away anyway
            self.log.debug("error while closing", exc_info=True)

    async def _rest_hangup(self) -> None:
        info = self.info
        if info is None:
            return
        try:
            async with asyncio.timeout(HANGUP_TIMEOUT_S):
                if await self._server.provider_hangup(info):
                    self.log.info("hung up through the provider's REST API")
        except Exception:
            self.log.warning("provider hang-up failed", exc_info=True)

    def _fail(self, exc: BaseException, *, log: bool = True) -> None:
        """The error boundary: map, log with the call id, finish."""
        if isinstance(exc, ConnectionClosed):
            self._on_closed(exc)
            return
        code, reason, outcome = close_for(exc)
        if log and self._close is None:
            if outcome == "internal_error":
                self.log.error("internal error; closing with %d", code, exc_info=exc)
            else:
                self.log.warning("closing with %d (%s): %s", code, outcome, exc)
        self.finish(code, reason, outcome)

    def _on_closed(self, exc: ConnectionClosed) -> None:
        sent = exc.sent
        if sent is not None and sent.code == MessageTooBigError.close_code and exc.rcvd is None:
            # websockets enforced max_size itself and already sent the 1009 close frame.
            self.log.warning(
                "message larger than %d bytes; closed with 1009", self._config.max_message_size
            )
            self.finish(None, "message too big", "protocol_error")
            return
        if getattr(self._ws, "overflowed", False):
            if self._close is None:
                self.log.warning(
                    "peer keeps sending but reads none of our replies (write buffer over "
                    "its bound); aborted"
                )
            self.finish(None, "peer not reading", "send_timeout")
            return
        if self._close is None:
            rcvd = exc.rcvd
            self.log.info(
                "connection closed by peer (code %s)", rcvd.code if rcvd is not None else "none"
            )
        self.finish(None, "connection closed", "disconnected")

    def _on_notice(self, event: Event) -> None:
        if type(event) is ProviderErrorReported:
            assert isinstance(event, ProviderErrorReported)
            self.log.warning(
                "provider reported an error: code=%s title=%s detail=%s",
                event.code,
                event.title,
                event.detail,
            )
        elif type(event) is StreamConnected:
            self.log.debug("stream connected")

    def sync_clear(self) -> None:
        """A mark/clear ack may have completed a clear: record clear-to-silence now."""
        if self._stats is not None and self._session is not None:
            self._stats.sync_clear(self._session.stats)

    def _queued_frames(self) -> int:
        session = self._session
        if session is None or session.ended:
            return 0
        return round(session.queued_s / 0.02)

    async def _stop_bot(self) -> None:
        """Give the bot ``bot_exit_timeout`` to return, then cancel it; abandon it (with
        an error in the log) if it ignores the cancellation as long again."""
        bot = self._bot
        if bot is None or bot.done():
            return
        timeout = self._config.bot_exit_timeout
        try:
            await asyncio.wait({bot}, timeout=timeout)
            if bot.done():
                return
            self.log.warning("bot still running %.1fs after the call ended; cancelling it", timeout)
            bot.cancel()
            await asyncio.wait({bot}, timeout=timeout)
            if not bot.done():
                self.log.error(
                    "bot ignored cancellation for %.1fs; abandoning it (a bot must not "
                    "swallow CancelledError)",
                    timeout,
                )
                _abandoned.add(bot)
                bot.add_done_callback(_abandoned.discard)
        except BaseException:
            bot.cancel()  # we are being cancelled ourselves: do not leave the bot behind
            raise

    async def _teardown(self) -> None:
        if self._close is None:
            self.finish(1011, "internal error", "internal_error")
        self._end_session()
        assert self._close is not None
        outcome = self._close[2]
        await self._close_socket()
        await self._stop_bot()
        if self._admitted and outcome != "stopped" and not self._hangup_started:
            # The stream is gone but the call may not be (Telnyx keeps Call Control legs
            # up, protocols.md §5.8): hang up when control is configured.
            self._hangup_started = True
            await self._rest_hangup()

    def _account(self) -> None:
        """Count and log the call's end, once, before the peer can see the close."""
        if self._accounted or self._close is None:
            return
        self._accounted = True
        code, reason, outcome = self._close
        self._server.metrics.calls.labels(self.provider, outcome).inc()
        session = self._session
        if self._stats is not None and session is not None:
            self._stats.close(session.stats)
        self._server.release(self)
        duration = self._loop.time() - self._opened_at
        if session is not None:
            stats = session.stats
            self.log.info(
                "call ended: %s (close %s %r) after %.1fs; frames in %d out %d filled %d "
                "late %d reordered %d; marks %d/%d; clears %d",
                outcome,
                code if code is not None else "-",
                reason,
                duration,
                stats.frames_in,
                stats.frames_out,
                stats.frames_filled,
                stats.frames_late_dropped,
                stats.frames_reordered,
                stats.marks_played,
                stats.marks_sent,
                stats.clears,
            )
        else:
            self.log.info(
                "connection ended before the call started: %s (close %s %r) after %.1fs",
                outcome,
                code if code is not None else "-",
                reason,
                duration,
            )


#: Bots that ignored cancellation, referenced until they end (a task needs an owner).
_abandoned: set[asyncio.Task[None]] = set()


def _wake_up(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
