"""Twilio Programmable Voice REST: place, hang up, redirect, transfer, record calls.

``https://api.twilio.com/2010-04-01/Accounts/{AccountSid}/...`` with HTTP Basic
``AccountSid:AuthToken`` and form-encoded bodies (protocols.md §1.6). Hang-up is
``Status=completed`` (it ends a call in any live state); 404 code 20404 (unknown call)
and 400 code 21220 (not in progress) mean the call is already over: success.
"""

from __future__ import annotations

from collections.abc import Sequence

from .documents import twiml_dial
from .rest import RestClient, RestResponse, path_segment, raise_for_status, response_field

__all__ = ["TwilioClient"]


class TwilioClient:
    """Twilio Programmable Voice REST (``/2010-04-01/Accounts/{AccountSid}/...``)."""

    provider = "twilio"

    def __init__(self, rest: RestClient, account_sid: str) -> None:
        self.rest = rest
        self.account_sid = account_sid
        self._prefix = f"/2010-04-01/Accounts/{path_segment(account_sid)}"

    async def create_call(
        self,
        to: str,
        from_: str,
        *,
        twiml: str | None = None,
        url: str | None = None,
        method: str = "POST",
        status_callback: str | None = None,
        status_callback_events: Sequence[str] = (),
        timeout: int | None = None,
    ) -> str:
        """Place a call running ``twiml`` (inline, ≤ 4000 chars) or the TwiML at ``url``.

        Returns the call SID (``CA…``).
        """
        if (twiml is None) == (url is None):
            raise ValueError("give exactly one of twiml and url")
        form: list[tuple[str, str]] = [("To", to), ("From", from_)]
        if twiml is not None:
            if len(twiml) > 4000:  # error 32018 above this (protocols.md §1.6)
                raise ValueError(f"inline TwiML is {len(twiml)} chars; Twilio allows 4000")
            form.append(("Twiml", twiml))
        else:
            form += [("Url", url or ""), ("Method", method)]
        if status_callback:
            form.append(("StatusCallback", status_callback))
            form.append(("StatusCallbackMethod", "POST"))
            # One parameter per event: a single space-joined value is reported not to work.
            form += [("StatusCallbackEvent", event) for event in status_callback_events]
        if timeout is not None:
            form.append(("Timeout", str(timeout)))
        return await self.rest.create_call(f"{self._prefix}/Calls.json", "sid", form=form)

    async def hangup(self, call_sid: str) -> None:
        """End the call; a call that already ended (20404, 21220) counts as success.

        ``Status=completed`` hangs up a call in any live state, queued and ringing
        included (``canceled`` would leave an answered call up), per Twilio's "modify a
        live call" reference.
        """
        response = await self.rest.request(
            "POST",
            self._call_path(call_sid, ".json"),
            operation="hang up",
            call_id=call_sid,
            form=[("Status", "completed")],
        )
        code, _ = response.error_details()
        if response.ok or (response.status, code) in ((404, "20404"), (400, "21220")):
            return
        raise_for_status(response, self.provider, "hang up", call_sid)

    async def redirect(
        self, call_sid: str, *, url: str | None = None, twiml: str | None = None
    ) -> None:
        """Replace the call's TwiML (ends the current ``<Connect><Stream>``)."""
        if (twiml is None) == (url is None):
            raise ValueError("give exactly one of twiml and url")
        form = [("Twiml", twiml)] if twiml is not None else [("Url", url or ""), ("Method", "POST")]
        await self._post(call_sid, ".json", form, "redirect")

    async def transfer(self, call_sid: str, to: str) -> None:
        """Connect the caller to ``to`` (a number or SIP URI) with ``<Dial>``."""
        await self._post(call_sid, ".json", [("Twiml", twiml_dial(to))], "transfer")

    async def start_recording(
        self, call_sid: str, *, channels: str = "dual", status_callback: str | None = None
    ) -> str:
        """Start recording the live call; returns the recording SID (``RE…``)."""
        form = [("RecordingChannels", channels)]
        if status_callback:
            form.append(("RecordingStatusCallback", status_callback))
        response = await self._post(call_sid, "/Recordings.json", form, "start recording")
        return response_field(response, self.provider, "start recording", "sid")

    async def stop_recording(self, call_sid: str, recording_sid: str = "Twilio.CURRENT") -> None:
        """Stop a recording (``Twilio.CURRENT``: the call's current one)."""
        tail = f"/Recordings/{path_segment(recording_sid)}.json"
        await self._post(call_sid, tail, [("Status", "stopped")], "stop recording")

    def _call_path(self, call_sid: str, tail: str) -> str:
        return f"{self._prefix}/Calls/{path_segment(call_sid)}{tail}"

    async def _post(
        self, call_sid: str, tail: str, form: list[tuple[str, str]], operation: str
    ) -> RestResponse:
        """POST ``form`` to ``…/Calls/{sid}{tail}``; ProviderAPIError unless a 2xx."""
        path = self._call_path(call_sid, tail)
        return await self.rest.send(
            "POST", path, operation=operation, call_id=call_sid, form=form
        )
