"""Plivo Audio Streaming (protocols.md §3.2, §3.3).

In: ``start`` first (there is no ``connected``), then ``media``, ``dtmf``,
``playedStream`` (older articles: ``played``), ``clearedAudio``, ``stop``, and the
``playFailed``/``error`` reports Plivo's own client handles. ``sequenceNumber`` and
``media.chunk`` are JSON numbers here, ``media.timestamp`` a string; both are accepted
either way. ``extra_headers`` (the ``extraHeaders`` attribute) may sit at the top level
or inside ``start`` and may be JSON, a Python-style dict (Plivo's Python SDK) or ``k=v``
pairs split by ``;`` or ``,``; anything else is kept raw and logged, never fatal.
Acknowledgements naming another ``streamId`` are logged and ignored.

Out (``bidirectional="true"``): ``playAudio`` with ``contentType`` and ``sampleRate``
of the outbound format, ``checkpoint`` (acknowledged by ``playedStream``),
``clearAudio`` (acknowledged by ``clearedAudio``) and ``sendDTMF``. ``streamId`` is
included on each, as Pipecat's serializer does.

Codecs: ``audio/x-mulaw`` at 8 kHz, ``audio/x-l16`` at 8 or 16 kHz, L16 little-endian
(Plivo's own client, protocols.md §5.4). A ``start`` without ``mediaFormat`` is taken
as μ-law 8 kHz, the format Pipecat assumes.
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

from ..errors import InvalidMessageError
from ._fields import obj, opt_obj, opt_str, req_str, str_list, text_value
from ._params import parse_extra_headers
from ._state import Input
from .base import FormatRule, MediaStreamProtocol, dumps
from .events import (
    PCMU_8K,
    AudioCleared,
    CallInfo,
    Capabilities,
    Event,
    MarkPlayed,
    MediaFormat,
    ProviderErrorReported,
    ProviderName,
)

__all__ = ["PlivoProtocol"]

logger = logging.getLogger("mediastream.protocols")

_CONTENT_TYPES = {"pcmu": "audio/x-mulaw", "l16": "audio/x-l16"}


class PlivoProtocol(MediaStreamProtocol):
    """Plivo ``<Stream bidirectional="true">`` audio stream."""

    provider: ClassVar[ProviderName] = "plivo"
    CAPABILITIES: ClassVar[Capabilities] = Capabilities(send_dtmf=True, clear_acknowledged=True)
    STREAM_KEY = "streamId"
    SEQUENCE_KEY = "sequenceNumber"
    EVENTS: ClassVar[dict[str, tuple[Input, str]]] = {
        "start": (Input.START, "_receive_start"),
        "media": (Input.CALL_EVENT, "_receive_media"),
        "dtmf": (Input.CALL_EVENT, "_receive_dtmf"),
        "playedStream": (Input.CALL_EVENT, "_receive_played"),
        "played": (Input.CALL_EVENT, "_receive_played"),
        "clearedAudio": (Input.CALL_EVENT, "_receive_cleared"),
        "playFailed": (Input.NOTICE, "_receive_error"),
        "error": (Input.NOTICE, "_receive_error"),
        "stop": (Input.STOP, "_receive_stop"),
    }
    FORMATS: ClassVar[dict[str, FormatRule]] = {
        "audio/x-mulaw": FormatRule("pcmu", frozenset({8000})),
        "audio/x-l16": FormatRule("l16", frozenset({8000, 16000}), "little"),
    }
    DEFAULT_FORMAT: ClassVar[MediaFormat] = PCMU_8K
    #: media.timestamp is Unix epoch ms (protocols.md §3.2).
    EPOCH_TIMESTAMPS: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        #: Acknowledgements received for another stream (logged, ignored).
        self._foreign_acks = 0

    def _receive_start(self, data: dict[str, Any]) -> list[Event]:
        start = obj(data.get("start"), "start")
        stream_id = req_str(start.get("streamId"), "start.streamId")
        top = data.get("streamId")
        if top is not None and top != stream_id:
            raise InvalidMessageError("streamId: differs from start.streamId")
        fmt = opt_obj(start.get("mediaFormat"), "start.mediaFormat") or {}
        call_id = req_str(start.get("callId"), "start.callId")
        parameters: dict[str, str] = {}
        for where, value in (
            ("start.extra_headers", start.get("extra_headers")),
            ("extra_headers", data.get("extra_headers")),
        ):
            headers = parse_extra_headers(value, where)
            if headers.problem is not None:
                # Once per call: start is received once.
                logger.warning(
                    "plivo call %s: %s", call_id, headers.problem
                )
            parameters.update(headers.parameters)
        return self._started(
            data,
            call_id=call_id,
            stream_id=stream_id,
            inbound=self._media_format(fmt, "sampleRate", "start.mediaFormat"),
            account_id=opt_str(start.get("accountId"), "start.accountId") or None,
            parameters=parameters,
            tracks=str_list(start.get("tracks"), "start.tracks"),
        )

    def _receive_played(self, data: dict[str, Any]) -> list[Event]:
        if not self._acknowledges_this_stream(data):
            return []
        return [MarkPlayed(req_str(data.get("name"), "name"), self._sequence(data))]

    def _receive_cleared(self, data: dict[str, Any]) -> list[Event]:
        if not self._acknowledges_this_stream(data):
            return []
        return [AudioCleared(self._sequence(data))]

    def _acknowledges_this_stream(self, data: dict[str, Any]) -> bool:
        """Whether an acknowledgement (``playedStream``, ``clearedAudio``) is ours.

        Plivo's own support article on ``clearAudio`` shows the ``clearedAudio`` reply
        carrying a different ``streamId`` from the request's: an acknowledgement naming
        another stream is logged and ignored, never a reason to end the call. Only media
        for another stream is an error (base ``_receive_media``).
        """
        sid = data.get(self.STREAM_KEY)
        if sid is None or sid == self._stream_id:
            return True
        # A warning for the first one, debug after: a peer that always does it must not
        # write a log line per checkpoint.
        self._foreign_acks += 1
        logger.log(
            logging.WARNING if self._foreign_acks == 1 else logging.DEBUG,
            "plivo call %s: %s for stream %.64r, not this stream's %r: ignored (%d so far)",
            self._call_id(), data.get("event"), text_value(sid), self._stream_id,
            self._foreign_acks,
        )
        return False

    def _receive_error(self, data: dict[str, Any]) -> list[Event]:
        # Names from Plivo's own client; shapes UNCONFIRMED (protocols.md §3.2): lenient.
        reason = data.get("reason")
        if reason is None:
            reason = data.get("error")
        return [
            ProviderErrorReported(
                None, data["event"], None if reason is None else text_value(reason)
            )
        ]

    def _media_template(self, call: CallInfo) -> tuple[str, str]:
        fmt = call.outbound_format
        return (
            '{"event":"playAudio","streamId":'
            + json.dumps(call.stream_id)
            + ',"media":{"contentType":"'
            + _CONTENT_TYPES[fmt.encoding]
            + '","sampleRate":'
            + str(fmt.sample_rate)
            + ',"payload":"',
            '"}}',
        )

    def _mark_message(self, name: str) -> str:
        return dumps({"event": "checkpoint", "streamId": self._stream_id, "name": name})

    def _clear_message(self) -> str:
        return dumps({"event": "clearAudio", "streamId": self._stream_id})

    def _dtmf_message(self, digits: str) -> str:
        return dumps({"event": "sendDTMF", "dtmf": digits})
