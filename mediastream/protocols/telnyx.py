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

Codecs: PCMU/PCMA at 8 kHz and L16 at 8 or 16 kHz. L16 is network byte order
(big-endian, RFC 3551 §4.5.11; protocols.md §5.4). The outbound format defaults to the
inbound one; pass ``outbound_format`` when the answer document set a different
``bidirectionalCodec``/``bidirectionalSamplingRate`` (Telnyx's own default for those is
PCMU at 8 kHz whatever the inbound codec).
"""

from __future__ import annotations

import binascii
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar

from ._fields import obj, opt_obj, opt_str, req_str, str_list, string_map, text_value
from ._state import Input
from .base import FormatRule, MediaStreamProtocol, dumps
from .events import (
    PCMU_8K,
    CallInfo,
    DtmfReceived,
    Event,
    MediaFormat,
    ProviderErrorReported,
    ProviderName,
    StreamConnected,
)

__all__ = ["TelnyxProtocol", "decode_client_state"]

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
