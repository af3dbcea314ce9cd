"""Sans-I/O provider protocols: messages in, events out; commands in, messages out.

One class per provider (:class:`TwilioProtocol`, :class:`TelnyxProtocol`,
:class:`PlivoProtocol`) on a common base (:class:`MediaStreamProtocol`):
``receive(message) -> list[Event]``, ``send(command) -> list[str]``, ``state``, ``call``.
:func:`protocol_for` builds one by provider name; :class:`ProviderDetector` /
:func:`detect` pick one from the first messages on a shared path.
"""

from __future__ import annotations

from ._state import State
from .base import DEFAULT_MAX_MESSAGE_CHARS, DEFAULT_MAX_PAYLOAD_MS, MediaStreamProtocol
from .detect import PROTOCOLS, ProviderDetector, detect, protocol_for
from .events import (
    PCMU_8K,
    AudioCleared,
    AudioReceived,
    CallInfo,
    Capabilities,
    ClearAudio,
    Command,
    DtmfReceived,
    Event,
    MarkPlayed,
    MediaFormat,
    ProviderErrorReported,
    SendAudio,
    SendDtmf,
    SendMark,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    UnknownEventReceived,
)
from .plivo import PlivoProtocol
from .telnyx import TelnyxProtocol
from .twilio import TwilioProtocol

__all__ = [
    "DEFAULT_MAX_MESSAGE_CHARS",
    "DEFAULT_MAX_PAYLOAD_MS",
    "PCMU_8K",
    "PROTOCOLS",
    "AudioCleared",
    "AudioReceived",
    "CallInfo",
    "Capabilities",
    "ClearAudio",
    "Command",
    "DtmfReceived",
    "Event",
    "MarkPlayed",
    "MediaFormat",
    "MediaStreamProtocol",
    "PlivoProtocol",
    "ProviderDetector",
    "ProviderErrorReported",
    "SendAudio",
    "SendDtmf",
    "SendMark",
    "State",
    "StreamConnected",
    "StreamStarted",
    "StreamStopped",
    "TelnyxProtocol",
    "TwilioProtocol",
    "UnknownEventReceived",
    "detect",
    "protocol_for",
]
