"""What a bot sees of one live call: the embedding contract between server and bot.

A bot is an async callable ``async def bot(call: Call) -> None`` (a :data:`BotRunner`).
The server creates one :class:`Call` per media stream once the provider's ``start``
arrived, runs the bot, and ends the call when the bot returns or raises. Pipecat bots
reach the same object through ``bot.transport.MediaStreamTransport``; the built-in echo
bot (:mod:`mediastream.echo`) uses it directly.

Audio handed to the bot is 16-bit little-endian mono PCM at :attr:`Call.sample_rate`, in
20 ms frames (40 or 60 with ``Config.bot_frame_ms``), decoded and resampled once by the
session. Audio from the bot may be any
rate and any chunk size; the session resamples, encodes, cuts 20 ms wire frames and paces
them. Nothing the bot sends is dropped unless the bot calls :meth:`Call.clear`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from mediastream.protocols.events import CallInfo, Capabilities

__all__ = [
    "BotMessage",
    "BotRunner",
    "Call",
    "CallEnded",
    "CallEvent",
    "CallListener",
    "DtmfPressed",
    "InboundAudio",
    "PlayoutStarted",
    "PlayoutStopped",
]


@dataclass(frozen=True, slots=True)
class InboundAudio:
    """20 ms (``Config.bot_frame_ms``; less at the very end) of call audio at
    ``Call.sample_rate``.

    ``pcm`` is int16 little-endian mono. ``filled`` is True when the session
    synthesised this frame as silence for a true gap in the provider's sequence.
    ``track`` says whose voice it is: ``"caller"`` (the provider's inbound track, the
    only one a bidirectional stream delivers) or ``"other"``: on a listen-only stream
    that carries both tracks, what the caller hears (the other party of a ``<Dial>``).
    Each track is decoded, reordered and resampled on its own (session/tracks.py).
    """

    pcm: bytes
    sample_rate: int
    filled: bool = False
    track: str = "caller"


@dataclass(frozen=True, slots=True)
class DtmfPressed:
    """The caller pressed a key."""

    digit: str


@dataclass(frozen=True, slots=True)
class PlayoutStarted:
    """The caller started hearing the bot (per the playout ledger, not the socket)."""


@dataclass(frozen=True, slots=True)
class PlayoutStopped:
    """The caller stopped hearing the bot: everything sent was played, or it was cut.

    ``played_s`` is how much of the utterance the caller heard; ``cut`` is True when a
    :meth:`Call.clear` ended it.
    """

    played_s: float
    cut: bool = False


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The stream is over (provider ``stop``, socket closed, hang-up, shutdown)."""

    reason: str


@dataclass(frozen=True, slots=True)
class BotMessage:
    """A message for the bot from outside the call: ``POST /calls/{id}/message``.

    ``data`` is the request's JSON object as sent (a CRM telling the bot "the order
    shipped"). It arrives in order with the call's other events, through
    :meth:`Call.receive` or the listener; what to do with it is the bot's business (the
    Pipecat bridge pushes it as an ``InputTransportMessageFrame``). It may come from any
    instance of a cluster: the one holding the call delivers it.
    """

    data: dict[str, Any]


CallEvent: TypeAlias = (
    InboundAudio | DtmfPressed | PlayoutStarted | PlayoutStopped | BotMessage | CallEnded
)


class Call(ABC):
    """One live call as the bot sees it. Created by the server; not for bots to build."""

    #: The provider-neutral description: ids, numbers, formats, custom parameters, agent.
    info: CallInfo
    #: Rate of the PCM delivered by :meth:`receive` (the bot's input rate).
    sample_rate: int

    @abstractmethod
    async def receive(self) -> CallEvent:
        """Wait for the next event. After :class:`CallEnded` it keeps returning it."""

    def __aiter__(self) -> AsyncIterator[CallEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[CallEvent]:
        while True:
            event = await self.receive()
            if isinstance(event, CallEnded):
                return
            yield event

    @abstractmethod
    def set_listener(self, listener: CallListener | None) -> None:
        """Hand events to ``listener`` as they happen instead of queueing them.

        From this call on, every event (events already queued first, in order, then
        each new one as the server produces it, :class:`CallEnded` last) is passed to
        ``listener(event)`` synchronously, and :meth:`receive` returns nothing but the
        final :class:`CallEnded`: ``await call.receive()`` then waits for the end of the
        call. ``None`` goes back to queueing.

        This is the lowest-latency, lowest-cost way to consume a call: no task wake-up
        per 20 ms frame (the built-in echo uses it). The listener runs inside the
        server's I/O callbacks, so it must return quickly and never block; it may call
        the synchronous methods (:meth:`send_audio`, :meth:`end_utterance`,
        :meth:`clear`, :meth:`send_dtmf`) and schedule anything slower as a task. An
        exception it raises ends the call as a bot error (close code 1011), as a bot
        that raises does.
        """

    @property
    def listen_only(self) -> bool:
        """True for a listen-only stream (a ``<Start><Stream>`` fork, Plivo
        ``bidirectional="false"``): the bot hears the call but cannot speak into it.
        :meth:`send_audio` and :meth:`send_dtmf` then raise
        :class:`~mediastream.errors.ListenOnlyError`; :meth:`clear` and
        :meth:`end_utterance` do nothing (there is nothing to clear or mark)."""
        return not self.capabilities.send_audio

    @abstractmethod
    def send_audio(self, pcm: bytes, sample_rate: int) -> None:
        """Queue bot audio (int16 LE mono, any chunk size) for paced playout. Never blocks."""

    @abstractmethod
    def end_utterance(self) -> None:
        """Mark the end of a bot utterance: flush the resampler tail and place a mark."""

    @abstractmethod
    def clear(self) -> None:
        """Interrupt: clear the provider's buffer, drop queued audio, resolve marks as cut."""

    @abstractmethod
    async def wait_played(self, timeout: float | None = None) -> bool:
        """Wait until the caller has heard everything sent so far. False on timeout/end."""

    @abstractmethod
    def send_dtmf(self, digits: str) -> None:
        """Play DTMF into the call where the provider allows it on the socket (Plivo:
        ``capabilities.send_dtmf``); elsewhere raises
        :class:`~mediastream.errors.LocalProtocolError`."""

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What the provider's media socket carries from the bot: ``send_dtmf``,
        ``marks``, ``clear``, ``clear_acknowledged``. Ask this, not the provider's name."""

    @abstractmethod
    async def hangup(self, reason: str = "bot") -> None:
        """End the call now: provider REST hang-up when configured, else close with 1000.

        Idempotent; a call that has already ended counts as success.
        """

    @property
    @abstractmethod
    def bot_speaking(self) -> bool:
        """True while the caller is hearing bot audio (per the playout ledger)."""

    @property
    @abstractmethod
    def ended(self) -> bool:
        """True once the call is over."""


#: A bot: run for the duration of one call.
BotRunner: TypeAlias = Callable[[Call], Awaitable[None]]
#: A synchronous event consumer: see :meth:`Call.set_listener`.
CallListener: TypeAlias = Callable[[CallEvent], None]
