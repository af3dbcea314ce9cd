"""How a call ends: close code, reason and outcome, decided once per connection.

Every way a call can end is an :class:`Ending`. Errors carry theirs (see
:mod:`mediastream.errors`): :meth:`Ending.of` reads ``close_code``, ``outcome`` and
``reason`` off a :class:`~mediastream.errors.MediaStreamError`, and anything else is our
own bug (1011, ``internal error``, no internals for the peer). The endings that are not
errors are named below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mediastream.errors import MediaStreamError, Outcome

__all__ = [
    "DISCONNECTED",
    "SHUTDOWN",
    "STOPPED",
    "Ending",
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
