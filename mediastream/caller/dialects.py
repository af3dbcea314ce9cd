"""The provider's side of each media-stream dialect, as the simulated caller speaks it.

One class per provider builds the messages the provider sends to a media server
(``connected``, ``start``, ``media``, ``dtmf``, mark/checkpoint acknowledgements, ``stop``)
and parses what a server sends back. Shapes and value types follow protocols.md: Twilio
§1.2-1.3 (every number a JSON string), Telnyx §2.2-2.3 (snake_case, ``stream_id`` at top
level), Plivo §3.2-3.3 (``sequenceNumber``/``chunk`` are JSON numbers, no ``connected``).

Rules of this file: no I/O and no clock. Media messages are filled from a byte template
(only the sequence number, chunk, timestamp and payload vary) because a load run builds
tens of thousands of them a second. Parsing never raises: whatever a server sends becomes
a :class:`ServerMessage` plus a list of protocol violations, phrased the way the real
provider would report them (Twilio error codes where one applies).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from mediastream.protocols.events import MediaFormat, ProviderName

__all__ = [
    "PROVIDERS",
    "CallerDialect",
    "PlivoCaller",
    "ServerClear",
    "ServerDtmf",
    "ServerMark",
    "ServerMedia",
    "ServerMessage",
    "ServerOther",
    "StreamIdentity",
    "TelnyxCaller",
    "TwilioCaller",
    "dialect_for",
    "new_identity",
]

PROVIDERS: tuple[ProviderName, ...] = ("twilio", "telnyx", "plivo")


@dataclass(frozen=True, slots=True)
class StreamIdentity:
    """The ids a provider invents for one call and its stream."""

    call_id: str
    stream_id: str
    account_id: str
    from_number: str = "+15551230001"
    to_number: str = "+15559870002"
    #: Telnyx ``call_session_id``; unused elsewhere.
    session_id: str = ""


def new_identity(
    provider: ProviderName,
    *,
    call_id: str | None = None,
    from_number: str = "+15551230001",
    to_number: str = "+15559870002",
) -> StreamIdentity:
    """Fresh ids in the provider's formats (protocols.md §1.1, §2.1, §3.1)."""
    if provider == "twilio":
        return StreamIdentity(
            call_id=call_id or "CA" + secrets.token_hex(16),
            stream_id="MZ" + secrets.token_hex(16),
            account_id="AC" + secrets.token_hex(16),
            from_number=from_number,
            to_number=to_number,
        )
    if provider == "telnyx":
        return StreamIdentity(
            call_id=call_id or "v3:" + secrets.token_urlsafe(24),
            stream_id=str(uuid.uuid4()).upper(),
            account_id=str(uuid.uuid4()),
            from_number=from_number,
            to_number=to_number,
            session_id=str(uuid.uuid4()),
        )
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return StreamIdentity(
        call_id=call_id or str(uuid.uuid4()),
        stream_id=str(uuid.uuid4()),
        account_id="MA" + "".join(secrets.choice(alphabet) for _ in range(18)),
        # Plivo sends E.164 digits without the "+" (protocols.md §3.5).
        from_number=from_number.lstrip("+"),
        to_number=to_number.lstrip("+"),
    )


# ----------------------------------------------------------------- server -> provider


@dataclass(frozen=True, slots=True)
class ServerMedia:
    """Audio to play to the caller, still encoded in ``format``."""

    payload: bytes
    format: MediaFormat


@dataclass(frozen=True, slots=True)
class ServerMark:
    """A mark (Twilio/Telnyx) or checkpoint (Plivo) to acknowledge once played."""

    name: str


@dataclass(frozen=True, slots=True)
class ServerClear:
    """``clear`` / ``clearAudio``: drop queued audio."""


@dataclass(frozen=True, slots=True)
class ServerDtmf:
    """Plivo ``sendDTMF``: digits the server asked to play into the call."""

    digits: str


@dataclass(frozen=True, slots=True)
class ServerOther:
    """Anything else: nothing to do (the violation list says whether it was wrong)."""

    event: str


ServerMessage = ServerMedia | ServerMark | ServerClear | ServerDtmf | ServerOther


@dataclass(frozen=True, slots=True)
class Parsed:
    """One parsed server message and what the real provider would object to in it."""

    message: ServerMessage
    violations: tuple[str, ...] = ()


