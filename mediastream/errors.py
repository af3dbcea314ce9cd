"""Exception hierarchy for mediastream, each class carrying its WebSocket close code.

One root (:class:`MediaStreamError`); protocol errors split into *remote* (the peer
misbehaved) and *local* (we misused the API, i.e. a bug), as in h11. The server has a
single boundary per connection that maps an exception to ``exc.close_code`` and logs it
with the call id. Close codes follow RFC 6455 §7.4.1 and the table in DESIGN.md §3.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BotError",
    "CapacityError",
    "InvalidMessageError",
    "LocalProtocolError",
    "MediaStreamError",
    "MessageTooBigError",
    "OutOfOrderError",
    "ProtocolError",
    "RemoteProtocolError",
    "UnsupportedDataError",
]


class MediaStreamError(Exception):
    """Root of every error mediastream raises on purpose."""

    #: WebSocket close code the connection boundary uses for this error.
    close_code: int = 1011


class ProtocolError(MediaStreamError):
    """The media-stream protocol was violated, by the peer or by us."""


class RemoteProtocolError(ProtocolError):
    """The peer (the provider, or whoever connected) sent something invalid.

    The message names the offending field. After one of these the protocol object is in
    its failed state and rejects further input.
    """

    close_code = 1002


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


class AuthenticationError(MediaStreamError):
    """A signature or stream token did not verify."""

    close_code = 1008


class CapacityError(MediaStreamError):
    """The server is at its configured call limit."""

    close_code = 1013


class BotError(MediaStreamError):
    """The bot failed; the reason given to the peer never carries internals."""

    close_code = 1011
