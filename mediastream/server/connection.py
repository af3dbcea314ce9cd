"""One media WebSocket's call, from the 101 to the close: its phases and its one error boundary.

Life of a connection::

    101 --> awaiting start -----------> live ---------------------------> ending --> closed
            (first_message_timeout)     reader, writer, session, bot      close, stop the bot,
                                        until the first of: provider      hang up, account
                                        stop, socket closed, bot done or
                                        hung up, an error, idle media,
                                        send timeout, server shutdown

Its parts, each with one concern: the media socket (:mod:`.websocket`) delivers messages
and sends frames; the reader (:mod:`.reader`) parses and feeds the session; the session
(:mod:`mediastream.session`) does the media; the writer (:mod:`.writer`) paces and encodes;
the supervisor (:mod:`.supervisor`) runs the bot; :class:`~.live.LiveCall` is what the bot
holds. This class owns the phases and the **one error boundary**: every message, every
callback from the session, the writer's timer and the bot ends up in
:meth:`MediaConnection.fail` or :meth:`MediaConnection.finish` (first one wins), and the
:class:`~.ending.Ending` -- read off the exception's class, see :mod:`mediastream.errors` --
is logged with the call id. Timers that would cost a handle per message (idle media, send
timeout) are checked by the server's periodic tick (:meth:`MediaConnection.check_timeouts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl

from mediastream.call import CallEnded, CallEvent
from mediastream.errors import BotError, Outcome, StreamTimeoutError
from mediastream.protocols.events import LISTEN_ONLY, CallInfo, Command
from mediastream.recording.session import close_recording, open_session
from mediastream.session import CallSession

from .calls import CallRecord
from .ending import SHUTDOWN, STOPPED, Ending, closed_ending
from .host import CallHost, CallSocket, SocketClosed
from .live import LiveCall
from .log import CallLogger, log_call_end
from .metrics import StatsSync
from .reader import InboundReader
from .start import Started, StartPhase
from .supervisor import BotSupervisor
from .writer import OutboundWriter

__all__ = ["MediaConnection"]

logger = logging.getLogger(__name__)

#: Bound on a provider REST hang-up.
HANGUP_TIMEOUT_S: Final = 5.0


class MediaConnection:
    """One upgraded media WebSocket and its call (see the module docstring)."""

    def __init__(self, host: CallHost, socket: CallSocket, headers: Mapping[str, str]) -> None:
        self._host = host
        self._config = config = host.config
        self._socket = socket
        route = socket.route
        self._agent = route.agent if route is not None else None
        self._query = dict(parse_qsl(socket.query, keep_blank_values=True))
        self._headers = headers
        self._loop = asyncio.get_running_loop()
        self.log = CallLogger(logger, f"conn-{socket.id.hex[:8]}")
        provider = route.provider if route is not None else None
        self.provider: str = provider or "unknown"
        self.info: CallInfo | None = None
        self._opening: StartPhase | None = StartPhase(
            provider, query=self._query, headers=headers,
            max_message_size=config.max_message_size, log=self.log,
            l16_byteorder=config.telnyx_l16_byteorder)
        self._session: CallSession | None = None
        self._call: LiveCall | None = None
        self._reader: InboundReader | None = None
        self._writer: OutboundWriter | None = None
        self._bot: BotSupervisor | None = None
        self._stats: StatsSync | None = None
        self._ending: Ending | None = None
        self._finished: asyncio.Future[None] = self._loop.create_future()
        self._flush_on_close = self._hangup_started = False
        self._record: CallRecord | None = None
        self._admitted = self._accounted = False
        self._opened_at = self._loop.time()
        self._start_timer: asyncio.TimerHandle | None = self._loop.call_later(
            config.first_message_timeout, self._no_start)
        socket.handler = self

    # ------------------------------------------------------------------ state

    @property
    def started(self) -> bool:
        """True once ``start`` was accepted and the call counts against capacity."""
        return self._admitted

    @property
    def live_call(self) -> LiveCall | None:
        """What the bot holds, once the call is live (the call API's commands use it)."""
        return self._call

    @property
    def done(self) -> bool:
        """True once the call has ended (the socket may still be closing)."""
        return self._ending is not None

    async def wait_done(self) -> None:
        """Wait until the call has ended."""
        await asyncio.shield(self._finished)

    # ------------------------------------------------------------------ the boundary

    def finish(self, ending: Ending) -> None:
        """End the call (first caller wins): record how, tell the bot, stop the parts."""
        if self._ending is not None:
            return
        self._ending = ending
        self._socket.hold()
        if self._start_timer is not None:
            self._start_timer.cancel()
            self._start_timer = None
        if not self._flush_on_close:
            # Shutdown ends the session only after the flush (it drops unsent audio).
            if self._writer is not None:
                self._writer.stop()
            self._end_session()
        self._finished.set_result(None)

    def fail(self, exc: BaseException, *, log: bool = True) -> None:
        """The error boundary: the ending ``exc`` calls for, logged with the call id."""
        ending = Ending.of(exc)
        if log and self._ending is None:
            if ending.outcome is Outcome.INTERNAL_ERROR:
                self.log.error("internal error; closing with %d", ending.code, exc_info=exc)
            else:
                self.log.warning("closing with %d (%s): %s", ending.code, ending.outcome, exc)
        self.finish(ending)

    def shutdown(self) -> None:
        """Server shutdown: send what the bot already produced, then close with 1001."""
        self._flush_on_close = True
        self.finish(SHUTDOWN)

    def check_timeouts(self, now: float) -> None:
        """The server's tick: a peer that stopped reading (also while the call's end is
        being flushed), and idle media."""
        since = self._socket.paused_since
        if since is not None and now - since > self._config.send_timeout:
            self.log.warning(
                "peer stopped reading: a send waited %.1fs (send_timeout %.1fs); aborting",
                now - since,
                self._config.send_timeout,
            )
            self.finish(Ending(None, "send timeout", Outcome.SEND_TIMEOUT))
            self._socket.abort()
            return
        reader = self._reader
        if reader is not None and not self.done:
            idle = self._config.idle_media_timeout
            if now - reader.last_rx > idle:
                self.fail(StreamTimeoutError(f"no media for {idle:g}s"))

    def sync_metrics(self) -> None:
        """Move the session's counters into the server metrics (periodic tick)."""
        if self._stats is not None and self._session is not None:
            self._stats.sync(self._session.stats, self._queued_frames())

    # ------------------------------------------------------------------ socket events

    def on_message(self, message: str | bytes) -> None:
        if self._ending is not None:
            return
        try:
            reader = self._reader
            if reader is not None:
                reader.on_message(message)
            else:
                self._before_start(message)
        except Exception as exc:
            self.fail(exc)

    def on_closed(self, why: SocketClosed) -> None:
        self.finish(closed_ending(why, None if self._ending is not None else self.log))

    def on_writable(self) -> None:
        if self._writer is not None:
            self._writer.on_writable()

    # ------------------------------------------------------------------ awaiting start

    def _no_start(self) -> None:
        self._start_timer = None
        if self._reader is None:
            timeout = self._config.first_message_timeout
            self.fail(StreamTimeoutError(f"no start message within {timeout:g}s"))

    def _before_start(self, message: str | bytes) -> None:
        assert self._opening is not None
        started = self._opening.receive(message)
        if isinstance(started, Started):
            # With shared state the token is spent there first; the socket waits meanwhile.
            if not self._host.cluster.claim(started, self._query, self._headers, self._socket,
                                            lambda: self._claimed(started), self.fail):
                self._go_live(started)
        elif started is not None:
            self.finish(STOPPED)

    def _claimed(self, started: Started) -> None:
        if self._ending is None:
            self._go_live(started)
            if self._session is not None and self._session.accepting:
                self._socket.release()

    def _go_live(self, started: Started) -> None:
        """Checks at ``start`` (stream token, agent, capacity: raise to reject), then the
        call's parts, then the bot."""
        host, config = self._host, self._config
        protocol = started.protocol
        info = started.start.call
        self.provider = info.provider
        self.log.bind(info.call_id, info.provider)
        self.info = info = host.check_stream_start(
            info, protocol, query=self._query, headers=self._headers)
        runner = host.agents.resolve(info, self._agent)
        listen_only = host.agents.is_listen_only(info, self._agent)
        host.admit(self)
        self._admitted = True
        if self._start_timer is not None:
            self._start_timer.cancel()
            self._start_timer = None
        self._opening = None
        now = self._loop.time()
        self._session = session = open_session(
            host.recordings, info, self, clock=self._loop.time, agent=self._agent,
            bot_sample_rate=config.bot_sample_rate, bot_frame_ms=config.bot_frame_ms,
            playout_lead=config.playout_lead, mark_interval=config.mark_interval,
            reorder_window=config.reorder_window, now=now, mark_grace=config.mark_grace,
            idle_flush=config.idle_flush, batcher=host.batcher, listen_only=listen_only)
        self._stats = stats = StatsSync(host.metrics, info.provider, protocol)
        self._call = call = LiveCall(
            info, session, LISTEN_ONLY if listen_only else protocol.capabilities, self, self.log,
            sample_rate=config.bot_sample_rate, max_events=config.bot_queue_frames,
            max_audio_s=config.max_bot_audio_s)
        self._writer = OutboundWriter(self._loop, self._socket, protocol, session, call, self.fail)
        self._record = record = host.calls.open(
            info, self._agent, session, call, host.metrics.frame_seconds.observe)
        self._reader = InboundReader(
            self._socket, protocol, session, call, stats, log=self.log, clock=self._loop.time,
            observe=record.observe)
        self.log.info(
            "call started: %s in=%s/%d out=%s/%d agent=%s", info.provider,
            info.inbound_format.encoding, info.inbound_format.sample_rate,
            info.outbound_format.encoding, info.outbound_format.sample_rate,
            self._agent or info.agent or "-")
        for event in (started.start, *started.early):
            if self._ending is not None:
                break
            session.receive_event(event, now)
        if not session.accepting:
            self._socket.hold()
        self._bot = BotSupervisor(
            runner, call, self, self.log, exit_timeout=config.bot_exit_timeout,
            playout_timeout=lambda: session.queued_s + config.playout_lead)
        self._bot.start()

    # ------------------------------------------------------------------ SessionHost

    def deliver(self, events: list[CallEvent]) -> None:
        call = self._call
        if call is None:
            return
        call.push(events)
        if type(events[-1]) is CallEnded and self._ending is None:
            self.finish(STOPPED)  # the session ended the stream itself: the provider's stop

    def wake(self) -> None:
        if self._writer is not None:
            self._writer.wake()

    def resume(self) -> None:
        call = self._call
        if call is not None and self._ending is None:
            if call.waiting_for_playout:
                call.check_played()  # a mark echo may have waited in the session
            self._socket.release()

    def failed(self, exc: Exception) -> None:
        self.fail(exc)

    # ------------------------------------------------------------------ CallLink

    def send_now(self, commands: list[Command]) -> None:
        if self._writer is not None and self._ending is None:
            self._writer.send_now(commands)

    async def hangup(self, reason: str) -> None:
        """End the call: provider REST hang-up when configured, then close with 1000."""
        if self._hangup_started or self.done:
            await self.wait_done()
            return
        self._hangup_started = True
        await self._rest_hangup()
        self.finish(Ending(1000, reason, Outcome.BOT_FINISHED))

    def on_bot_events_dropped(self, count: int) -> None:
        self._host.metrics.bot_events_dropped.inc(count)

    def on_bot_audio_overflow(self, queued_s: float, limit_s: float) -> None:
        if self._ending is None:
            self.log.error("bot queued %.1fs of audio ahead of playout (max_bot_audio_s %gs); "
                           "ending the call", queued_s, limit_s)
        self.fail(BotError("bot queued too much audio"), log=False)

    def on_listener_error(self, exc: Exception) -> None:
        if self._ending is None:
            self.log.error("bot failed (its event listener raised); ending the call",
                           exc_info=exc)
        self.fail(BotError("bot failed"), log=False)

    # ------------------------------------------------------------------ the end

    async def run(self) -> None:
        """Wait for the call's end, then close, stop the bot, hang up and account; never
        raises except on cancellation."""
        try:
            await self._finished
            if self._flush_on_close:
                await self._flush()
                self._end_session()
            ending = self._ending
            assert ending is not None
            if self._call is not None:  # a loop turn later: whatever was out has arrived
                self._call.end(ending.reason)
            self._account()
            if ending.code is not None:
                self._socket.close(ending.code, ending.reason)
            if self._bot is not None:
                await self._bot.stop()
            stopped = ending.outcome is Outcome.STOPPED
            if self._admitted and not stopped and not self._hangup_started:
                # The stream is gone but the call may not be (Telnyx keeps Call Control legs
                # up, protocols.md §5.8): hang up when control is configured.
                self._hangup_started = True
                await self._rest_hangup()
            await self._socket.wait_closed()  # bounded: the socket aborts after close_timeout
        finally:
            self._release_references()

    def _end_session(self) -> None:
        """Tell the session the call is over (idempotent): the caller's last audio, then
        CallEnded, reach the bot through it, in order -- at once, or at the end of the
        loop turn when a resampler step is out. Without a session, tell the call."""
        reason = self._ending.reason if self._ending is not None else "ended"
        if self._session is not None:
            self._session.end(reason, self._loop.time())
        elif self._call is not None:
            self._call.end(reason)

    async def _flush(self) -> None:
        writer = self._writer
        if writer is None:
            return
        self._host.batcher.flush()  # steps out this turn first: nothing they made is lost
        with contextlib.suppress(ConnectionError):
            sent = await writer.flush()
            if sent:
                self.log.info("shutdown: flushed %d queued messages before closing", sent)

    async def _rest_hangup(self) -> None:
        info = self.info
        if info is None:
            return
        try:
            async with asyncio.timeout(HANGUP_TIMEOUT_S):
                if await self._host.provider_hangup(info):
                    self.log.info("hung up through the provider's REST API")
        except Exception:
            self.log.warning("provider hang-up failed", exc_info=True)

    def _release_references(self) -> None:
        """Drop the links that make a finished call one reference cycle (connection <->
        call <-> session, the parts), so reference counting frees it at once.

        Otherwise every call leaves ~100 objects (and its buffers) for the cyclic
        collector, and the full collections that garbage triggers pause every live
        call -- 30-100 ms measured at 200 calls, each pause a permanent 20 ms step in
        the audible latency of the calls it hits.
        """
        self._call = self._session = self._reader = self._writer = None
        self._bot = self._stats = self._opening = self._record = None
        self._socket.handler = None

    def _queued_frames(self) -> int:
        session = self._session
        if session is None or session.ended:
            return 0
        return round(session.queued_s / 0.02)

    def _account(self) -> None:
        """Count and log the call's end, once, before the peer can see the close."""
        if self._accounted or self._ending is None:
            return
        self._accounted = True
        self._host.metrics.calls.labels(self.provider, self._ending.outcome.value).inc()
        session = self._session
        if self._stats is not None and session is not None:
            self._stats.close(session.stats)
        close_recording(session, self._loop.time(), self._ending)
        if self._admitted:
            self._host.release(self)
        self._host.calls.close(self._record, self._ending)
        log_call_end(self.log, self._ending, self._loop.time() - self._opened_at,
                      None if session is None else session.stats)
