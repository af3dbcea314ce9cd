"""A live call's output: paced audio and marks when due, commands ahead of them.

The one place that encodes provider commands: everything the session releases
(:meth:`~mediastream.session.CallSession.poll`) and everything the bot sends at once
(``clear``, DTMF, through :meth:`OutboundWriter.send_now`) goes through the protocol's
``send`` here and out through :meth:`~.websocket.MediaSocket.send_texts`.

No task: the writer is a step (:meth:`OutboundWriter.wake`) run when the session has
something new (the bot sent audio: the frame due now leaves at once, in the bot's own
call) and by one timer armed for :meth:`~mediastream.session.CallSession.next_deadline`.
While the transport is over its high-water mark the step does nothing -- the session's
pacer holds the audio, commands wait here in order -- and the socket's ``on_writable``
runs it again; a peer that stays that way past ``send_timeout`` is cut off by the
server's periodic check (:meth:`~.connection.MediaConnection.check_timeouts`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from mediastream.protocols.base import MediaStreamProtocol
from mediastream.protocols.events import Command
from mediastream.session import CallSession

from .host import CallSocket
from .live import LiveCall

__all__ = ["OutboundWriter"]

#: How far ahead the shutdown flush releases the pacer's queue (everything queued).
_FLUSH_HORIZON_S: Final = 3600.0


class OutboundWriter:
    """Sends one call's output (see the module docstring)."""

    __slots__ = (
        "_again",
        "_call",
        "_encode",
        "_loop",
        "_on_error",
        "_session",
        "_socket",
        "_stepping",
        "_stopped",
        "_timer",
        "_timer_at",
        "_urgent",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        socket: CallSocket,
        protocol: MediaStreamProtocol,
        session: CallSession,
        call: LiveCall,
        on_error: Callable[[Exception], None],
    ) -> None:
        self._loop = loop
        self._socket = socket
        self._encode = protocol.send
        self._session = session
        self._call = call
        #: The connection's error boundary, for failures off anybody's stack (timers).
        self._on_error = on_error
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        #: Encoded commands waiting for the transport to drain, in order.
        self._urgent: list[str] = []
        self._stopped = False
        # A step is running; something asked for another one meanwhile. The session
        # hands events to the bot from poll(), and a bot that answers at once (a
        # listener) wakes the writer from inside the step: that wake-up runs after it,
        # so what one poll released always leaves before what the next one does.
        self._stepping = False
        self._again = False

    def wake(self) -> None:
        """Send what is due now and re-arm the timer (the session has something new)."""
        if self._stopped:
            return
        if self._stepping:
            self._again = True
            return
        self._stepping = True
        try:
            while self._socket.writable and not self._stopped:
                self._again = False
                self._step()
                if not self._again:
                    break
        except Exception as exc:
            self._on_error(exc)
        finally:
            self._stepping = False

    def on_writable(self) -> None:
        """The transport drained: what waited goes first, then the paced output."""
        self.wake()

    def send_now(self, commands: list[Command]) -> None:
        """Encode ``commands`` and send them ahead of paced audio.

        Raises :class:`~mediastream.errors.LocalProtocolError` (to the bot that asked)
        for a command the provider cannot carry.
        """
        messages = self._messages(commands)
        if not messages or self._stopped:
            return
        if self._urgent or self._stepping or not self._socket.writable:
            # Behind what is already on its way (a step's output, or a drain).
            self._urgent += messages
            self._again = self._stepping
            return
        self._socket.send_texts(messages)
        self.wake()  # a clear's cut event is due now

    def stop(self) -> None:
        """The call is over: no more sends, no timer."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def flush(self) -> int:
        """Shutdown: send everything the bot produced, unpaced, then wait for the
        transport to take it (bounded by the server's send-timeout check). Returns the
        number of messages sent."""
        self.stop()
        session = self._session
        now = self._loop.time()
        session.end_utterance(now)
        messages, self._urgent = self._urgent, []
        messages += self._messages(session.poll(now + _FLUSH_HORIZON_S))
        if messages and self._socket.send_texts(messages):
            await self._socket.drain()
            return len(messages)
        return 0

    # ------------------------------------------------------------------ internals

    def _messages(self, commands: list[Command]) -> list[str]:
        encode = self._encode
        messages: list[str] = []
        for command in commands:
            messages += encode(command)
        return messages

    def _step(self) -> None:
        socket = self._socket
        if self._urgent:
            urgent, self._urgent = self._urgent, []
            socket.send_texts(urgent)
        session = self._session
        commands = session.poll(self._loop.time())
        if commands:
            encode = self._encode
            messages: list[str] = []
            for command in commands:
                messages += encode(command)
            socket.send_texts(messages)
        call = self._call
        if call.waiting_for_playout:
            call.check_played()
        deadline = session.next_deadline()
        if deadline is None:
            return
        timer = self._timer
        if timer is not None:
            if self._timer_at <= deadline:
                return
            timer.cancel()
        self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        self._timer = self._loop.call_at(deadline, self._on_timer)
        self._timer_at = deadline

    def _on_timer(self) -> None:
        self._timer = None
        if not self._urgent and not self._stopped:
            # A deadline that moved later since the timer was armed (the idle-flush one
            # moves with every frame the bot sends; the timer is not re-armed for each
            # move): nothing is due, so only re-arm, without a poll.
            deadline = self._session.next_deadline()
            if deadline is not None and deadline > self._loop.time():
                self._arm(deadline)
                return
        self.wake()
