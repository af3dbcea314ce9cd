"""A media connection's first phase: the provider's messages up to its ``start``.

On a provider's own path (``/ws/twilio`` ...) messages go to that provider's protocol;
on ``/ws`` the :class:`~mediastream.protocols.ProviderDetector` picks the protocol from
the first messages. Notices before ``start`` (Telnyx ``connected``, error reports) are
logged; a ``stop`` before ``start`` ends the connection quietly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mediastream.protocols.base import MediaStreamProtocol
from mediastream.protocols.detect import ProviderDetector, protocol_for
from mediastream.protocols.events import (
    Event,
    ProviderErrorReported,
    ProviderName,
    StreamStarted,
    StreamStopped,
)

from .log import CallLogger

__all__ = ["StartPhase", "Started"]


@dataclass(frozen=True, slots=True)
class Started:
    """The provider's ``start``, the protocol that read it, and what came with it."""

    start: StreamStarted
    protocol: MediaStreamProtocol
    early: list[Event]


class StartPhase:
    """Reads messages until the stream starts (or stops first)."""

    __slots__ = ("_log", "_receiver")

    def __init__(
        self,
        provider: ProviderName | None,
        *,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        max_message_size: int,
        log: CallLogger,
        l16_byteorder: str = "auto",
    ) -> None:
        self._log = log
        self._receiver: MediaStreamProtocol | ProviderDetector = (
            protocol_for(provider, query=query, headers=headers,
                         max_message_chars=max_message_size, l16_byteorder=l16_byteorder)
            if provider is not None
            else ProviderDetector(query=query, headers=headers,
                                  max_message_chars=max_message_size,
                                  l16_byteorder=l16_byteorder)
        )

    def receive(self, message: str | bytes) -> Started | StreamStopped | None:
        """One message: the start, a stop before it, or ``None`` (go on reading).

        Raises what the protocol raises for a bad message (the connection maps it).
        """
        receiver = self._receiver
        events = receiver.receive(message)
        for index, event in enumerate(events):
            if isinstance(event, StreamStarted):
                protocol = (receiver if isinstance(receiver, MediaStreamProtocol)
                            else receiver.protocol)
                assert protocol is not None
                return Started(event, protocol, events[index + 1 :])
            if isinstance(event, StreamStopped):
                self._log.info("stream stopped before it started")
                return event
            if isinstance(event, ProviderErrorReported):
                self._log.warning("provider reported an error: code=%s title=%s detail=%s",
                                  event.code, event.title, event.detail)
        return None