def _b64(payload: object) -> bytes | None:
    if not isinstance(payload, str) or not payload:
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


# ----------------------------------------------------------------------- dialects


@dataclass(slots=True)
class _Counters:
    sequence: int = 0
    chunk: int = 0
    #: Chunks of the outbound track (each track numbers its own, protocols.md §1.2).
    other_chunk: int = 0


class CallerDialect(ABC):
    """The provider side of one stream: builds provider messages, parses server ones.

    ``inbound`` is the format the provider sends (the caller's voice), ``outbound`` the
    format it expects back. ``parameters`` are the custom parameters the answer document
    (or the user) attached to the stream. ``tracks`` is ``("inbound",)`` or, for a
    both-tracks fork, ``("inbound", "outbound")``: then :meth:`media` also sends the
    outbound track (what the caller hears), numbered on its own.
    """

    provider: ClassVar[ProviderName]
    #: Twilio and Telnyx echo every pending mark when ``clear`` drops them (§5.2).
    clear_echoes_marks: ClassVar[bool] = True

    def __init__(
        self,
        identity: StreamIdentity,
        inbound: MediaFormat,
        outbound: MediaFormat,
        parameters: Mapping[str, str] | None = None,
        tracks: tuple[str, ...] = ("inbound",),
    ) -> None:
        self.identity = identity
        self.inbound = inbound
        self.outbound = outbound
        self.parameters: dict[str, str] = dict(parameters or {})
        self.tracks = tracks
        self._n = _Counters()
        self._template = self._media_template()
        self._other_template = self._template.replace(
            b'"track":"inbound"', b'"track":"outbound"'
        )

    # -- provider -> server

    @abstractmethod
    def opening(self, epoch_ms: int) -> list[bytes]:
        """The messages sent right after the upgrade (``connected``, ``start``)."""

    @abstractmethod
    def _media_template(self) -> bytes:
        """A ``%``-template with slots (sequence, chunk, timestamp, payload)."""

    def media(self, payload_b64: bytes, timestamp: int, track: str = "inbound") -> bytes:
        """One ``media`` message carrying ``payload_b64`` (already base64, ASCII) on
        ``track`` (``inbound``, or ``outbound`` on a both-tracks stream)."""
        n = self._n
        n.sequence += 1
        if track == "inbound":
            n.chunk += 1
            return self._template % (n.sequence, n.chunk, timestamp, payload_b64)
        n.other_chunk += 1
        return self._other_template % (n.sequence, n.other_chunk, timestamp, payload_b64)

    @abstractmethod
    def dtmf(self, digit: str) -> bytes:
        """The caller pressed ``digit``."""

    @abstractmethod
    def mark_played(self, name: str) -> bytes:
        """Acknowledge a mark/checkpoint whose audio has played (or was cleared)."""

    def cleared(self) -> bytes | None:
        """Acknowledge a clear, where the protocol has an acknowledgement (Plivo)."""
        return None

    @abstractmethod
    def stop(self) -> bytes | None:
        """The message sent when the caller hangs up (``None``: just close)."""

    def _next_sequence(self) -> int:
        self._n.sequence += 1
        return self._n.sequence

    @staticmethod
    def _dump(obj: Mapping[str, Any]) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    # -- server -> provider

    def parse(self, text: str) -> Parsed:
        """Parse one text message from the server. Never raises."""
        try:
            obj = json.loads(text)
        except ValueError:
            return Parsed(ServerOther("?"), (self._code("malformed") + "message is not JSON",))
        if not isinstance(obj, dict):
            return Parsed(ServerOther("?"), (self._code("malformed") + "message is not an object",))
        event = obj.get("event")
        if not isinstance(event, str):
            return Parsed(ServerOther("?"), (self._code("invalid") + "no 'event'",))
        try:
            return self._parse(event, obj)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return Parsed(ServerOther(event), (self._code("invalid") + f"{event}: {exc!r}",))

    @abstractmethod
    def _parse(self, event: str, obj: dict[str, Any]) -> Parsed:
        """Dispatch one decoded message."""

    def _code(self, kind: str) -> str:
        return ""

    def _media_violations(self, payload: bytes, fmt: MediaFormat) -> list[str]:
        issues: list[str] = []
        if fmt.encoding == "l16" and len(payload) % 2:
            issues.append(f"odd L16 payload length {len(payload)}")
        return issues


