"""Plivo Voice REST: place, hang up, cancel, transfer, DTMF, record calls.

``https://api.plivo.com/v1/Account/{auth_id}/...`` with HTTP Basic ``auth_id:auth_token``,
JSON bodies and a trailing slash on every path (protocols.md §3.6). Hang-up is
``DELETE …/Call/{uuid}/`` (204); 404 means the call is already over: success.
"""

from __future__ import annotations

from typing import Any

from .rest import RestClient, RestResponse, path_segment, raise_for_status

__all__ = ["PlivoClient"]


class PlivoClient:
    """Plivo Voice REST (``/v1/Account/{auth_id}/...``, JSON, trailing slashes)."""

    provider = "plivo"

    def __init__(self, rest: RestClient, auth_id: str) -> None:
        self.rest = rest
        self.auth_id = auth_id
        self._prefix = f"/v1/Account/{path_segment(auth_id)}"

    async def create_call(
        self,
        to: str,
        from_: str,
        *,
        answer_url: str,
        answer_method: str = "POST",
        ring_timeout: int | None = None,
        time_limit: int | None = None,
    ) -> str:
        """Place a call whose answer XML comes from ``answer_url``; returns ``request_uuid``.

        Plivo has no inline XML, and the CallUUID is learned only from the answer request
        (its ``ALegRequestUUID`` equals the ``request_uuid`` returned here).
        """
        body: dict[str, Any] = {
            "from": from_,
            "to": to,
            "answer_url": answer_url,
            "answer_method": answer_method,
        }
        if ring_timeout is not None:
            body["ring_timeout"] = ring_timeout
        if time_limit is not None:
            body["time_limit"] = time_limit
        return await self.rest.create_call(f"{self._prefix}/Call/", "request_uuid", json=body)

    async def hangup(self, call_uuid: str) -> None:
        """End the call (``DELETE …/Call/{uuid}/``, 204); 404 means it already ended."""
        await self._delete(f"/Call/{path_segment(call_uuid)}/", "hang up", call_uuid)

    async def cancel(self, request_uuid: str) -> None:
        """Cancel a call that has not been answered yet (``DELETE …/Request/{uuid}/``)."""
        await self._delete(f"/Request/{path_segment(request_uuid)}/", "cancel", request_uuid)

    async def transfer(
        self, call_uuid: str, *, aleg_url: str, aleg_method: str = "POST"
    ) -> None:
        """Move the caller to the XML served at ``aleg_url``."""
        body = {"legs": "aleg", "aleg_url": aleg_url, "aleg_method": aleg_method}
        await self._post(f"/Call/{path_segment(call_uuid)}/", body, "transfer", call_uuid)

    async def send_dtmf(self, call_uuid: str, digits: str, *, leg: str = "aleg") -> None:
        """Play DTMF digits into the call."""
        body = {"digits": digits, "leg": leg}
        await self._post(f"/Call/{path_segment(call_uuid)}/DTMF/", body, "send dtmf", call_uuid)

    async def start_recording(self, call_uuid: str, **options: Any) -> str | None:
        """Start recording; returns Plivo's ``recording_id`` when it sends one."""
        response = await self._post(
            f"/Call/{path_segment(call_uuid)}/Record/", dict(options), "start recording", call_uuid
        )
        body = response.body
        value = body.get("recording_id") if isinstance(body, dict) else None
        return value if isinstance(value, str) else None

    async def stop_recording(self, call_uuid: str) -> None:
        """Stop every recording of the call."""
        await self._delete(f"/Call/{path_segment(call_uuid)}/Record/", "stop recording", call_uuid)

    async def _post(
        self, path: str, body: dict[str, Any], operation: str, call_id: str
    ) -> RestResponse:
        return await self.rest.send(
            "POST", self._prefix + path, operation=operation, call_id=call_id, json=body
        )

    async def _delete(self, path: str, operation: str, call_id: str) -> None:
        response = await self.rest.request(
            "DELETE", self._prefix + path, operation=operation, call_id=call_id
        )
        if response.status == 404:
            return
        raise_for_status(response, self.provider, operation, call_id)
