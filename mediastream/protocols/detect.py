"""Which provider is on the other end of a shared ``/ws`` path (protocols.md §4).

Twilio and Telnyx open with ``connected`` and identify themselves in the ``start`` that
follows; Plivo opens with ``start``. The ``start`` decides:

* Twilio: ``start.streamSid`` and ``start.callSid`` (camelCase, ``Sid``);
* Telnyx: ``start.call_control_id`` (snake_case; ``stream_id`` is top level);
* Plivo: ``start.streamId`` and ``start.callId``.

These are the keys Pipecat's ``parse_telephony_websocket`` tests, so a stream Pipecat
accepts is detected the same way. Detection reads at most two messages; the chosen
protocol then receives them again, so no event is lost. One path per provider
(:func:`protocol_for`) is preferred; detection is the fallback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidMessageError, RemoteProtocolError, UnsupportedDataError
from ._json import parse_json
from .base import DEFAULT_MAX_MESSAGE_CHARS, MediaStreamProtocol
from .events import Event, MediaFormat
from .plivo import PlivoProtocol
from .telnyx import TelnyxProtocol
from .twilio import TwilioProtocol

__all__ = ["PROTOCOLS", "ProviderDetector", "detect", "protocol_for"]

#: Provider name -> protocol class.
PROTOCOLS: Mapping[str, type[MediaStreamProtocol]] = {
    "twilio": TwilioProtocol,
    "telnyx": TelnyxProtocol,
    "plivo": PlivoProtocol,
}

def protocol_for(
    provider: str,
    *,
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    outbound_format: MediaFormat | None = None,
    **options: Any,
) -> MediaStreamProtocol:
    """A new protocol object for ``provider`` (``"twilio"``, ``"telnyx"``, ``"plivo"``).

    Keyword arguments are those of :class:`MediaStreamProtocol`. An unknown provider
    name is a configuration error: :class:`ValueError`.
    """
    try:
        cls = PROTOCOLS[provider.lower()]
    except KeyError:
        raise ValueError(
            f"unknown provider {provider!r} (known: {', '.join(PROTOCOLS)})"
        ) from None
    return cls(query=query, headers=headers, outbound_format=outbound_format, **options)


def _classify(data: dict[str, Any]) -> str | None:
    """Provider name from a parsed ``start`` message, or ``None``."""
    start = data.get("start")
    if type(start) is not dict:
        return None
    if "streamSid" in start and "callSid" in start:
        return "twilio"
    if "call_control_id" in start:
        return "telnyx"
    if "streamId" in start and "callId" in start:
        return "plivo"
    return None


class ProviderDetector:
    """Reads the first message(s) of a stream until the provider is known.

    Use it like a protocol until :attr:`protocol` is set::

        detector = ProviderDetector(query=query, headers=headers)
        for message in websocket:
            events = detector.receive(message)     # [] while still undecided
            ...                                     # then detector.protocol is set

    :meth:`receive` returns ``[]`` while undecided; on the deciding message it returns
    the events of every message read so far (replayed through the chosen protocol);
    afterwards it forwards to :attr:`protocol` (calling the protocol directly saves a
    call). Garbage raises a :class:`~mediastream.errors.RemoteProtocolError`: bad JSON
    or binary frames as the protocols would, an unrecognisable dialect as
    :class:`~mediastream.errors.UnsupportedDataError` (1003). After an error every call
    raises again.

    Keyword arguments are passed to the protocol's constructor (``query``, ``headers``,
    limits), except that the outbound format is given per provider:
    ``outbound_formats={"telnyx": MediaFormat("l16", 16000)}``; one that provider cannot
    play is a :class:`ValueError` here, at construction.
    """

    def __init__(
        self,
        *,
        outbound_formats: Mapping[str, MediaFormat] | None = None,
        **options: Any,
    ) -> None:
        if "outbound_format" in options:
            raise TypeError("give outbound_formats={provider: MediaFormat} when detecting")
        self._options = options
        # Checked now, so that a bad configuration fails at start-up, not on a call.
        self._outbound = {
            name.lower(): protocol_for(name, outbound_format=fmt).outbound_override
            for name, fmt in (outbound_formats or {}).items()
        }
        self._pending: list[str] = []
        self._protocol: MediaStreamProtocol | None = None
        self._failure: RemoteProtocolError | None = None
        self._max_chars: int = options.get("max_message_chars", DEFAULT_MAX_MESSAGE_CHARS)

    @property
    def protocol(self) -> MediaStreamProtocol | None:
        """The protocol chosen, once known."""
        return self._protocol

    @property
    def provider(self) -> str | None:
        """The provider name, once known."""
        return None if self._protocol is None else self._protocol.provider

    def receive(self, message: str | bytes) -> list[Event]:
        """Feed one message; see the class docstring for what comes back."""
        if self._protocol is not None:
            return self._protocol.receive(message)
        if self._failure is not None:
            raise type(self._failure)(f"provider detection failed earlier: {self._failure}")
        try:
            name = self._inspect(message)
        except RemoteProtocolError as exc:
            self._failure = exc
            raise
        except Exception as exc:
            error = InvalidMessageError(f"message: unprocessable ({type(exc).__name__})")
            self._failure = error
            raise error from exc
        assert isinstance(message, str)  # _inspect rejected anything else
        self._pending.append(message)
        if name is None:
            return []
        self._protocol = protocol_for(
            name, outbound_format=self._outbound.get(name), **self._options
        )
        events: list[Event] = []
        for pending in self._pending:
            events.extend(self._protocol.receive(pending))
        self._pending.clear()
        return events

    def _inspect(self, message: str | bytes) -> str | None:
        if type(message) is not str:
            raise UnsupportedDataError("binary frame: provider media streams are JSON text frames")
        if len(message) > self._max_chars:
            # The protocol would say MessageTooBig; before detection it is just unknown.
            raise UnsupportedDataError("message: too large for a first media-stream message")
        data = parse_json(message)
        if type(data) is not dict:
            raise InvalidMessageError("message: expected a JSON object")
        name = _classify(data)
        if name is not None:
            return name
        if data.get("event") == "connected" and not self._pending:
            return None  # Twilio or Telnyx: the start that follows will tell
        raise UnsupportedDataError(
            "start: not a Twilio (streamSid/callSid), Telnyx (call_control_id) "
            "or Plivo (streamId/callId) stream"
        )


def detect(
    messages: Sequence[str | bytes], **options: Any
) -> tuple[MediaStreamProtocol, list[Event]] | None:
    """Detect the provider from the first message(s) already read.

    Returns the protocol (which has already received ``messages``) and their events, or
    ``None`` when more messages are needed (only a ``connected`` so far). Raises like
    :meth:`ProviderDetector.receive`.
    """
    detector = ProviderDetector(**options)
    events: list[Event] = []
    for message in messages:
        events.extend(detector.receive(message))
    if detector.protocol is None:
        return None
    return detector.protocol, events
