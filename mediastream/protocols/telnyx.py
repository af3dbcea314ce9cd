"""Telnyx Media Streaming (protocols.md §2.2, §2.3; Telnyx "Stream call media over
WebSocket" AsyncAPI reference).

In: ``connected``, ``start``, ``media``, ``dtmf``, ``mark``, ``error``, ``stop`` with
snake_case keys; ``stream_id`` is top level, ``call_control_id`` inside ``start``.
Telnyx does not guarantee frame order: :class:`AudioReceived` carries
``sequence_number`` and ``media.chunk`` so the session can reorder. DTMF digits may
arrive out of order too; they are delivered in ``occurred_at`` order (held about 200 ms,
``MediaStreamProtocol._hold_dtmf``). ``client_state`` is kept as sent and, when it is
base64 of text, decoded into ``extra["client_state_text"]``.
Out (``bidirectionalMode="rtp"``): ``media``, ``mark``, ``clear``. The stream id is
optional on these and left out, as in Telnyx's examples.

Codecs: PCMU/PCMA at 8 kHz and L16 at 8 or 16 kHz. L16 should be network byte order
(big-endian, RFC 3551 §4.5.11), but Telnyx does not document it and public bridges
disagree (protocols.md §5.4), so by default (``l16_byteorder="auto"``) the order is
decided per call from the audio (:class:`L16OrderDetector`): speech read in the wrong
byte order is broadband noise, so the order whose samples move less from one to the next
is the right one. Until a frame decides it (quiet frames cannot, and sound alike either
way) audio is read big-endian; the decision then applies to the inbound audio and to what
is sent back (each outbound L16 payload is byte-swapped when the detected order differs
from the session's). ``"big"``/``"little"`` force an order both ways.

The outbound format defaults to the inbound one; pass ``outbound_format`` when the
answer document set a different ``bidirectionalCodec``/``bidirectionalSamplingRate``
(Telnyx's own default for those is PCMU at 8 kHz whatever the inbound codec).
"""

from __future__ import annotations

import binascii
import logging
import sys
from array import array
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar

from ._fields import obj, opt_obj, opt_str, req_str, str_list, string_map, text_value
from ._state import Input
from .base import _LEARN_ATTEMPTS, FormatRule, MediaStreamProtocol, dumps
from .events import (
    PCMU_8K,
    AudioReceived,
    CallInfo,
    DtmfReceived,
    Event,
    MediaFormat,
    ProviderErrorReported,
    ProviderName,
    StreamConnected,
)

__all__ = ["L16OrderDetector", "TelnyxProtocol", "decode_client_state"]

logger = logging.getLogger("mediastream.protocols")
_NATIVE_BIG = sys.byteorder == "big"

_AUTH_FIELD = "x-telnyx-streaming-auth-token"


