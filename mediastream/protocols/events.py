"""Provider-neutral events (what the provider told us) and commands (what we tell it).

Events are named in the past tense, commands in the imperative; all are frozen, slotted
dataclasses so they are cheap, hashable where their fields are, and safe to share between
tasks. Nothing here does I/O or imports numpy: payloads stay *encoded* (G.711 or L16
bytes) and carry their :class:`MediaFormat`; decoding is the call session's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

__all__ = [
    "LISTEN_ONLY",
    "AudioCleared",
    "AudioReceived",
    "CallInfo",
    "Capabilities",
    "ClearAudio",
    "Command",
    "DtmfReceived",
    "Encoding",
    "Event",
    "MarkPlayed",
    "MediaFormat",
    "ProviderErrorReported",
    "ProviderName",
    "SendAudio",
    "SendDtmf",
    "SendMark",
    "StreamConnected",
    "StreamStarted",
    "StreamStopped",
    "UnknownEventReceived",
]

ProviderName: TypeAlias = Literal["twilio", "telnyx", "plivo"]
#: Wire encodings mediastream decodes: G.711 μ-law, G.711 A-law, 16-bit linear PCM.
Encoding: TypeAlias = Literal["pcmu", "pcma", "l16"]

_EMPTY: Mapping[str, str] = MappingProxyType({})


def _empty() -> Mapping[str, str]:
    # dataclasses refuses an unhashable default (mappingproxy); share the one empty view.
    return _EMPTY


@dataclass(frozen=True, slots=True)
class MediaFormat:
    """The audio format of one direction of a stream.

    ``byteorder`` only matters for ``l16``: Plivo sends little-endian, Telnyx network
    order (big-endian); see protocols.md §5.4.
    """

    encoding: Encoding
    sample_rate: int
    channels: int = 1
    byteorder: Literal["little", "big"] = "little"

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "l16" else 1

    def frame_bytes(self, ms: int = 20) -> int:
        """Bytes in ``ms`` milliseconds of mono audio in this format."""
        return self.sample_rate * ms // 1000 * self.bytes_per_sample


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider's media socket can carry from the bot (protocols.md §1.3, §2.3,
    §3.3). A bot asks the call (``call.capabilities``), never the provider's name."""

    #: Play DTMF into the call over the socket (Plivo ``sendDTMF``); elsewhere only the
    #: provider's REST API can, or the bot plays the tones as audio.
    send_dtmf: bool = False
    #: Named playout marks the provider echoes once the audio before them has played
    #: (Twilio/Telnyx ``mark``, Plivo ``checkpoint``); the playout ledger relies on them.
    marks: bool = True
    #: Drop what the provider has queued for playout (``clear``, Plivo ``clearAudio``).
    clear: bool = True
    #: The provider acknowledges a clear with a message of its own (Plivo
    #: ``clearedAudio``); elsewhere pending marks come back instead.
    clear_acknowledged: bool = False
    #: The stream plays what the bot sends. False on a listen-only stream
    #: (``<Start><Stream>``, Plivo ``bidirectional="false"``): nothing may be sent.
    send_audio: bool = True


#: What a listen-only stream carries from the bot: nothing.
LISTEN_ONLY = Capabilities(send_dtmf=False, marks=False, clear=False, send_audio=False)


#: μ-law at 8 kHz: Twilio's only format, and the default elsewhere.
PCMU_8K = MediaFormat("pcmu", 8000)