class _MarkDialect(CallerDialect):
    """Twilio and Telnyx: the server sends ``media``, ``mark`` and ``clear`` (§1.3, §2.3).

    The two differ in key spelling, in whether the server must name the stream, in the
    error code prefix and in what they check of a ``media`` payload.
    """

    _SEQUENCE: ClassVar[str]
    _STREAM: ClassVar[str]
    #: Whether a server message without the stream id is an error.
    _STREAM_REQUIRED: ClassVar[bool]
    _ALLOWED = frozenset({"media", "mark", "clear"})

    def mark_played(self, name: str) -> bytes:
        return self._dump({
            "event": "mark",
            self._SEQUENCE: str(self._next_sequence()),
            self._STREAM: self.identity.stream_id,
            "mark": {"name": name},
        })

    def _parse(self, event: str, obj: dict[str, Any]) -> Parsed:
        code = self._code("invalid")
        if event not in self._ALLOWED:
            return Parsed(ServerOther(event), (f"{code}unknown event {event!r}",))
        issues: list[str] = []
        sid = obj.get(self._STREAM)
        if sid != self.identity.stream_id and (sid is not None or self._STREAM_REQUIRED):
            issues.append(f"{code}{event}: {self._STREAM} {sid!r} is not this stream's")
        if event == "media":
            media = obj.get("media")
            payload = _b64(media.get("payload")) if isinstance(media, dict) else None
            if not isinstance(media, dict) or payload is None:
                return Parsed(ServerOther(event), (*issues, f"{code}media: bad or empty payload"))
            issues.extend(self._payload_violations(media, payload))
            return Parsed(ServerMedia(payload, self.outbound), tuple(issues))
        if event == "mark":
            mark = obj.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                return Parsed(ServerOther(event), (*issues, f"{code}mark without mark.name"))
            return Parsed(ServerMark(name), tuple(issues))
        return Parsed(ServerClear(), tuple(issues))

    @abstractmethod
    def _payload_violations(self, media: dict[str, Any], payload: bytes) -> list[str]:
        """What the provider objects to in a ``media`` message with a valid payload."""


class TwilioCaller(_MarkDialect):
    """Twilio Media Streams (protocols.md §1): camelCase, every number a string."""

    provider = "twilio"
    _SEQUENCE = "sequenceNumber"
    _STREAM = "streamSid"
    _STREAM_REQUIRED = True

    def opening(self, epoch_ms: int) -> list[bytes]:
        ids = self.identity
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        start = {
            "event": "start",
            "sequenceNumber": str(self._next_sequence()),
            "start": {
                "accountSid": ids.account_id,
                "streamSid": ids.stream_id,
                "callSid": ids.call_id,
                "tracks": list(self.tracks),
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": self.parameters,
            },
            "streamSid": ids.stream_id,
        }
        return [self._dump(connected), self._dump(start)]

    def _media_template(self) -> bytes:
        sid = self.identity.stream_id.encode()
        return (
            b'{"event":"media","sequenceNumber":"%d","media":{"track":"inbound",'
            b'"chunk":"%d","timestamp":"%d","payload":"%s"},"streamSid":"' + sid + b'"}'
        )

    def dtmf(self, digit: str) -> bytes:
        return self._dump({
            "event": "dtmf",
            "streamSid": self.identity.stream_id,
            "sequenceNumber": str(self._next_sequence()),
            # §1.2: the DTMF track is "inbound_track", unlike media's "inbound".
            "dtmf": {"track": "inbound_track", "digit": digit},
        })

    def stop(self) -> bytes:
        ids = self.identity
        return self._dump({
            "event": "stop",
            "sequenceNumber": str(self._next_sequence()),
            "streamSid": ids.stream_id,
            "stop": {"accountSid": ids.account_id, "callSid": ids.call_id},
        })

    def _code(self, kind: str) -> str:
        # §1.8: 31950 malformed (not JSON / binary), 31951 invalid (unknown event, field).
        return "31950 " if kind == "malformed" else "31951 "

    def _payload_violations(self, media: dict[str, Any], payload: bytes) -> list[str]:
        extra = set(media.keys()) - {"payload"}
        return [f"31951 media: unexpected fields {sorted(extra)}"] if extra else []