class TelnyxProtocol(MediaStreamProtocol):
    """Telnyx Call Control / TeXML media stream."""

    provider: ClassVar[ProviderName] = "telnyx"
    STREAM_KEY = "stream_id"
    SEQUENCE_KEY = "sequence_number"
    EVENTS: ClassVar[dict[str, tuple[Input, str]]] = {
        "connected": (Input.CONNECTED, "_receive_connected"),
        "start": (Input.START, "_receive_start"),
        "media": (Input.CALL_EVENT, "_receive_media"),
        "dtmf": (Input.CALL_EVENT, "_receive_dtmf"),
        "mark": (Input.CALL_EVENT, "_receive_mark"),
        "error": (Input.NOTICE, "_receive_error"),
        "stop": (Input.STOP, "_receive_stop"),
    }
    FORMATS: ClassVar[dict[str, FormatRule]] = {
        "pcmu": FormatRule("pcmu", frozenset({8000})),
        "pcma": FormatRule("pcma", frozenset({8000})),
        "l16": FormatRule("l16", frozenset({8000, 16000}), "big"),
    }
    DEFAULT_FORMAT: ClassVar[MediaFormat] = PCMU_8K

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        #: The L16 byte order decided for this call and how: "detected", "forced" or
        #: "default" (no frame decided it). None until known, or for G.711 calls.
        self.l16_decision: tuple[str, str] | None = None
        self._detector: L16OrderDetector | None = None

    def _media_format(self, fmt: dict[str, Any], rate_key: str, where: str) -> MediaFormat:
        chosen = super()._media_format(fmt, rate_key, where)
        if chosen.encoding != "l16":
            return chosen
        if self._l16_byteorder == "auto":
            self._detector = L16OrderDetector()
            self._inspecting = True  # every media message goes through the detector
            return chosen
        self.l16_decision = (self._l16_byteorder, "forced")
        return replace(chosen, byteorder=self._l16_byteorder)  # type: ignore[arg-type]

    def _outbound_rule(self, fmt: MediaFormat) -> MediaFormat:
        checked = super()._outbound_rule(fmt)
        if checked.encoding == "l16" and self._l16_byteorder != "auto":
            return replace(checked, byteorder=self._l16_byteorder)  # type: ignore[arg-type]
        return checked

    def _receive_media(self, data: dict[str, Any]) -> list[Event]:
        events = super()._receive_media(data)
        detector = self._detector
        if detector is None:
            return events
        [audio] = events
        assert isinstance(audio, AudioReceived)
        order = detector.offer(audio.payload)
        if order is None:
            return events
        self._detector = None
        self._inspecting = False
        how = "default" if detector.undecided else "detected"
        self.l16_decision = (order, how)
        logger.info(
            "telnyx call %s: L16 byte order %s (%s after %d frames)",
            self._call_id(), order, how, detector.frames,
        )
        if order != self._in_format.byteorder:
            self._in_format = replace(self._in_format, byteorder=order)  # type: ignore[arg-type]
            audio = replace(audio, format=self._in_format)
            # The parked template carries the old format: learn a new one.
            self._parked_template = None
            self._learn_budget = _LEARN_ATTEMPTS
        call = self._call
        if call is not None and call.outbound_format.encoding == "l16":
            # The session encodes in the start's order; the wire wants the detected one.
            self._out_swap = call.outbound_format.byteorder != order
        self._unpark()
        return [audio]

    @property
    def l16_order_in_use(self) -> tuple[str, str] | None:
        """(order, how) for an L16 call: the decision, or ("big", "default") while the
        audio has not decided it yet; ``None`` for a G.711 call."""
        if self.l16_decision is not None:
            return self.l16_decision
        return ("big", "default") if self._detector is not None else None

    def _receive_connected(self, data: dict[str, Any]) -> list[Event]:
        # The AsyncAPI reference names the field connected.x-telnyx-streaming-auth-token;
        # a top-level copy is accepted as well.
        inner = opt_obj(data.get("connected"), "connected") or {}
        token = opt_str(inner.get(_AUTH_FIELD), f"connected.{_AUTH_FIELD}") or opt_str(
            data.get(_AUTH_FIELD), _AUTH_FIELD
        )
        if self._auth_token is None:
            self._auth_token = token
        return [StreamConnected(None, opt_str(data.get("version"), "version"), token)]

    def _receive_start(self, data: dict[str, Any]) -> list[Event]:
        start = obj(data.get("start"), "start")
        # stream_id is top level (protocols.md §2.1); emulators sometimes nest it.
        stream_id = data.get("stream_id")
        stream_id = req_str(
            start.get("stream_id") if stream_id is None else stream_id, "stream_id"
        )
        fmt = opt_obj(start.get("media_format"), "start.media_format") or {}
        extra: dict[str, str] = {}
        for key in ("call_session_id", "client_state"):
            value = opt_str(start.get(key), f"start.{key}")
            if value is not None:
                extra[key] = value
        decoded = decode_client_state(extra.get("client_state"))
        if decoded is not None:
            extra["client_state_text"] = decoded
        tags = str_list(start.get("tags"), "start.tags")
        if tags:
            extra["tags"] = ",".join(tags)
        return self._started(
            data,
            call_id=req_str(start.get("call_control_id"), "start.call_control_id"),
            stream_id=stream_id,
            inbound=self._media_format(fmt, "sample_rate", "start.media_format"),
            account_id=opt_str(start.get("user_id"), "start.user_id") or None,
            from_number=opt_str(start.get("from"), "start.from") or None,
            to_number=opt_str(start.get("to"), "start.to") or None,
            parameters=string_map(start.get("custom_parameters"), "start.custom_parameters"),
            extra=extra,
        )

    def _receive_dtmf(self, data: dict[str, Any]) -> list[Event]:
        # Telnyx may deliver DTMF out of order; occurred_at says when each key was
        # pressed (issue 14, Telnyx media streaming docs): held and sorted by base.
        [digit] = super()._receive_dtmf(data)
        assert isinstance(digit, DtmfReceived)
        occurred_at = data.get("occurred_at")
        if type(occurred_at) is not str:
            return self._hold_dtmf(digit, None)
        digit = replace(digit, occurred_at=occurred_at[:64])
        return self._hold_dtmf(digit, _press_time(occurred_at))

    def _receive_error(self, data: dict[str, Any]) -> list[Event]:
        # Shape from protocols.md §2.2 (UNCONFIRMED there): read leniently, never fail.
        payload = data.get("payload")
        if type(payload) is not dict:
            payload = data.get("error")
            if type(payload) is not dict:
                payload = data
        code, title, detail = (payload.get(k) for k in ("code", "title", "detail"))
        return [
            ProviderErrorReported(
                None if code is None else text_value(code),
                None if title is None else text_value(title),
                None if detail is None else text_value(detail),
            )
        ]

    def _outbound_rates(self, rule: FormatRule) -> frozenset[int]:
        # bidirectionalSamplingRate allows 8000, 16000, 24000 (protocols.md §2.4).
        return rule.rates | {24000} if rule.encoding == "l16" else rule.rates

    def _media_template(self, call: CallInfo) -> tuple[str, str]:
        return '{"event":"media","media":{"payload":"', '"}}'

    def _mark_message(self, name: str) -> str:
        return dumps({"event": "mark", "mark": {"name": name}})

    def _clear_message(self) -> str:
        return '{"event":"clear"}'