@dataclass(frozen=True, slots=True)
class CallInfo:
    """One description of a call, whichever provider carried it.

    ``custom_parameters`` holds the caller-supplied key/values however they arrived
    (Twilio ``<Parameter>``, Telnyx ``custom_parameters``, URL query parameters, the
    base64-JSON ``body`` parameter Pipecat Cloud uses, Plivo ``extra_headers``).
    ``agent``/``organization`` come from the reserved ``_pipecatCloudServiceHost`` /
    ``serviceHost`` parameter (``agent.org``) or an explicit ``agent`` parameter.
    ``inbound_format`` is what the provider sends us; ``outbound_format`` what we must
    send back (the same unless the provider was told otherwise).
    """

    provider: ProviderName
    call_id: str
    stream_id: str
    inbound_format: MediaFormat
    outbound_format: MediaFormat
    account_id: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    custom_parameters: Mapping[str, str] = field(default_factory=_empty)
    agent: str | None = None
    organization: str | None = None
    tracks: tuple[str, ...] = ("inbound",)
    #: Provider-specific extras worth keeping (Telnyx call_session_id, client_state, ...).
    extra: Mapping[str, str] = field(default_factory=_empty)


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class StreamConnected:
    """The provider's ``connected`` message (Twilio, Telnyx; Plivo has none)."""

    protocol: str | None = None
    version: str | None = None
    #: Telnyx ``x-telnyx-streaming-auth-token`` when it travels inside the message.
    auth_token: str | None = None


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """The ``start`` message: the call is described and media may follow."""

    call: CallInfo
    sequence: int | None = None


@dataclass(frozen=True, slots=True)
class AudioReceived:
    """One media message from the provider, still encoded in ``format``.

    ``timestamp_ms`` has one meaning whichever provider sent it: milliseconds since the
    stream's time origin. Twilio and Telnyx send exactly that (protocols.md §1.2,
    §2.2); Plivo sends Unix epoch milliseconds (§3.2), so for Plivo the origin is the
    timestamp of the first media message of the stream, and a frame that arrives after
    a later one may read negative. ``timestamp_raw`` is the number as the provider sent
    it, for logs and for correlating with the provider's own records.
    """

    payload: bytes
    format: MediaFormat
    track: str = "inbound"
    sequence: int | None = None
    chunk: int | None = None
    timestamp_ms: int | None = None
    timestamp_raw: int | None = None


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """A DTMF digit the caller pressed: ``0-9``, ``*``, ``#``, ``A-D``."""

    digit: str
    sequence: int | None = None
    #: When the key was pressed, as the provider wrote it (Telnyx ``occurred_at``,
    #: ISO 8601), if it did. Telnyx may deliver digits out of order; its protocol
    #: class holds them briefly and delivers them in this order.
    occurred_at: str | None = None


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """A mark (Twilio, Telnyx) or checkpoint (Plivo ``playedStream``) came back.

    On Twilio and Telnyx a mark also comes back at once when a ``clear`` discards it,
    so an echo alone does not prove the audio was heard; the session tracks that.
    """

    name: str
    sequence: int | None = None


@dataclass(frozen=True, slots=True)
class AudioCleared:
    """Plivo's ``clearedAudio``: the provider flushed its playback buffer."""

    sequence: int | None = None


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """The provider ended the stream (``stop``).

    ``details`` keeps the text fields of the ``stop`` object as sent (Twilio
    ``accountSid``/``callSid``, Telnyx ``user_id``/``call_control_id``, Plivo ``callId``),
    empty ones left out: a record of who ended what, for logs and recordings.
    """

    reason: str | None = None
    sequence: int | None = None
    details: Mapping[str, str] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class ProviderErrorReported:
    """The provider reported an error on the socket (Telnyx ``error``, Plivo ``playFailed``)."""

    code: str | None
    title: str | None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class UnknownEventReceived:
    """An event type we do not know. Providers add events; this is not an error."""

    name: str
    message: Mapping[str, Any] = field(default_factory=dict)


Event: TypeAlias = (
    StreamConnected
    | StreamStarted
    | AudioReceived
    | DtmfReceived
    | MarkPlayed
    | AudioCleared
    | StreamStopped
    | ProviderErrorReported
    | UnknownEventReceived
)


# -------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class SendAudio:
    """Play ``payload`` (already encoded in the call's ``outbound_format``) to the caller."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class SendMark:
    """Ask the provider to echo ``name`` once everything sent before it has played."""

    name: str


@dataclass(frozen=True, slots=True)
class ClearAudio:
    """Drop everything queued at the provider that has not played yet (barge-in)."""


@dataclass(frozen=True, slots=True)
class SendDtmf:
    """Play DTMF digits into the call (only Plivo has this on the socket)."""

    digits: str


Command: TypeAlias = SendAudio | SendMark | ClearAudio | SendDtmf