class TelnyxCaller(_MarkDialect):
    """Telnyx media streaming (protocols.md §2): snake_case, numbers as strings."""

    provider = "telnyx"
    _SEQUENCE = "sequence_number"
    _STREAM = "stream_id"
    # stream_id is optional on what the server sends (§2.3), but must be ours if set.
    _STREAM_REQUIRED = False
    _ENCODING: ClassVar[dict[str, str]] = {"pcmu": "PCMU", "pcma": "PCMA", "l16": "L16"}

    def opening(self, epoch_ms: int) -> list[bytes]:
        ids = self.identity
        connected = {"event": "connected", "version": "1.0.0"}
        start = {
            "event": "start",
            "sequence_number": str(self._next_sequence()),
            "stream_id": ids.stream_id,
            "start": {
                "user_id": ids.account_id,
                "call_control_id": ids.call_id,
                "call_session_id": ids.session_id,
                "from": ids.from_number,
                "to": ids.to_number,
                "custom_parameters": self.parameters,
                "media_format": {
                    "encoding": self._ENCODING[self.inbound.encoding],
                    "sample_rate": self.inbound.sample_rate,
                    "channels": 1,
                },
            },
        }
        return [self._dump(connected), self._dump(start)]

    def _media_template(self) -> bytes:
        sid = self.identity.stream_id.encode()
        return (
            b'{"event":"media","sequence_number":"%d","stream_id":"' + sid + b'",'
            b'"media":{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
        )

    def dtmf(self, digit: str) -> bytes:
        return self._dump({
            "event": "dtmf",
            "stream_id": self.identity.stream_id,
            "sequence_number": str(self._next_sequence()),
            "dtmf": {"digit": digit},
        })

    def stop(self) -> bytes:
        ids = self.identity
        return self._dump({
            "event": "stop",
            "sequence_number": str(self._next_sequence()),
            "stream_id": ids.stream_id,
            "stop": {"user_id": ids.account_id, "call_control_id": ids.call_id},
        })

    def _payload_violations(self, media: dict[str, Any], payload: bytes) -> list[str]:
        issues: list[str] = []
        # §2.3 / §5.1: each RTP-mode media message must carry 20 ms .. 30 s.
        ms = len(payload) * 1000 // (self.outbound.sample_rate * self.outbound.bytes_per_sample)
        if ms < 20:
            issues.append(f"media: {ms} ms payload is shorter than Telnyx's 20 ms minimum")
        issues.extend(self._media_violations(payload, self.outbound))
        return issues


