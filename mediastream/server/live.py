"""The server's :class:`~mediastream.call.Call`: what a bot holds for one live call.

It is a thin, synchronous front on the call's :class:`~mediastream.session.CallSession`
plus a bounded event queue. Bot audio goes straight into the session (which resamples,
encodes and paces it) and wakes the connection's writer; nothing the bot calls blocks
except :meth:`LiveCall.receive` and :meth:`LiveCall.wait_played`.

The event queue is bounded (``max_events``). A bot that stops reading would otherwise
grow memory by 50 frames a second; when the queue is full the *oldest audio frame* is
dropped (counted, logged once per call) and control events -- DTMF, playout, the end of
the call -- are kept. Only a queue with no audio left to drop gives up its oldest DTMF
key: no caller presses hundreds of keys, but a hostile peer can send thousands of
``dtmf`` messages a second. A bot that keeps up never loses a frame.

A bot that sets a listener (:meth:`LiveCall.set_listener`) gets each event handed to it
synchronously instead, from the reader or writer that produced it: no queue, no bound, no
task wake-up.

Commands go out through the connection's writer (:meth:`CallLink.send_now`), the one
place that encodes them for the provider; what the provider's socket can carry is
:attr:`LiveCall.capabilities`.

Bot audio is bounded too (``max_audio_s`` of it queued ahead of playout): ``send_audio``
never blocks, so a bot that produces audio faster than real time without end would grow
the pacer's queue without end. Past the bound the call ends as a bot error (1011).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from mediastream.call import Call, CallEnded, CallEvent, CallListener, DtmfPressed, InboundAudio
from mediastream.errors import ListenOnlyError, LocalProtocolError
from mediastream.protocols.events import CallInfo, Capabilities, Command, SendDtmf

from .log import CallLogger

if TYPE_CHECKING:
    from mediastream.session import CallSession

__all__ = ["LiveCall"]


class CallLink(Protocol):
    """What a :class:`LiveCall` needs from the connection that owns it."""

    def wake(self) -> None:
        """Run the writer's step (something may be due)."""

    def send_now(self, commands: list[Command]) -> None:
        """Encode and send ``commands`` ahead of paced audio (LocalProtocolError for a
        command the provider cannot carry)."""

    async def hangup(self, reason: str) -> None: ...

    def on_bot_events_dropped(self, count: int) -> None: ...

    def on_bot_audio_overflow(self, queued_s: float, limit_s: float) -> None: ...

    def on_listener_error(self, exc: Exception) -> None: ...


