"""Telnyx Call Control and TeXML REST: dial, answer, hang up, transfer, DTMF, record.

``https://api.telnyx.com/v2/...`` with ``Authorization: Bearer <API key>`` and JSON
bodies (protocols.md §2.6). Every Call Control action carries a ``command_id`` that stays
the same across retries of that action, so Telnyx drops a duplicate (its documented
purpose). Hang-up of a call that already ended answers 422 with code ``"90018"``
(a string in JSON): success.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from .rest import ControlUnavailable, RestClient, RestResponse, path_segment, raise_for_status

__all__ = ["TelnyxClient", "TelnyxStreamOptions"]


@dataclass(frozen=True, slots=True)
class TelnyxStreamOptions:
    """The ``stream_*`` fields of Call Control dial/answer (protocols.md §2.6)."""

    url: str
    codec: str = "PCMU"
    sample_rate: int = 8000
    #: Fork both tracks, nothing played back (a listen-only agent).
    listen_only: bool = False

    def fields(self) -> dict[str, Any]:
        if self.listen_only:
            return {
                "stream_url": self.url,
                "stream_track": "both_tracks",
                "stream_codec": self.codec,
            }
        return {
            "stream_url": self.url,
            "stream_track": "inbound_track",
            "stream_codec": self.codec,
            "stream_bidirectional_mode": "rtp",
            "stream_bidirectional_codec": self.codec,
            "stream_bidirectional_sampling_rate": self.sample_rate,
            "stream_bidirectional_target_legs": "self",
        }


class TelnyxClient:
    """Telnyx Call Control and TeXML REST (``/v2/...``)."""

    provider = "telnyx"

    def __init__(self, rest: RestClient, connection_id: str | None = None) -> None:
        self.rest = rest
        self.connection_id = connection_id

    def _connection(self, connection_id: str | None) -> str:
        chosen = connection_id or self.connection_id
        if not chosen:
            raise ControlUnavailable("telnyx: set TELNYX_CONNECTION_ID (the application id)")
        return chosen

    async def create_texml_call(
        self, to: str, from_: str, *, texml: str, connection_id: str | None = None
    ) -> str:
        """Place a call running inline ``texml`` through a TeXML application.

        ``POST /v2/texml/calls/{connection_id}`` answers a flat object whose ``call_sid``
        is the call control id. Returns it.
        """
        app = self._connection(connection_id)
        return await self.rest.create_call(
            f"/v2/texml/calls/{path_segment(app)}",
            "call_sid",
            json={"From": from_, "To": to, "Texml": texml},
        )

    async def dial(
        self,
        to: str,
        from_: str,
        *,
        stream: TelnyxStreamOptions,
        client_state: str | None = None,
        connection_id: str | None = None,
    ) -> str:
        """Place a Call Control call that streams to ``stream.url``; returns its id."""
        body: dict[str, Any] = {
            "connection_id": self._connection(connection_id),
            "to": to,
            "from": from_,
            **stream.fields(),
        }
        if client_state:
            body["client_state"] = client_state
        return await self.rest.create_call("/v2/calls", "data", "call_control_id", json=body)

    async def answer(
        self, call_control_id: str, *, stream: TelnyxStreamOptions, client_state: str | None = None
    ) -> None:
        """Answer an inbound Call Control call, streaming to ``stream.url`` at once."""
        body: dict[str, Any] = dict(stream.fields())
        if client_state:
            body["client_state"] = client_state
        await self._action(call_control_id, "answer", body)

    async def hangup(self, call_control_id: str) -> None:
        """End the call; 422 code ``"90018"`` (already ended) counts as success."""
        response = await self._send(call_control_id, "hangup", {})
        if response.status == 422 and "90018" in _telnyx_codes(response.body):
            return
        raise_for_status(response, self.provider, "hangup", call_control_id)

    async def transfer(self, call_control_id: str, to: str, *, from_: str | None = None) -> None:
        """Transfer the call to ``to`` (number or SIP URI)."""
        body = {"to": to, **({"from": from_} if from_ else {})}
        await self._action(call_control_id, "transfer", body)

    async def send_dtmf(
        self, call_control_id: str, digits: str, *, duration_millis: int | None = None
    ) -> None:
        """Play DTMF digits into the call (``0-9 * # A-D``, ``w``/``W`` pauses)."""
        body: dict[str, Any] = {"digits": digits}
        if duration_millis is not None:
            body["duration_millis"] = duration_millis
        await self._action(call_control_id, "send_dtmf", body)

    async def start_recording(
        self, call_control_id: str, *, format: str = "mp3", channels: str = "single"
    ) -> None:
        """Start recording the call (``record_start``; format and channels are required)."""
        body = {"format": format, "channels": channels}
        await self._action(call_control_id, "record_start", body)

    async def stop_recording(self, call_control_id: str) -> None:
        """Stop recording the call."""
        await self._action(call_control_id, "record_stop", {})

    async def _action(self, call_control_id: str, action: str, body: dict[str, Any]) -> None:
        response = await self._send(call_control_id, action, body)
        raise_for_status(response, self.provider, action, call_control_id)

    async def _send(self, call_control_id: str, action: str, body: dict[str, Any]) -> RestResponse:
        # Same command_id on every retry: Telnyx ignores a repeated command for a call.
        payload = {**body, "command_id": str(uuid.uuid4())}
        return await self.rest.request(
            "POST",
            f"/v2/calls/{path_segment(call_control_id)}/actions/{action}",
            operation=action,
            call_id=call_control_id,
            json=payload,
        )


def _telnyx_codes(body: Any) -> set[str]:
    # The code is a JSON string ("90018"); some clients see an int. Compare as text.
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return set()
    return {str(e.get("code")) for e in errors if isinstance(e, dict)}