def decode_client_state(value: str | None) -> str | None:
    """Telnyx ``client_state`` decoded, when it is base64 of printable UTF-8 text.

    Telnyx carries ``client_state`` as base64 of whatever the command that set it chose
    (protocols.md §2.2); applications usually put text or JSON there. Binary state is
    left encoded (``None`` here): the raw value stays in ``CallInfo.extra``.
    """
    if not value:
        return None
    try:
        text = binascii.a2b_base64(value, strict_mode=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return text if text.isprintable() else None


def _press_time(occurred_at: str) -> float | None:
    """``occurred_at`` (ISO 8601, ``Z`` allowed) as seconds since the epoch, or ``None``."""
    try:
        moment = datetime.fromisoformat(occurred_at.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class L16OrderDetector:
    """Decide a stream's L16 byte order from its first frames of audio.

    Speech is low-pass: consecutive samples are close. Read in the wrong byte order each
    sample's noisy low byte becomes its high byte, and the signal is broadband noise at
    full scale. So the statistic is the mean absolute difference between consecutive
    samples, in each order: a frame decides when one order's is at least
    :data:`MARGIN` times the other's and the larger is at least :data:`LOUD` (quiet
    frames read nearly alike both ways and cannot tell). After :data:`MAX_FRAMES`
    frames (about a second) without a decision the stream is taken as big-endian, RFC
    3551's order, and :attr:`undecided` says so.
    """

    MARGIN = 4.0
    LOUD = 256.0
    MAX_FRAMES = 50

    __slots__ = ("frames", "undecided")

    def __init__(self) -> None:
        self.frames = 0
        self.undecided = False

    def offer(self, payload: bytes) -> str | None:
        """One payload in: ``"big"``/``"little"`` once decided, else ``None``."""
        self.frames += 1
        order = self.decide(payload)
        if order is None and self.frames >= self.MAX_FRAMES:
            self.undecided = True
            return "big"
        return order

    @classmethod
    def decide(cls, payload: bytes) -> str | None:
        """The byte order ``payload`` reads as speech in, or ``None`` if it cannot tell."""
        if len(payload) < 8 or len(payload) & 1:
            return None
        samples = array("h")
        samples.frombytes(payload)  # native order
        native = _roughness(samples)
        samples.byteswap()
        swapped = _roughness(samples)
        big, little = (native, swapped) if _NATIVE_BIG else (swapped, native)
        if max(big, little) < cls.LOUD:
            return None
        if big * cls.MARGIN <= little:
            return "big"
        if little * cls.MARGIN <= big:
            return "little"
        return None


def _roughness(samples: array[int]) -> float:
    """Mean absolute difference between consecutive samples."""
    previous = samples[0]
    total = 0
    for value in samples:
        total += abs(value - previous)
        previous = value
    return total / (len(samples) - 1)