class LiveCall(Call):
    """One call as the bot sees it; created by the server once ``start`` arrived."""

    __slots__ = (
        "_audio_queued",
        "_capabilities",
        "_dropped",
        "_end",
        "_events",
        "_link",
        "_listener",
        "_log",
        "_loop",
        "_max_audio_s",
        "_max_events",
        "_played_waiters",
        "_session",
        "_waiter",
        "heard",
        "info",
        "sample_rate",
        "spoken",
    )

    def __init__(
        self,
        info: CallInfo,
        session: CallSession,
        capabilities: Capabilities,
        link: CallLink,
        log: CallLogger,
        *,
        sample_rate: int,
        max_events: int,
        max_audio_s: float = float("inf"),
    ) -> None:
        self.info = info
        self.sample_rate = sample_rate
        self._session = session
        self._capabilities = capabilities
        self._link = link
        self._log = log
        self._loop = asyncio.get_running_loop()
        self._events: deque[CallEvent] = deque()
        #: InboundAudio events in ``_events``: a full queue of control events (a key
        #: flood) is then found without scanning it for audio on every push.
        self._audio_queued = 0
        self._max_events = max(2, max_events)
        self._max_audio_s = max_audio_s
        self._waiter: asyncio.Future[None] | None = None
        self._end: CallEnded | None = None
        self._played_waiters: list[asyncio.Future[bool]] = []
        self._dropped = 0
        #: Dropped once it has been handed CallEnded: it gets nothing after that.
        self._listener: CallListener | None = None
        #: The last batch handed to the bot and the last bot audio queued: the calls
        #: book (:mod:`.calls`) reads levels off them when asked, nothing per frame.
        self.heard: Iterable[CallEvent] = ()
        self.spoken = b""

    # ---------------------------------------------------------------- server side

    def push(self, events: Iterable[CallEvent]) -> None:
        """Hand events to the bot (called by the connection's reader and writer): to its
        listener when it set one, else into the queue :meth:`receive` reads."""
        self.heard = events
        queue = self._events
        for event in events:
            if type(event) is CallEnded:
                # Delivered after everything before it, then forever after.
                if self._end is None:
                    self._end = event
                continue
            listener = self._listener
            if listener is not None:
                try:
                    listener(event)
                except Exception as exc:
                    self._listener_failed(exc)
                    return
                continue
            if len(queue) >= self._max_events and not (
                self._audio_queued and self._drop_oldest(InboundAudio)
            ):
                # Nothing but control events queued: a flood of keys, not a caller.
                self._drop_oldest(DtmfPressed)
            if type(event) is InboundAudio:
                self._audio_queued += 1
            queue.append(event)
        end = self._end
        if end is not None:
            listener = self._listener
            if listener is not None:
                # It gets nothing more: let go of it (it usually holds this call).
                self._listener = None
                try:
                    listener(end)
                except Exception as exc:
                    self._listener_failed(exc)
        elif not queue:
            return  # nothing for receive(): its waiter sleeps on (listener mode)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _listener_failed(self, exc: Exception) -> None:
        self._listener = None  # it gets nothing more; the call ends as a bot error
        self._link.on_listener_error(exc)

    def _drop_oldest(self, kind: type[InboundAudio] | type[DtmfPressed]) -> bool:
        queue = self._events
        for index, event in enumerate(queue):
            if type(event) is kind:
                del queue[index]
                if kind is InboundAudio:
                    self._audio_queued -= 1
                self._dropped += 1
                if self._dropped == 1:
                    self._log.warning(
                        "bot is not reading its events: dropping the oldest %s "
                        "(queue bound %d)",
                        "inbound audio" if kind is InboundAudio else "DTMF key",
                        self._max_events,
                    )
                self._link.on_bot_events_dropped(1)
                return True
        return False

    def end(self, reason: str) -> None:
        """The call is over: the bot's next :meth:`receive` returns :class:`CallEnded`."""
        if self._end is None:
            self._end = CallEnded(reason)
        self.push(())
        self.check_played()

    def check_played(self) -> None:
        """Resolve :meth:`wait_played` waiters if the caller has heard everything."""
        waiters = self._played_waiters
        if not waiters:
            return
        if self._end is not None:
            result = self._session.all_played
        elif self._session.all_played:
            result = True
        else:
            return
        self._played_waiters = []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(result)

    @property
    def events_dropped(self) -> int:
        """Inbound audio frames (or DTMF keys) dropped because the bot did not read them."""
        return self._dropped

    @property
    def waiting_for_playout(self) -> bool:
        """True while some :meth:`wait_played` is pending (the writer then re-checks)."""
        return bool(self._played_waiters)

    # ------------------------------------------------------------------ Call API

    async def receive(self) -> CallEvent:
        """Wait for the next event; after :class:`CallEnded` it keeps returning it."""
        while True:
            if self._events:
                event = self._events.popleft()
                if type(event) is InboundAudio:
                    self._audio_queued -= 1
                return event
            if self._end is not None:
                return self._end
            waiter = self._loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    def set_listener(self, listener: CallListener | None) -> None:
        """Hand events to ``listener`` synchronously instead of queueing them (see
        :meth:`Call.set_listener`); queued events go to it first, in order."""
        self._listener = listener
        if listener is None:
            return
        queued = list(self._events)
        self._events.clear()
        self._audio_queued = 0
        self.push(queued)

    def send_audio(self, pcm: bytes, sample_rate: int) -> None:
        """Queue bot audio (int16 LE mono, any chunk size) for paced playout.

        Past ``max_audio_s`` queued ahead of playout the audio is refused and the call
        ends as a bot error (see the module docstring).
        """
        if not self._capabilities.send_audio:
            raise ListenOnlyError(self._listen_only_refusal("play audio"))
        if self._end is not None:
            return
        session = self._session
        if sample_rate > 0:
            queued = session.queued_s
            if queued + len(pcm) / (2 * sample_rate) > self._max_audio_s:
                self._link.on_bot_audio_overflow(queued, self._max_audio_s)
                return
        self.spoken = pcm
        # The session wakes the writer once there is something to send.
        session.send_audio(pcm, sample_rate, self._loop.time())

    def end_utterance(self) -> None:
        """Flush the resampler tail and place the utterance's final mark."""
        if self._end is not None or not self._capabilities.send_audio:
            return
        self._session.end_utterance(self._loop.time())

    def clear(self) -> None:
        """Barge-in: clear the provider's buffer now and drop audio not yet sent.

        On a listen-only stream nothing was sent: no clear goes to the provider."""
        if self._end is not None or not self._capabilities.clear:
            return
        self._link.send_now(self._session.clear(self._loop.time()))

    async def wait_played(self, timeout: float | None = None) -> bool:
        """Wait until the caller has heard everything sent so far; False on timeout/end."""
        if self._session.all_played:
            return True
        if self._end is not None:
            return False
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._played_waiters.append(waiter)
        # The writer re-checks on every wake-up; make sure it wakes at the next deadline.
        self._link.wake()
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            return False
        finally:
            if waiter in self._played_waiters:
                self._played_waiters.remove(waiter)

    def send_dtmf(self, digits: str) -> None:
        """Play DTMF into the call (Plivo ``sendDTMF``).

        Raises :class:`~mediastream.errors.LocalProtocolError` on providers without DTMF
        on the media socket (``capabilities.send_dtmf`` is False: Twilio, Telnyx; use
        their REST API) or for invalid digits.
        """
        if not self._capabilities.send_audio:
            raise ListenOnlyError(self._listen_only_refusal("send DTMF"))
        if not self._capabilities.send_dtmf:
            raise LocalProtocolError(
                f"{self.info.provider} cannot send DTMF on the media socket (use its REST API)"
            )
        if self._end is not None:
            return
        self._link.send_now([SendDtmf(digits)])

    @property
    def capabilities(self) -> Capabilities:
        """What the provider's socket carries from the bot (DTMF, marks, clear)."""
        return self._capabilities

    def _listen_only_refusal(self, what: str) -> str:
        return (
            f"call {self.info.call_id} is a listen-only {self.info.provider} stream: the bot "
            f"cannot {what} (the answer document forks the call's audio to it)"
        )

    async def hangup(self, reason: str = "bot") -> None:
        """End the call: provider REST hang-up when configured, then close with 1000."""
        await self._link.hangup(reason)

    @property
    def bot_speaking(self) -> bool:
        """True while the caller is hearing bot audio (per the playout ledger)."""
        return bool(self._session.bot_speaking)

    @property
    def ended(self) -> bool:
        """True once the call is over."""
        return self._end is not None

    def __repr__(self) -> str:
        return f"<LiveCall {self.info.provider} {self.info.call_id} ended={self.ended}>"
