"""A live call's input: each message parsed by the provider's protocol, fed to the session.

Messages come synchronously from the media socket (:mod:`.websocket`), in the order they
arrived. The provider's socket is read continuously -- nothing here waits on the bot
(protocols.md §5.7: a slow reader makes Twilio drop audio) -- with one exception that
keeps the order: while the session's inbound side waits for a resampler step
(:attr:`~mediastream.session.CallSession.accepting` is False), the socket holds the next
messages back, unparsed, until the session is done with it (``SessionHost.resume``).
The protocol's state therefore never runs ahead of the session's: a ``stop`` is parsed
only after the audio before it reached the bot. (The session's host -- the connection --
releases the socket.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from mediastream.protocols.base import MediaStreamProtocol
from mediastream.protocols.events import AudioCleared, MarkPlayed, StreamStopped
from mediastream.session import CallSession

from .host import CallSocket
from .live import LiveCall
from .log import CallLogger
from .metrics import StatsSync

__all__ = ["InboundReader"]

#: The processing-time histogram samples one message in 8 (see metrics.py).
_TIME_EVERY_MASK: Final = 7


class InboundReader:
    """Feeds one call's messages to its session (see the module docstring)."""

    __slots__ = (
        "_call",
        "_clock",
        "_count",
        "_log",
        "_observe",
        "_receive",
        "_session",
        "_socket",
        "_stats",
        "last_rx",
    )

    def __init__(
        self,
        socket: CallSocket,
        protocol: MediaStreamProtocol,
        session: CallSession,
        call: LiveCall,
        stats: StatsSync,
        *,
        log: CallLogger,
        clock: Callable[[], float],
        observe: Callable[[float], None],
    ) -> None:
        self._socket = socket
        self._receive = protocol.receive
        self._session = session
        self._call = call
        self._stats = stats
        self._log = log
        self._clock = clock
        #: The processing-time histogram's observe().
        self._observe = observe
        self._count = 0
        #: Loop time of the last message received (the idle-media watchdog reads it).
        self.last_rx = clock()

    def on_message(self, message: str | bytes) -> None:
        """One message; raises what the protocol or the session raises (the connection
        maps it to a close code)."""
        now = self._clock()
        self.last_rx = now
        self._count += 1
        started = time.perf_counter() if self._count & _TIME_EVERY_MASK == 1 else 0.0
        session = self._session
        for event in self._receive(message):
            kind = type(event)
            if kind is StreamStopped:
                self._log.info("provider stopped the stream")
            session.receive_event(event, now)
            if kind is MarkPlayed or kind is AudioCleared:
                self._stats.sync_clear(session.stats)
                call = self._call
                if call.waiting_for_playout:
                    call.check_played()
        if not session.accepting:
            self._socket.hold()
        if started:
            self._observe(time.perf_counter() - started)