class PlivoCaller(CallerDialect):
    """Plivo audio streaming (protocols.md §3): no ``connected``, numeric counters."""

    provider = "plivo"
    clear_echoes_marks = False
    _ENCODING: ClassVar[dict[str, str]] = {"pcmu": "audio/x-mulaw", "l16": "audio/x-l16"}

    def __init__(
        self,
        identity: StreamIdentity,
        inbound: MediaFormat,
        outbound: MediaFormat,
        parameters: Mapping[str, str] | None = None,
        tracks: tuple[str, ...] = ("inbound",),
    ) -> None:
        if inbound.encoding not in self._ENCODING:
            raise ValueError(f"Plivo streams μ-law or L16, not {inbound.encoding}")
        self._epoch_ms = 0
        super().__init__(identity, inbound, outbound, parameters, tracks)

    def extra_headers(self) -> str:
        """``extraHeaders`` as Plivo forwards them: ``k=v`` pairs joined by ``;`` (§3.2)."""
        return ";".join(f"{k}={v}" for k, v in self.parameters.items())

    def opening(self, epoch_ms: int) -> list[bytes]:
        ids = self.identity
        self._epoch_ms = epoch_ms
        start = {
            "event": "start",
            "sequenceNumber": self._next_sequence(),
            "start": {
                "callId": ids.call_id,
                "streamId": ids.stream_id,
                "accountId": ids.account_id,
                "tracks": list(self.tracks),
                "mediaFormat": {
                    "encoding": self._ENCODING[self.inbound.encoding],
                    "sampleRate": self.inbound.sample_rate,
                },
            },
            "extra_headers": self.extra_headers(),
        }
        return [self._dump(start)]

    def _media_template(self) -> bytes:
        sid = self.identity.stream_id.encode()
        headers = json.dumps(self.extra_headers()).encode().replace(b"%", b"%%")
        return (
            b'{"event":"media","sequenceNumber":%d,"streamId":"' + sid + b'",'
            b'"media":{"track":"inbound","chunk":%d,"timestamp":"%d","payload":"%s"},'
            b'"extra_headers":' + headers + b"}"
        )

    def media(self, payload_b64: bytes, timestamp: int, track: str = "inbound") -> bytes:
        # Plivo's media timestamp is Unix epoch milliseconds (§3.2), not stream time.
        return super().media(payload_b64, self._epoch_ms + timestamp, track)

    def dtmf(self, digit: str) -> bytes:
        return self._dump({
            "event": "dtmf",
            "sequenceNumber": self._next_sequence(),
            "streamId": self.identity.stream_id,
            "dtmf": {"digit": digit},
        })

    def mark_played(self, name: str) -> bytes:
        return self._dump(
            {"event": "playedStream", "streamId": self.identity.stream_id, "name": name}
        )

    def cleared(self) -> bytes:
        # §3.2: clearedAudio carries sequenceNumber 0 in Plivo's own example.
        return self._dump(
            {"sequenceNumber": 0, "event": "clearedAudio", "streamId": self.identity.stream_id}
        )

    def stop(self) -> None:
        # Plivo's protocol page defines no stop message: the socket close ends the stream.
        return None

    def _parse(self, event: str, obj: dict[str, Any]) -> Parsed:
        issues: list[str] = []
        sid = obj.get("streamId")
        if sid is not None and sid != self.identity.stream_id:
            issues.append(f"{event}: streamId {sid!r} is not this stream's")
        if event == "playAudio":
            media = obj.get("media")
            if not isinstance(media, dict):
                return Parsed(ServerOther(event), (*issues, "playAudio without media"))
            payload = _b64(media.get("payload"))
            if payload is None:
                return Parsed(ServerOther(event), (*issues, "playAudio: bad or empty payload"))
            fmt = self._format_of(media, issues)
            issues.extend(self._media_violations(payload, fmt))
            return Parsed(ServerMedia(payload, fmt), tuple(issues))
        if event == "checkpoint":
            name = obj.get("name")
            if not isinstance(name, str):
                return Parsed(ServerOther(event), (*issues, "checkpoint without name"))
            return Parsed(ServerMark(name), tuple(issues))
        if event == "clearAudio":
            return Parsed(ServerClear(), tuple(issues))
        if event == "sendDTMF":
            digits = obj.get("dtmf")
            if not isinstance(digits, str) or not digits:
                return Parsed(ServerOther(event), (*issues, "sendDTMF without dtmf digits"))
            return Parsed(ServerDtmf(digits), tuple(issues))
        return Parsed(ServerOther(event), (*issues, f"unknown event {event!r}"))

    def _format_of(self, media: dict[str, Any], issues: list[str]) -> MediaFormat:
        content_type = media.get("contentType")
        rate = media.get("sampleRate")
        if content_type == "audio/x-mulaw" and rate in (8000, "8000"):
            fmt = MediaFormat("pcmu", 8000)
        elif content_type == "audio/x-l16" and rate in (8000, 16000, "8000", "16000"):
            fmt = MediaFormat("l16", int(rate), byteorder="little")
        else:
            issues.append(
                f"playAudio: unsupported contentType/sampleRate {content_type!r}/{rate!r}"
            )
            return self.outbound
        # §3.3: keep one codec for the whole stream; switching degrades audio.
        if fmt != self.outbound:
            issues.append(
                f"playAudio: {content_type}@{rate} differs from the stream's "
                f"{self.outbound.encoding}@{self.outbound.sample_rate}"
            )
        return fmt


_DIALECTS: dict[str, type[CallerDialect]] = {
    "twilio": TwilioCaller,
    "telnyx": TelnyxCaller,
    "plivo": PlivoCaller,
}


def dialect_for(provider: str) -> type[CallerDialect]:
    """The dialect class for ``provider`` (``twilio``, ``telnyx`` or ``plivo``)."""
    try:
        return _DIALECTS[provider]
    except KeyError:
        raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}") from None

