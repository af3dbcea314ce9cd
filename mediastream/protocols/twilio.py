"""Twilio Media Streams (protocols.md §1.2, §1.3).

In: ``connected``, ``start``, ``media``, ``dtmf``, ``mark``, ``stop``, camelCase keys,
numbers as JSON strings. Out: ``media``, ``mark``, ``clear``, each carrying the
``streamSid`` from ``start``; anything else makes Twilio fail the stream with 31951, so
DTMF cannot be sent here. Audio is μ-law 8 kHz both ways and nothing else.

A message whose ``streamSid`` differs from the started stream's is rejected with
:class:`~mediastream.errors.InvalidMessageError` (1007): Twilio itself treats a wrong
``streamSid`` as an invalid message (31951, §1.8).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from ..errors import InvalidMessageError
from ._fields import obj, opt_obj, opt_str, req_str, str_list, string_map
from ._state import Input
from .base import FormatRule, MediaStreamProtocol, dumps
from .events import PCMU_8K, CallInfo, Event, MediaFormat, ProviderName, StreamConnected

__all__ = ["TwilioProtocol"]


class TwilioProtocol(MediaStreamProtocol):
    """Twilio ``<Connect><Stream>`` / ``<Start><Stream>`` media stream."""

    provider: ClassVar[ProviderName] = "twilio"
    STREAM_KEY = "streamSid"
    SEQUENCE_KEY = "sequenceNumber"
    EVENTS: ClassVar[dict[str, tuple[Input, str]]] = {
        "connected": (Input.CONNECTED, "_receive_connected"),
        "start": (Input.START, "_receive_start"),
        "media": (Input.CALL_EVENT, "_receive_media"),
        "dtmf": (Input.CALL_EVENT, "_receive_dtmf"),
        "mark": (Input.CALL_EVENT, "_receive_mark"),
        "stop": (Input.STOP, "_receive_stop"),
    }
    FORMATS: ClassVar[dict[str, FormatRule]] = {
        "audio/x-mulaw": FormatRule("pcmu", frozenset({8000})),
    }
    DEFAULT_FORMAT: ClassVar[MediaFormat] = PCMU_8K

    def _receive_connected(self, data: dict[str, Any]) -> list[Event]:
        return [
            StreamConnected(
                opt_str(data.get("protocol"), "protocol"), opt_str(data.get("version"), "version")
            )
        ]

    def _receive_start(self, data: dict[str, Any]) -> list[Event]:
        start = obj(data.get("start"), "start")
        stream_id = req_str(start.get("streamSid"), "start.streamSid")
        top = data.get("streamSid")
        if top is not None and top != stream_id:
            raise InvalidMessageError("streamSid: differs from start.streamSid")
        fmt = opt_obj(start.get("mediaFormat"), "start.mediaFormat") or {}
        return self._started(
            data,
            call_id=req_str(start.get("callSid"), "start.callSid"),
            stream_id=stream_id,
            inbound=self._media_format(fmt, "sampleRate", "start.mediaFormat"),
            # Twilio-compatible bridges send "accountSid": "": absent, not an account.
            account_id=opt_str(start.get("accountSid"), "start.accountSid") or None,
            parameters=string_map(start.get("customParameters"), "start.customParameters"),
            tracks=str_list(start.get("tracks"), "start.tracks"),
        )

    def _media_template(self, call: CallInfo) -> tuple[str, str]:
        sid = json.dumps(call.stream_id)
        return '{"event":"media","streamSid":' + sid + ',"media":{"payload":"', '"}}'

    def _mark_message(self, name: str) -> str:
        return dumps({"event": "mark", "streamSid": self._stream_id, "mark": {"name": name}})

    def _clear_message(self) -> str:
        return dumps({"event": "clear", "streamSid": self._stream_id})
