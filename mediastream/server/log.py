"""Call-scoped logging: every record of a call names it.

The adapter prefixes the message with ``[call <id>]`` and puts ``call_id`` (and the
provider) in the record's ``extra``, so both plain-text logs and structured handlers
(``%(call_id)s`` in a format string, JSON formatters) see it. Until the provider's
``start`` names the call, the id is the connection's own short id (``conn-<hex>``).
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mediastream.session.stats import SessionStats

    from .ending import Ending

__all__ = ["CallLogger", "log_call_end"]


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter carrying a (changeable) call id."""

    def __init__(self, logger: logging.Logger, call_id: str) -> None:
        super().__init__(logger, {"call_id": call_id, "provider": "-"})
        self._prefix = _prefix(call_id)

    @property
    def call_id(self) -> str:
        """The id every record carries."""
        return str(self._extra()["call_id"])

    def bind(self, call_id: str, provider: str) -> None:
        """Switch to the provider's call id once ``start`` arrived."""
        extra = self._extra()
        extra["call_id"] = call_id
        extra["provider"] = provider
        self._prefix = _prefix(call_id)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = kwargs.get("extra")
        kwargs["extra"] = dict(self._extra()) if extra is None else {**self._extra(), **extra}
        return self._prefix + str(msg), kwargs

    def _extra(self) -> dict[str, Any]:
        assert isinstance(self.extra, dict)
        return self.extra


def _prefix(call_id: str) -> str:
    # The prefix becomes part of a %-format string: escape the provider's '%'.
    return "[call " + call_id[:80].replace("%", "%%") + "] "


def log_call_end(
    log: CallLogger, ending: Ending, duration: float, stats: SessionStats | None
) -> None:
    """The one INFO line that says how a call (or a connection that never became one)
    ended, with its frame and mark counters."""
    shown = ending.code if ending.code is not None else "-"
    if stats is None:
        log.info("connection ended before the call started: %s (close %s %r) after %.1fs",
                 ending.outcome, shown, ending.reason, duration)
        return
    log.info(
        "call ended: %s (close %s %r) after %.1fs; frames in %d out %d filled %d late %d "
        "reordered %d; marks %d/%d; clears %d", ending.outcome, shown, ending.reason, duration,
        stats.frames_in, stats.frames_out, stats.frames_filled, stats.frames_late_dropped,
        stats.frames_reordered, stats.marks_played, stats.marks_sent, stats.clears)
