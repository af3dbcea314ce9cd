"""Exception hierarchy for mediastream; each class says how a call it ends ends.

One root (:class:`MediaStreamError`); protocol errors split into *remote* (the peer
misbehaved) and *local* (we misused the API, i.e. a bug), as in h11. Like h2's errors,
each class carries what the connection needs to end a call with it: the WebSocket close
code (RFC 6455 §7.4.1, the table in docs/design.md), the :class:`Outcome` counted in
``mediastream_calls_total``, and the reason the peer may read (:attr:`public_reason`;
``None`` when the message itself is meant for the peer, because it names the peer's own
mistake). The server's one error boundary per connection reads these three and nothing
else: no isinstance ladder, no table elsewhere.
"""

from __future__ import annotations

import enum
from typing import ClassVar

__all__ = [
    "AuthenticationError",
    "BotError",
    "CapacityError",
    "InvalidMessageError",
    "ListenOnlyError",
    "LocalProtocolError",
    "MediaStreamError",
    "MessageTooBigError",
    "OutOfOrderError",
    "Outcome",
    "ProtocolError",
    "RemoteProtocolError",
    "StreamTimeoutError",
    "UnsupportedDataError",
]


class Outcome(enum.StrEnum):
    """How a call (or a connection that never became one) ended.

    The values are the ``outcome`` label of ``mediastream_calls_total``.
    """

    #: The provider's ``stop`` (the caller hung up): close 1000.
    STOPPED = "stopped"
    #: The bot returned or hung up: close 1000.
    BOT_FINISHED = "bot_finished"
    #: The socket closed without a ``stop``.
    DISCONNECTED = "disconnected"
    #: The bot raised, flooded audio or its listener failed: close 1011.
    BOT_ERROR = "bot_error"
    #: The peer broke the media or WebSocket protocol: 1002/1003/1007/1009.
    PROTOCOL_ERROR = "protocol_error"
    #: Stream token or signature refused at ``start``: 1008.
    UNAUTHORIZED = "unauthorized"
    #: The call named an agent this server does not run: 1008.
    UNKNOWN_AGENT = "unknown_agent"
    #: No ``start``, or no media, in time: 1008.
    TIMEOUT = "timeout"
    #: The peer stopped reading what we send: the connection is aborted.
    SEND_TIMEOUT = "send_timeout"
    #: A call raced past the capacity check before the upgrade: 1013.
    CAPACITY = "capacity"
    #: Server shutdown after the drain: 1001.
    SHUTDOWN = "shutdown"
    #: Our own bug: 1011, no internals in the reason.
    INTERNAL_ERROR = "internal_error"


class MediaStreamError(Exception):
    """Root of every error mediastream raises on purpose."""

    #: WebSocket close code the connection boundary uses for this error.
    close_code: ClassVar[int] = 1011
    #: How a call ended by this error is counted.
    outcome: ClassVar[Outcome] = Outcome.INTERNAL_ERROR
    #: The close reason the peer reads; ``None``: the error's own message.
    public_reason: ClassVar[str | None] = "internal error"

    @property
    def reason(self) -> str:
        """What the peer is told (never internals, unless the message is its own fault)."""
        public = self.public_reason
        return str(self) if public is None else public


class ProtocolError(MediaStreamError):
    """The media-stream protocol was violated, by the peer or by us."""


class RemoteProtocolError(ProtocolError):
    """The peer (the provider, or whoever connected) sent something invalid.

    The message names the offending field. After one of these the protocol object is in
    its failed state and rejects further input.
    """

    close_code = 1002
    outcome = Outcome.PROTOCOL_ERROR
    public_reason = None


class OutOfOrderError(RemoteProtocolError):
    """A message arrived in a state that does not allow it (media before start, ...)."""

    close_code = 1002


class UnsupportedDataError(RemoteProtocolError):
    """A binary frame where text is expected, or a codec/rate we cannot handle."""

    close_code = 1003


class InvalidMessageError(RemoteProtocolError):
    """Bad JSON, bad base64, a missing or wrongly typed field."""

    close_code = 1007


class MessageTooBigError(RemoteProtocolError):
    """A message or payload above the configured bound."""

    close_code = 1009


class LocalProtocolError(ProtocolError):
    """We used the protocol wrongly (a command in the wrong state): a bug of ours."""

    close_code = 1011


class ListenOnlyError(LocalProtocolError):
    """The bot tried to send into a listen-only stream (audio or DTMF): such a stream
    (``<Start><Stream>``, Plivo ``bidirectional="false"``) plays nothing back."""


class AuthenticationError(MediaStreamError):
    """A signature or stream token did not verify."""

    close_code = 1008
    outcome = Outcome.UNAUTHORIZED
    public_reason = "authentication failed"


class CapacityError(MediaStreamError):
    """The server is at its configured call limit."""

    close_code = 1013
    outcome = Outcome.CAPACITY
    public_reason = "server at capacity"


class StreamTimeoutError(MediaStreamError):
    """No ``start`` in time, or no media for too long (1008, policy violation)."""

    close_code = 1008
    outcome = Outcome.TIMEOUT
    public_reason = None


class BotError(MediaStreamError):
    """The bot failed; the reason given to the peer never carries internals."""

    close_code = 1011
    outcome = Outcome.BOT_ERROR
    public_reason = "bot error"
