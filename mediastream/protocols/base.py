"""The provider-neutral half of every media-stream protocol: one error boundary, one
state machine, the media fast paths, and the command dispatch.

A provider subclass supplies its spelling (top-level stream-id and sequence keys, the
event names it sends and how each maps onto the state machine), how to read its
``start`` message, which codecs it streams, and its outbound message templates.

Cost per media message in (the hot path, ~50/s per call): once the first media message
has taught the provider's template (``_fastmedia.py``), one regex ``fullmatch`` in place
of a JSON parse, one strict ``binascii.a2b_base64``, three ``int()`` and the event
object; anything the template does not match exactly takes the full parse (the C JSON
scanner behind ``json.loads``, see ``_json.py``) with every check. Out: one
``binascii.b2a_base64`` and one f-string around a template built at ``start`` (the
stream id is JSON-escaped once). ``bench/bench_protocols.py`` measures both.
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from array import array
from binascii import a2b_base64, b2a_base64
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from types import MappingProxyType
from typing import Any, ClassVar, Literal, TypeAlias

from ..errors import (
    InvalidMessageError,
    LocalProtocolError,
    MessageTooBigError,
    OutOfOrderError,
    RemoteProtocolError,
    UnsupportedDataError,
)
from ._fastmedia import MediaMatcher, learn_media_template
from ._fields import MAX_DIGITS, as_int, obj, opt_int, opt_str, req_str
from ._json import SCAN_ERRORS, loads_strict, scan_once
from ._params import STREAM_AUTH_HEADER, agent_and_org, header_value, query_parameters
from ._state import DISCARDED, Input, State, next_state
from .events import (
    AudioReceived,
    CallInfo,
    Capabilities,
    ClearAudio,
    Command,
    DtmfReceived,
    Encoding,
    Event,
    MarkPlayed,
    MediaFormat,
    ProviderName,
    SendAudio,
    SendDtmf,
    SendMark,
    StreamStarted,
    StreamStopped,
    UnknownEventReceived,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_CHARS",
    "DEFAULT_MAX_PAYLOAD_MS",
    "FormatRule",
    "MediaStreamProtocol",
]

logger = logging.getLogger("mediastream.protocols")

#: Largest inbound payload accepted per message, in milliseconds of audio. Providers send
#: 20 ms frames (protocols.md §0); one second is 50 times that.
DEFAULT_MAX_PAYLOAD_MS = 1000
#: Largest text frame accepted, in characters: room for a ``start`` with generous custom
#: parameters and for a 1 s L16/16 kHz media frame (42 668 base64 characters).
DEFAULT_MAX_MESSAGE_CHARS = 256 * 1024

ByteOrder: TypeAlias = Literal["little", "big"]
_DTMF_DIGITS = frozenset("0123456789*#ABCD")
_DTMF_STRING = re.compile(r"[0-9*#A-Da-d]+")
_STARTED, _FAILED = State.STARTED, State.FAILED
#: Media messages per stream that may teach a template (``_fastmedia.py``). A provider
#: needs one; the bound keeps a stream whose messages never fit (odd whitespace,
#: escapes) from paying for attempts for ever.
_LEARN_ATTEMPTS = 8
#: Text fields of a ``stop`` kept in :attr:`StreamStopped.details`.
_MAX_STOP_DETAILS = 16

#: A learnt template with the stream's constants the fast path checks against it:
#: (fullmatch, then the indices in ``Match.groups()`` of the sequence number, track,
#: chunk, timestamp, payload and stream id, then max message chars, max payload base64
#: chars, inbound is L16, inbound format, the stream id, the timestamp origin).
_Template: TypeAlias = tuple[
    MediaMatcher, int, int, int, int, int, int, int, int, bool, MediaFormat, str, int
]
#: Media messages a held DTMF digit waits for an earlier-pressed one to arrive
#: (``ORDERS_DTMF``): about 200 ms of one track's 20 ms frames.
DTMF_HOLD_MESSAGES = 10


class _AudioReceivedBuilder:
    """``_AudioReceivedBuilder(...)`` is ``AudioReceived(...)`` at about a third of the cost.

    For the one event made 50 times a second per call. A frozen dataclass's
    ``__init__`` stores each field through ``object.__setattr__``, a call per field.
    This class has the same slots, so its ``__init__`` stores them with the
    interpreter's plain slot stores, and then makes the instance an
    :class:`AudioReceived`: CPython allows ``__class__`` assignment between classes of
    the same layout (same base, same ``__slots__``) and checks that it is so, raising
    ``TypeError`` otherwise. The result is an ordinary frozen ``AudioReceived``.
    :func:`_check_builder` proves it at import, so a change to the event makes this
    module fail to load rather than build a wrong event.
    """

    # In AudioReceived's field order, to compare with it in _check_builder.
    __slots__ = (  # noqa: RUF023
        "payload", "format", "track", "sequence", "chunk", "timestamp_ms", "timestamp_raw"
    )

    def __init__(
        self,
        payload: bytes,
        format: MediaFormat,
        track: str,
        sequence: int | None,
        chunk: int | None,
        timestamp_ms: int | None,
        timestamp_raw: int | None,
    ) -> None:
        self.payload = payload
        self.format = format
        self.track = track
        self.sequence = sequence
        self.chunk = chunk
        self.timestamp_ms = timestamp_ms
        self.timestamp_raw = timestamp_raw
        self.__class__ = AudioReceived  # type: ignore[assignment]  # same layout


def _check_builder() -> Callable[..., AudioReceived]:
    names = _AudioReceivedBuilder.__slots__
    if (
        tuple(f.name for f in fields(AudioReceived)) != names
        or AudioReceived.__slots__ != names
        or hasattr(AudioReceived, "__post_init__")
    ):
        raise ImportError("AudioReceived changed: update base._AudioReceivedBuilder")
    args = (b"\x00", MediaFormat("l16", 16000), "outbound", 1, 2, 3, 4)
    probe: Any = _AudioReceivedBuilder(*args)
    if type(probe) is not AudioReceived or probe != AudioReceived(*args):
        raise ImportError("base._AudioReceivedBuilder does not build an AudioReceived")
    return _AudioReceivedBuilder  # type: ignore[return-value]  # it builds AudioReceived


_audio_received = _check_builder()


class FormatRule:
    """One codec a provider may announce: our encoding name, its rates, L16 byte order."""

    __slots__ = ("byteorder", "encoding", "rates")

    def __init__(
        self, encoding: Encoding, rates: frozenset[int], byteorder: ByteOrder = "little"
    ) -> None:
        self.encoding: Encoding = encoding
        self.rates = rates
        self.byteorder: ByteOrder = byteorder


class MediaStreamProtocol(ABC):
    """Sans-I/O protocol for one provider media stream (one WebSocket connection).

    Feed every received WebSocket message to :meth:`receive` and write every string
    :meth:`send` returns as a text frame. Nothing here reads a clock or touches a socket.

    Keyword arguments (all optional):

    ``query``
        The upgrade URL's query parameters. They become custom parameters; Pipecat
        Cloud's base64-JSON ``body`` parameter is expanded.
    ``headers``
        The upgrade request headers; only ``x-telnyx-streaming-auth-token`` is read
        (exposed as :attr:`stream_auth_token`, never copied into :class:`CallInfo`).
    ``outbound_format``
        What to send back when it differs from what the provider sends (Telnyx
        ``bidirectionalCodec``/``bidirectionalSamplingRate``). Default: the inbound format.
    ``max_payload_ms``
        Largest media payload accepted per message (default 1000 ms of the inbound
        format); above it :class:`MessageTooBigError` (1009).
    ``max_message_chars``
        Largest text frame accepted (default 256 KiB of characters).
    ``l16_byteorder``
        ``"auto"`` (default), ``"big"`` or ``"little"``: the L16 byte order where the
        provider leaves it undocumented (Telnyx: decided from the audio unless forced,
        see ``telnyx.py``). Other providers ignore it.
    """

    #: Name of the provider this class speaks.
    provider: ClassVar[ProviderName]
    #: Top-level key carrying the stream id in the provider's messages.
    STREAM_KEY: ClassVar[str]
    #: Top-level key carrying the message sequence number.
    SEQUENCE_KEY: ClassVar[str]
    #: Event name -> (kind for the state machine, name of the handler method).
    EVENTS: ClassVar[Mapping[str, tuple[Input, str]]]
    #: Encodings the provider may announce in ``start`` (lower-case) and their rules.
    FORMATS: ClassVar[Mapping[str, FormatRule]]
    #: Used when ``start`` has no media format (emulators often omit it).
    DEFAULT_FORMAT: ClassVar[MediaFormat]
    #: What the provider's socket carries from the bot (DTMF, marks, clear).
    CAPABILITIES: ClassVar[Capabilities] = Capabilities()
    #: ``media.timestamp`` is Unix epoch ms (Plivo), not ms since the stream started:
    #: :attr:`AudioReceived.timestamp_ms` then counts from the first media message.
    EPOCH_TIMESTAMPS: ClassVar[bool] = False

    def __init__(
        self,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        outbound_format: MediaFormat | None = None,
        max_payload_ms: int = DEFAULT_MAX_PAYLOAD_MS,
        max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
        l16_byteorder: str = "auto",
    ) -> None:
        if max_payload_ms <= 0 or max_message_chars <= 0:
            raise ValueError("max_payload_ms and max_message_chars must be positive")
        if l16_byteorder not in ("auto", "big", "little"):
            raise ValueError(f"l16_byteorder must be auto, big or little, not {l16_byteorder!r}")
        self._l16_byteorder = l16_byteorder
        #: The fast path stays off while the subclass inspects every media message
        #: (Telnyx deciding its L16 byte order); its template waits parked.
        self._inspecting = False
        self._state = State.IDLE
        self._failure: RemoteProtocolError | None = None
        self._call: CallInfo | None = None
        self._stream_id: str | None = None
        self._url_params = query_parameters(query)
        self._auth_token = header_value(headers, STREAM_AUTH_HEADER)
        self._outbound_override = (
            None if outbound_format is None else self._outbound_rule(outbound_format)
        )
        self._max_payload_ms = max_payload_ms
        self._max_message_chars = max_message_chars
        # The class's functions, not bound methods: those would make every protocol
        # object a reference cycle, left to the cyclic collector when its call ends.
        cls = type(self)
        self._handlers: dict[
            str, tuple[Input, Callable[[MediaStreamProtocol, dict[str, Any]], list[Event]]]
        ] = {name: (kind, getattr(cls, method)) for name, (kind, method) in self.EVENTS.items()}
        # Set at start: inbound format, payload bound, and the outbound media template.
        self._in_format: MediaFormat = self.DEFAULT_FORMAT
        self._in_l16 = False
        self._out_l16 = False
        #: Byte-swap outbound L16 payloads: set by a subclass that learnt the wire's
        #: order differs from the one the session encodes (telnyx.py). Costs nothing to
        #: G.711 calls: only checked behind ``_out_l16``.
        self._out_swap = False
        self._max_payload_b64 = 0
        self._media_prefix = ""
        self._media_suffix = ""
        # The inbound media template learnt from accepted messages (the last one that
        # could be learnt); tests set the budget to 0 to force the full parse.
        self._template: _Template | None = None
        self._learn_budget = _LEARN_ATTEMPTS
        # Subtracted from media.timestamp to make timestamp_ms (EPOCH_TIMESTAMPS: set
        # by the first media message).
        self._ts_origin: int | None = None if self.EPOCH_TIMESTAMPS else 0
        # DTMF digits held to be delivered in the order pressed (_hold_dtmf), and the
        # media messages left before they are released. While any are held the fast
        # path is off (its template parked here), so every media message counts down.
        self._dtmf_held: list[tuple[float, int, DtmfReceived]] = []
        self._dtmf_arrivals = 0
        self._dtmf_wait = 0
        self._parked_template: _Template | None = None

    # ------------------------------------------------------------------ properties

    @property
    def state(self) -> State:
        """Current :class:`~mediastream.protocols.State`."""
        return self._state

    @property
    def capabilities(self) -> Capabilities:
        """What this provider's socket can carry from the bot."""
        return self.CAPABILITIES

    @property
    def call(self) -> CallInfo | None:
        """The call description, once ``start`` has been received."""
        return self._call

    @property
    def outbound_override(self) -> MediaFormat | None:
        """The ``outbound_format`` given at construction (validated), if any."""
        return self._outbound_override

    @property
    def stream_auth_token(self) -> str | None:
        """Telnyx stream auth token from the upgrade header or the ``connected`` frame."""
        return self._auth_token

    # --------------------------------------------------------------------- receive

    def receive(self, message: str | bytes) -> list[Event]:
        """Parse one WebSocket message into events.

        Raises a :class:`~mediastream.errors.RemoteProtocolError` subclass whose message
        names the offending field; the protocol is then ``FAILED`` and every later call
        raises again. No other exception escapes.
        """
        template = self._template
        if template is not None and self._state is _STARTED and type(message) is str:
            # The fast path (see _fastmedia.py): a template match (it holds the stream
            # id) whose sizes, base64 and L16 byte count all pass is exactly what the
            # full parse would accept; anything else falls through to it, errors too.
            (fullmatch, seq_i, track_i, chunk_i, time_i, payload_i, stream_i,
             max_chars, max_b64, l16, fmt, stream_id, origin) = template
            match = fullmatch(message)
            if match is not None and len(message) <= max_chars:
                # groups() and indexing cost half of group(*indices)
                values = match.groups()
                payload = values[payload_i]
                if len(payload) <= max_b64 and values[stream_i] == stream_id:
                    try:
                        audio = a2b_base64(payload, strict_mode=True)
                    except ValueError:
                        audio = None
                    if audio is not None and not (l16 and len(audio) & 1):
                        timestamp = int(values[time_i])
                        return [
                            _audio_received(
                                audio,
                                fmt,
                                values[track_i],
                                int(values[seq_i]),
                                int(values[chunk_i]),
                                timestamp - origin,
                                timestamp,
                            )
                        ]
        return self._receive_parsed(message)

    def _receive_parsed(self, message: str | bytes) -> list[Event]:
        """:meth:`receive` by a full JSON parse: every message the templates do not take."""
        if self._state is _FAILED:
            raise self._refusal()
        try:
            if type(message) is not str:
                raise UnsupportedDataError(
                    "binary frame: provider media streams are JSON text frames"
                )
            if len(message) > self._max_message_chars:
                raise MessageTooBigError(
                    f"message: {len(message)} characters exceeds {self._max_message_chars}"
                )
            try:  # _json.parse_json(), inlined: this is the per-message hot path
                data, end = scan_once(message, 0)
            except SCAN_ERRORS:
                end = -1
            if end != len(message):
                data = loads_strict(message)
            if type(data) is not dict:
                raise InvalidMessageError("message: expected a JSON object")
            event = data.get("event")
            if event == "media" and self._state is _STARTED:
                events = self._receive_media(data)  # the common case skips the table
                if self._learn_budget:
                    self._learn(message, data)
                if self._dtmf_held:
                    self._dtmf_wait -= 1
                    if self._dtmf_wait <= 0:
                        return [*self._release_dtmf(), *events]
                return events
            return self._dispatch(event, data)
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise
        except Exception as exc:
            # A bug of ours must still look like what it is to the peer: bad input.
            error = InvalidMessageError(f"message: unprocessable ({type(exc).__name__})")
            self._fail(error)
            raise error from exc

    def _learn(self, message: str, data: dict[str, Any]) -> None:
        """Keep the template of an accepted media message, if it has a usable one."""
        self._learn_budget -= 1
        if self._stream_id is None:
            return
        learnt = learn_media_template(
            message, data, self.STREAM_KEY, self.SEQUENCE_KEY, self._stream_id
        )
        if learnt is not None and self._ts_origin is not None:
            template: _Template = (
                *learnt,
                self._max_message_chars,
                self._max_payload_b64,
                self._in_l16,
                self._in_format,
                self._stream_id,
                self._ts_origin,
            )
            if self._dtmf_held or self._inspecting:
                self._parked_template = template
            else:
                self._template = template

    def _dispatch(self, event: Any, data: dict[str, Any]) -> list[Event]:
        if type(event) is not str:
            if event is None:
                raise InvalidMessageError("event: missing")
            raise InvalidMessageError("event: expected a string")
        entry = self._handlers.get(event)
        kind = Input.NOTICE if entry is None else entry[0]
        state = self._state
        new_state = next_state(state, kind)
        if new_state is None:
            raise OutOfOrderError(f"event: {event[:40]!r} is not allowed in state {state.name}")
        if (state, kind) in DISCARDED:
            return []
        if entry is None:
            logger.debug(
                "%s call %s: unknown event %.40r", self.provider, self._call_id(), event
            )
            events: list[Event] = [UnknownEventReceived(event, data)]
        else:
            events = entry[1](self, data)
        self._state = new_state
        return events

    def _fail(self, error: RemoteProtocolError) -> None:
        self._state = State.FAILED
        if self._failure is None:
            self._failure = error

    def _refusal(self) -> RemoteProtocolError:
        failure = self._failure
        cls = type(failure) if failure is not None else RemoteProtocolError
        return cls(f"protocol failed earlier: {failure}")

    def _call_id(self) -> str:
        return self._call.call_id if self._call is not None else "-"

    # ------------------------------------------------------- shared message handlers

    def _check_stream(self, data: dict[str, Any]) -> None:
        """Reject a message addressed to another stream (1007, like Twilio's 31951)."""
        sid = data.get(self.STREAM_KEY)
        if sid is not None and sid != self._stream_id and self._stream_id is not None:
            raise InvalidMessageError(
                f"{self.STREAM_KEY}: {str(sid)[:64]!r} is not this stream's "
                f"{self._stream_id!r}"
            )

    def _sequence(self, data: dict[str, Any]) -> int | None:
        return opt_int(data.get(self.SEQUENCE_KEY), self.SEQUENCE_KEY)

    def _receive_media(self, data: dict[str, Any]) -> list[Event]:
        media = data.get("media")
        if type(media) is not dict:
            raise InvalidMessageError(
                "media: missing" if media is None else "media: expected an object"
            )
        sid = data.get(self.STREAM_KEY)
        if sid is not None and sid != self._stream_id:
            self._check_stream(data)
        payload = media.get("payload")
        if type(payload) is not str:
            raise InvalidMessageError(
                "media.payload: missing" if payload is None else "media.payload: expected a string"
            )
        if len(payload) > self._max_payload_b64:
            raise MessageTooBigError(
                f"media.payload: {len(payload)} base64 characters exceeds "
                f"{self._max_payload_ms} ms of {self._in_format.encoding}"
            )
        try:
            audio = a2b_base64(payload, strict_mode=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            raise InvalidMessageError("media.payload: invalid base64") from None
        if self._in_l16 and len(audio) & 1:
            raise InvalidMessageError("media.payload: odd byte count for 16-bit L16 audio")
        track = media.get("track", "inbound")
        if type(track) is not str:
            raise InvalidMessageError("media.track: expected a string")
        # opt_int() inlined for the decimal strings Twilio and Telnyx send: three calls
        # per message were a tenth of the receive cost.
        sequence = data.get(self.SEQUENCE_KEY)
        if type(sequence) is str and sequence.isdecimal() and len(sequence) <= MAX_DIGITS:
            sequence = int(sequence)
        elif sequence is not None:
            sequence = opt_int(sequence, self.SEQUENCE_KEY)
        chunk = media.get("chunk")
        if type(chunk) is str and chunk.isdecimal() and len(chunk) <= MAX_DIGITS:
            chunk = int(chunk)
        elif chunk is not None:
            chunk = opt_int(chunk, "media.chunk")
        timestamp = media.get("timestamp")
        if type(timestamp) is str and timestamp.isdecimal() and len(timestamp) <= MAX_DIGITS:
            timestamp = int(timestamp)
        elif timestamp is not None:
            timestamp = opt_int(timestamp, "media.timestamp")
        since_start = None
        if timestamp is not None:
            origin = self._ts_origin
            if origin is None:
                origin = self._ts_origin = timestamp
            since_start = timestamp - origin
        return [
            _audio_received(
                audio, self._in_format, track, sequence, chunk, since_start, timestamp
            )
        ]

    def _receive_dtmf(self, data: dict[str, Any]) -> list[Event]:
        self._check_stream(data)
        dtmf = obj(data.get("dtmf"), "dtmf")
        digit = req_str(dtmf.get("digit"), "dtmf.digit").upper()
        if digit not in _DTMF_DIGITS:
            raise InvalidMessageError(f"dtmf.digit: {digit[:8]!r} is not a DTMF digit")
        return [DtmfReceived(digit, self._sequence(data))]

    def _receive_mark(self, data: dict[str, Any]) -> list[Event]:
        self._check_stream(data)
        mark = obj(data.get("mark"), "mark")
        return [MarkPlayed(req_str(mark.get("name"), "mark.name"), self._sequence(data))]

    def _receive_stop(self, data: dict[str, Any]) -> list[Event]:
        self._check_stream(data)
        stop = data.get("stop")
        reason = None
        details: dict[str, str] = {}
        if type(stop) is dict:
            reason = opt_str(stop.get("reason"), "stop.reason")
            for key, value in stop.items():
                # Text fields only (ids, reasons), bounded: a record, not a channel.
                if type(value) is str and value and len(details) < _MAX_STOP_DETAILS:
                    details[str(key)[:64]] = value[:256]
        elif stop is not None:
            raise InvalidMessageError("stop: expected an object")
        stopped = StreamStopped(reason, self._sequence(data), MappingProxyType(details))
        return [*self._release_dtmf(), stopped]

    # ---------------------------------------------------------------- DTMF order

    def _hold_dtmf(self, digit: DtmfReceived, pressed: float | None) -> list[Event]:
        """Deliver ``digit`` in the order keys were pressed, not the order of arrival.

        For a provider that may deliver DTMF out of order but says when each key was
        pressed (Telnyx ``occurred_at``): a digit is held until
        :data:`DTMF_HOLD_MESSAGES` media messages have passed without another digit, then
        every held digit goes out sorted by press time (ties and digits without a time in
        arrival order). The stream's ``stop`` releases them too. The cost is that much
        delay on a key press, and the media fast path is off while a digit is held.
        """
        self._dtmf_arrivals += 1
        if pressed is None:
            if not self._dtmf_held:
                return [digit]
            pressed = self._dtmf_held[-1][0]  # after what is held: arrival order
        self._dtmf_held.append((pressed, self._dtmf_arrivals, digit))
        self._dtmf_held.sort(key=lambda held: held[:2])
        self._dtmf_wait = DTMF_HOLD_MESSAGES
        if self._template is not None:
            self._parked_template, self._template = self._template, None
        return []

    def _release_dtmf(self) -> list[Event]:
        if not self._dtmf_held:
            return []
        released: list[Event] = [held[2] for held in self._dtmf_held]
        self._dtmf_held.clear()
        self._unpark()
        return released

    def _unpark(self) -> None:
        """Put the parked fast-path template back once nothing holds it off."""
        if self._parked_template is not None and not self._dtmf_held and not self._inspecting:
            self._template, self._parked_template = self._parked_template, None

    # ---------------------------------------------------------------------- start

    def _media_format(self, fmt: dict[str, Any], rate_key: str, where: str) -> MediaFormat:
        """Validate an announced format against :attr:`FORMATS` (1003 if unsupported)."""
        encoding, rate, channels = fmt.get("encoding"), fmt.get(rate_key), fmt.get("channels")
        if encoding is None and rate is None:
            return self.DEFAULT_FORMAT
        name = req_str(encoding, f"{where}.encoding")[:40]
        rule = self.FORMATS.get(name.split(";", 1)[0].strip().lower())
        if rule is None:
            raise UnsupportedDataError(
                f"{where}.encoding: {name!r} is not supported "
                f"(supported: {', '.join(sorted(self.FORMATS))})"
            )
        sample_rate = (
            min(rule.rates) if rate is None else _positive_int(rate, f"{where}.{rate_key}")
        )
        if sample_rate not in rule.rates:
            raise UnsupportedDataError(
                f"{where}: {name} at {sample_rate} Hz is not supported "
                f"(supported: {', '.join(map(str, sorted(rule.rates)))} Hz)"
            )
        if channels is not None and _positive_int(channels, f"{where}.channels") != 1:
            raise UnsupportedDataError(f"{where}.channels: only mono audio is supported")
        return MediaFormat(rule.encoding, sample_rate, 1, rule.byteorder)

    def _outbound_rule(self, fmt: MediaFormat) -> MediaFormat:
        """Check a server-chosen outbound format; fix the L16 byte order to the wire's."""
        for rule in self.FORMATS.values():
            if rule.encoding == fmt.encoding and fmt.sample_rate in self._outbound_rates(rule):
                if fmt.channels != 1:
                    break
                return replace(fmt, byteorder=rule.byteorder)
        raise ValueError(f"{self.provider} cannot play {fmt}")

    def _outbound_rates(self, rule: FormatRule) -> frozenset[int]:
        return rule.rates

    def _started(
        self,
        data: dict[str, Any],
        *,
        call_id: str,
        stream_id: str,
        inbound: MediaFormat,
        account_id: str | None = None,
        from_number: str | None = None,
        to_number: str | None = None,
        parameters: Mapping[str, str] | None = None,
        tracks: tuple[str, ...] | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> list[Event]:
        """Record the call and prepare the hot paths; the one way into ``STARTED``."""
        params = dict(self._url_params)
        if parameters:
            params.update(parameters)
        agent, organization = agent_and_org(params)
        outbound = self._outbound_override or inbound
        # Providers that do not carry the numbers (Twilio, Plivo) get them from the
        # parameters the answer document set, as Pipecat does with from_number/to_number.
        if from_number is None:
            from_number = params.get("from_number") or params.get("from") or None
        if to_number is None:
            to_number = params.get("to_number") or params.get("to") or None
        call = CallInfo(
            provider=self.provider,
            call_id=call_id,
            stream_id=stream_id,
            inbound_format=inbound,
            outbound_format=outbound,
            account_id=account_id,
            from_number=from_number,
            to_number=to_number,
            custom_parameters=MappingProxyType(params),
            agent=agent,
            organization=organization,
            tracks=tracks or ("inbound",),
            extra=MappingProxyType(dict(extra or {})),
        )
        self._call = call
        self._stream_id = stream_id
        self._in_format = inbound
        self._in_l16 = inbound.encoding == "l16"
        self._out_l16 = outbound.encoding == "l16"
        max_bytes = inbound.frame_bytes(self._max_payload_ms)
        self._max_payload_b64 = 4 * -(-max_bytes // 3)
        self._media_prefix, self._media_suffix = self._media_template(call)
        return [StreamStarted(call, self._sequence(data))]

    # ------------------------------------------------------------------------ send

    def send(self, command: Command) -> list[str]:
        """The text frames that carry ``command`` to the provider.

        Allowed only while ``STARTED``; otherwise (or for a command this provider cannot
        carry, such as DTMF on Twilio) :class:`~mediastream.errors.LocalProtocolError`.
        Empty audio gives no frame: providers must not receive an empty payload.
        """
        # _STARTED, not State.STARTED: an enum member lookup through the class costs as
        # much as the rest of this test.
        if type(command) is SendAudio and self._state is _STARTED:
            payload = command.payload
            if len(payload) == 0:  # len(), not truth: a numpy array is bytes-like too
                return []
            if self._out_l16:
                if len(payload) & 1:
                    raise LocalProtocolError("SendAudio: odd byte count for 16-bit L16 audio")
                if self._out_swap:  # the wire's byte order is not the encoder's (Telnyx)
                    payload = swap16(payload)
            # One f-string: a single allocation for the frame, where + made two.
            return [
                f"{self._media_prefix}{b2a_base64(payload, newline=False).decode()}"
                f"{self._media_suffix}"
            ]
        return self._send_slow(command)

    def _send_slow(self, command: Command) -> list[str]:
        if self._state is not State.STARTED:
            raise LocalProtocolError(
                f"cannot send {type(command).__name__} in state {self._state.name}"
            )
        if isinstance(command, SendAudio):
            return self.send(SendAudio(bytes(command.payload)))
        if isinstance(command, SendMark):
            if type(command.name) is not str or not command.name:
                raise LocalProtocolError("SendMark: the name must be a non-empty string")
            return [self._mark_message(command.name)]
        if isinstance(command, ClearAudio):
            return [self._clear_message()]
        if isinstance(command, SendDtmf):
            if type(command.digits) is not str or not _DTMF_STRING.fullmatch(command.digits):
                raise LocalProtocolError(f"SendDtmf: {command.digits!r} is not a DTMF string")
            return [self._dtmf_message(command.digits.upper())]
        raise LocalProtocolError(f"unknown command {command!r}")

    def _dtmf_message(self, digits: str) -> str:
        raise LocalProtocolError(
            f"{self.provider} cannot send DTMF on the media socket (use its REST API)"
        )

    @abstractmethod
    def _media_template(self, call: CallInfo) -> tuple[str, str]:
        """Text before and after the base64 payload of an outbound media message."""

    @abstractmethod
    def _mark_message(self, name: str) -> str:
        """The outbound mark (Plivo: checkpoint) message."""

    @abstractmethod
    def _clear_message(self) -> str:
        """The outbound clear (Plivo: clearAudio) message."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._state.name} call={self._call_id()}>"


def swap16(payload: Any) -> bytes:
    """``payload`` (bytes-like, 16-bit samples, even length) with the two bytes of every
    sample swapped."""
    samples = array("h")
    samples.frombytes(payload)
    samples.byteswap()
    return samples.tobytes()


def _positive_int(value: Any, where: str) -> int:
    number = as_int(value, where)
    if number <= 0:
        raise InvalidMessageError(f"{where}: must be positive")
    return number


def dumps(message: dict[str, Any]) -> str:
    """Compact JSON for the rare, non-media outbound messages."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
