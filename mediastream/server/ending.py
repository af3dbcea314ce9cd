"""How a call ends: close code, reason and outcome, decided once per connection.

Every way a call can end is an :class:`Ending`. Errors carry theirs (see
:mod:`mediastream.errors`): :meth:`Ending.of` reads ``close_code``, ``outcome`` and
``reason`` off a :class:`~mediastream.errors.MediaStreamError`, and anything else is our
own bug (1011, ``internal error``, no internals for the peer). The endings that are not
errors are named below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Protocol

from mediastream.errors import MediaStreamError, Outcome


class _Closed(Protocol):
    """Why the socket ended (:class:`~.host.SocketClosed`; host imports this module's
    users, so it is described here rather than imported)."""

    @property
    def received(self) -> tuple[int, str] | None: ...

    @property
    def failed(self) -> tuple[int, str] | None: ...

    @property
    def overflowed(self) -> bool: ...


class _Log(Protocol):
    """The call's logger (:class:`~.log.CallLogger`, which imports this module)."""

    def warning(self, msg: str, *args: Any) -> None: ...

    def info(self, msg: str, *args: Any) -> None: ...

__all__ = [
    "DISCONNECTED",
    "SHUTDOWN",
    "STOPPED",
    "Ending",
    "closed_ending",
]

#: Max bytes of a close reason (RFC 6455 §5.5: control frame payload <= 125 bytes).
_MAX_REASON: Final = 123


@dataclass(frozen=True, slots=True)
class Ending:
    """How one call ended."""

    #: Close code to send; ``None`` when the WebSocket is already closed or closing.
    code: int | None
    #: Close reason (what the peer reads; at most 123 bytes of UTF-8).
    reason: str
    outcome: Outcome

    def __post_init__(self) -> None:
        data = self.reason.encode("utf-8")
        if len(data) > _MAX_REASON:
            short = data[: _MAX_REASON - 3].decode("utf-8", "ignore") + "..."
            object.__setattr__(self, "reason", short)

    @classmethod
    def of(cls, exc: BaseException) -> Ending:
        """The ending an exception calls for (DESIGN: one mapping, on the classes)."""
        if isinstance(exc, MediaStreamError):
            return cls(exc.close_code, exc.reason, exc.outcome)
        return cls(1011, "internal error", Outcome.INTERNAL_ERROR)

    def socket_gone(self) -> Ending:
        """The same ending when the WebSocket is already closed: nothing to send."""
        return Ending(None, self.reason, self.outcome)


#: The provider's ``stop``.
STOPPED: Final = Ending(1000, "stream stopped", Outcome.STOPPED)
#: The socket closed without a ``stop``.
DISCONNECTED: Final = Ending(None, "connection closed", Outcome.DISCONNECTED)
#: Server shutdown after the drain.
SHUTDOWN: Final = Ending(1001, "server shutting down", Outcome.SHUTDOWN)


def closed_ending(why: _Closed, log: _Log | None) -> Ending:
    """The ending of a socket that closed under the call, logged on ``log`` (``None``:
    the call had already ended, nothing to say)."""
    if why.failed is not None:
        # websockets failed the connection for a frame that broke RFC 6455 and sent
        # its close frame (1002, 1007, 1009): the call ends without another one.
        code, reason = why.failed
        if log is not None:
            log.warning("closed with %d (protocol_error): %s", code, reason)
        return Ending(None, reason, Outcome.PROTOCOL_ERROR)
    if why.overflowed:
        if log is not None:
            log.warning("peer keeps sending but reads none of our replies (write "
                        "buffer over its bound); aborted")
        return Ending(None, "peer not reading", Outcome.SEND_TIMEOUT)
    if log is not None:
        received = why.received
        log.info("connection closed by peer (code %s)",
                 received[0] if received is not None else "none")
    return DISCONNECTED
