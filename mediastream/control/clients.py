"""Async REST clients for call control: Twilio, Telnyx, Plivo, and one front door.

Each client wraps a :class:`~mediastream.control.rest.RestClient` (timeouts, retries,
logging) and speaks its provider's API as protocols.md §1.6, §2.6, §3.6 describe:

=========  ============================  ==================  ==============================
provider   auth / body                   hang up             "already ended" (success)
=========  ============================  ==================  ==============================
Twilio     Basic SID:token, form         POST Calls/{sid}    404 code 20404, 400 code 21220
                                         Status=completed
Telnyx     Bearer key, JSON              POST actions/hangup 422 code "90018"
Plivo      Basic id:token, JSON, ``/``   DELETE Call/{id}/   404
=========  ============================  ==================  ==============================

Hang-up is idempotent. Call Control actions carry a ``command_id`` that stays the same
across retries of one action, so Telnyx drops a duplicate (its documented purpose).
Creating a call is not retried on 5xx or lost connections (it may have been placed).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from ..config import Config, ProviderCredentials
from ..errors import MediaStreamError
from ..protocols.events import CallInfo
from .documents import twiml_dial
from .rest import ProviderAPIError, RestClient, RestResponse

__all__ = [
    "ControlUnavailable",
    "PlivoClient",
    "ProviderClients",
    "TelnyxClient",
    "TelnyxStreamOptions",
    "TwilioClient",
]

#: Creating a call is retried only when the provider says it did nothing (429, 503).
_CREATE_RETRY_STATUSES = frozenset({429, 503})

Sleep = Callable[[float], Awaitable[None]]


class ControlUnavailable(MediaStreamError):
    """The operation needs credentials that are not configured, or the provider lacks it."""


def _segment(value: str) -> str:
    # Call ids go into URL paths: quote everything but unreserved chars and ':'
    # (Telnyx ids look like "v3:..."; ':' is a valid path character, RFC 3986 §3.3).
    return quote(value, safe=":")


def basic_authorization(login: str, password: str) -> str:
    """An ``Authorization: Basic`` value (RFC 7617), UTF-8 credentials."""
    raw = f"{login}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _fail(response: RestResponse, provider: str, operation: str, call_id: str | None) -> None:
    if not response.ok:
        code, detail = response.error_details()
        raise ProviderAPIError(provider, operation, call_id, response.status, code, detail)


def _field(response: RestResponse, provider: str, operation: str, *path: str) -> str:
    node: Any = response.body
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, str) or not node:
        raise ProviderAPIError(
            provider, operation, None, response.status, detail=f"response lacks {'.'.join(path)}"
        )
    return node


# ---------------------------------------------------------------------------- Twilio


class TwilioClient:
    """Twilio Programmable Voice REST (``/2010-04-01/Accounts/{AccountSid}/...``)."""

    provider = "twilio"

    def __init__(self, rest: RestClient, account_sid: str) -> None:
        self.rest = rest
        self.account_sid = account_sid
        self._prefix = f"/2010-04-01/Accounts/{_segment(account_sid)}"

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
        response = await self.rest.request(
            "POST",
            f"{self._prefix}/Calls.json",
            operation="create call",
            form=form,
            retry_statuses=_CREATE_RETRY_STATUSES,
            retry_connection_errors=False,
        )
        _fail(response, self.provider, "create call", None)
        return _field(response, self.provider, "create call", "sid")

    async def hangup(self, call_sid: str) -> None:
        """End the call; a call that already ended (20404, 21220) counts as success.

        ``Status=completed`` hangs up a call in any live state, queued and ringing
        included (``canceled`` would leave an answered call up), per Twilio's "modify a
        live call" reference.
        """
        response = await self._update(call_sid, [("Status", "completed")], "hang up")
        code, _ = response.error_details()
        if response.ok or (response.status, code) in ((404, "20404"), (400, "21220")):
            return
        _fail(response, self.provider, "hang up", call_sid)

    async def redirect(
        self, call_sid: str, *, url: str | None = None, twiml: str | None = None
    ) -> None:
        """Replace the call's TwiML (ends the current ``<Connect><Stream>``)."""
        if (twiml is None) == (url is None):
            raise ValueError("give exactly one of twiml and url")
        form = [("Twiml", twiml)] if twiml is not None else [("Url", url or ""), ("Method", "POST")]
        response = await self._update(call_sid, form, "redirect")
        _fail(response, self.provider, "redirect", call_sid)

    async def transfer(self, call_sid: str, to: str) -> None:
        """Connect the caller to ``to`` (a number or SIP URI) with ``<Dial>``."""
        response = await self._update(call_sid, [("Twiml", twiml_dial(to))], "transfer")
        _fail(response, self.provider, "transfer", call_sid)

    async def start_recording(
        self, call_sid: str, *, channels: str = "dual", status_callback: str | None = None
    ) -> str:
        """Start recording the live call; returns the recording SID (``RE…``)."""
        form = [("RecordingChannels", channels)]
        if status_callback:
            form.append(("RecordingStatusCallback", status_callback))
        response = await self.rest.request(
            "POST",
            f"{self._prefix}/Calls/{_segment(call_sid)}/Recordings.json",
            operation="start recording",
            call_id=call_sid,
            form=form,
        )
        _fail(response, self.provider, "start recording", call_sid)
        return _field(response, self.provider, "start recording", "sid")

    async def stop_recording(self, call_sid: str, recording_sid: str = "Twilio.CURRENT") -> None:
        """Stop a recording (``Twilio.CURRENT``: the call's current one)."""
        response = await self.rest.request(
            "POST",
            f"{self._prefix}/Calls/{_segment(call_sid)}/Recordings/{_segment(recording_sid)}.json",
            operation="stop recording",
            call_id=call_sid,
            form=[("Status", "stopped")],
        )
        _fail(response, self.provider, "stop recording", call_sid)

    async def _update(
        self, call_sid: str, form: list[tuple[str, str]], operation: str
    ) -> RestResponse:
        return await self.rest.request(
            "POST",
            f"{self._prefix}/Calls/{_segment(call_sid)}.json",
            operation=operation,
            call_id=call_sid,
            form=form,
        )


# ---------------------------------------------------------------------------- Telnyx


@dataclass(frozen=True, slots=True)
class TelnyxStreamOptions:
    """The ``stream_*`` fields of Call Control dial/answer (protocols.md §2.6)."""

    url: str
    codec: str = "PCMU"
    sample_rate: int = 8000

    def fields(self) -> dict[str, Any]:
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
        response = await self.rest.request(
            "POST",
            f"/v2/texml/calls/{_segment(app)}",
            operation="create call",
            json={"From": from_, "To": to, "Texml": texml},
            retry_statuses=_CREATE_RETRY_STATUSES,
            retry_connection_errors=False,
        )
        _fail(response, self.provider, "create call", None)
        return _field(response, self.provider, "create call", "call_sid")

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
        response = await self.rest.request(
            "POST",
            "/v2/calls",
            operation="create call",
            json=body,
            retry_statuses=_CREATE_RETRY_STATUSES,
            retry_connection_errors=False,
        )
        _fail(response, self.provider, "create call", None)
        return _field(response, self.provider, "create call", "data", "call_control_id")

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
        _fail(response, self.provider, "hangup", call_control_id)

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
        _fail(response, self.provider, action, call_control_id)

    async def _send(self, call_control_id: str, action: str, body: dict[str, Any]) -> RestResponse:
        # Same command_id on every retry: Telnyx ignores a repeated command for a call.
        payload = {**body, "command_id": str(uuid.uuid4())}
        return await self.rest.request(
            "POST",
            f"/v2/calls/{_segment(call_control_id)}/actions/{action}",
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


# ----------------------------------------------------------------------------- Plivo


class PlivoClient:
    """Plivo Voice REST (``/v1/Account/{auth_id}/...``, JSON, trailing slashes)."""

    provider = "plivo"

    def __init__(self, rest: RestClient, auth_id: str) -> None:
        self.rest = rest
        self.auth_id = auth_id
        self._prefix = f"/v1/Account/{_segment(auth_id)}"

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
        response = await self.rest.request(
            "POST",
            f"{self._prefix}/Call/",
            operation="create call",
            json=body,
            retry_statuses=_CREATE_RETRY_STATUSES,
            retry_connection_errors=False,
        )
        _fail(response, self.provider, "create call", None)
        return _field(response, self.provider, "create call", "request_uuid")

    async def hangup(self, call_uuid: str) -> None:
        """End the call (``DELETE …/Call/{uuid}/``, 204); 404 means it already ended."""
        await self._delete(f"/Call/{_segment(call_uuid)}/", "hang up", call_uuid)

    async def cancel(self, request_uuid: str) -> None:
        """Cancel a call that has not been answered yet (``DELETE …/Request/{uuid}/``)."""
        await self._delete(f"/Request/{_segment(request_uuid)}/", "cancel", request_uuid)

    async def transfer(
        self, call_uuid: str, *, aleg_url: str, aleg_method: str = "POST"
    ) -> None:
        """Move the caller to the XML served at ``aleg_url``."""
        body = {"legs": "aleg", "aleg_url": aleg_url, "aleg_method": aleg_method}
        await self._post(f"/Call/{_segment(call_uuid)}/", body, "transfer", call_uuid)

    async def send_dtmf(self, call_uuid: str, digits: str, *, leg: str = "aleg") -> None:
        """Play DTMF digits into the call."""
        body = {"digits": digits, "leg": leg}
        await self._post(f"/Call/{_segment(call_uuid)}/DTMF/", body, "send dtmf", call_uuid)

    async def start_recording(self, call_uuid: str, **options: Any) -> str | None:
        """Start recording; returns Plivo's ``recording_id`` when it sends one."""
        response = await self._post(
            f"/Call/{_segment(call_uuid)}/Record/", dict(options), "start recording", call_uuid
        )
        body = response.body
        value = body.get("recording_id") if isinstance(body, dict) else None
        return value if isinstance(value, str) else None

    async def stop_recording(self, call_uuid: str) -> None:
        """Stop every recording of the call."""
        await self._delete(f"/Call/{_segment(call_uuid)}/Record/", "stop recording", call_uuid)

    async def _post(
        self, path: str, body: dict[str, Any], operation: str, call_id: str
    ) -> RestResponse:
        response = await self.rest.request(
            "POST", self._prefix + path, operation=operation, call_id=call_id, json=body
        )
        _fail(response, self.provider, operation, call_id)
        return response

    async def _delete(self, path: str, operation: str, call_id: str) -> None:
        response = await self.rest.request(
            "DELETE", self._prefix + path, operation=operation, call_id=call_id
        )
        if response.status == 404:
            return
        _fail(response, self.provider, operation, call_id)


# ------------------------------------------------------------------------ front door


class ProviderClients:
    """The three clients over one :class:`aiohttp.ClientSession`, built from credentials.

    A provider whose credentials are missing has no client (its attribute is ``None``);
    asking it for anything raises :class:`ControlUnavailable` naming the variables to set.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        credentials: ProviderCredentials,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.25,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.http = http
        self.credentials = credentials

        def rest(provider: str, base: str, **kwargs: Any) -> RestClient:
            return RestClient(
                http,
                provider=provider,
                base_url=base,
                timeout=timeout,
                retries=retries,
                backoff=backoff,
                sleep=sleep,
                **kwargs,
            )

        c = credentials
        self.twilio: TwilioClient | None = None
        if c.twilio_account_sid and c.twilio_auth_token:
            headers = {
                "Authorization": basic_authorization(c.twilio_account_sid, c.twilio_auth_token)
            }
            self.twilio = TwilioClient(
                rest("twilio", c.twilio_api_base_url, headers=headers), c.twilio_account_sid
            )
        self.telnyx: TelnyxClient | None = None
        if c.telnyx_api_key:
            headers = {"Authorization": f"Bearer {c.telnyx_api_key}"}
            self.telnyx = TelnyxClient(
                rest("telnyx", c.telnyx_api_base_url, headers=headers), c.telnyx_connection_id
            )
        self.plivo: PlivoClient | None = None
        if c.plivo_auth_id and c.plivo_auth_token:
            headers = {"Authorization": basic_authorization(c.plivo_auth_id, c.plivo_auth_token)}
            self.plivo = PlivoClient(
                rest("plivo", c.plivo_api_base_url, headers=headers), c.plivo_auth_id
            )

    @classmethod
    def from_config(
        cls, http: aiohttp.ClientSession, config: Config, **kwargs: Any
    ) -> ProviderClients:
        """Clients with ``config``'s credentials, timeout and retry count."""
        options: dict[str, Any] = {"timeout": config.rest_timeout, "retries": config.rest_retries}
        options.update(kwargs)
        return cls(http, config.credentials, **options)

    def configured(self, provider: str) -> bool:
        """True when ``provider`` has REST credentials."""
        return getattr(self, provider, None) is not None

    def require_twilio(self) -> TwilioClient:
        if self.twilio is None:
            raise ControlUnavailable("twilio: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        return self.twilio

    def require_telnyx(self) -> TelnyxClient:
        if self.telnyx is None:
            raise ControlUnavailable("telnyx: set TELNYX_API_KEY")
        return self.telnyx

    def require_plivo(self) -> PlivoClient:
        if self.plivo is None:
            raise ControlUnavailable("plivo: set PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN")
        return self.plivo

    async def hangup(self, info: CallInfo) -> None:
        """Hang up ``info``'s call through its provider; idempotent.

        Raises :class:`ControlUnavailable` without credentials and
        :class:`~mediastream.control.rest.ProviderAPIError` when the provider refuses.
        """
        if info.provider == "twilio":
            await self.require_twilio().hangup(info.call_id)
        elif info.provider == "telnyx":
            await self.require_telnyx().hangup(info.call_id)
        elif info.provider == "plivo":
            await self.require_plivo().hangup(info.call_id)
        else:  # pragma: no cover - ProviderName is a closed set
            raise ControlUnavailable(f"unknown provider {info.provider!r}")

    async def send_dtmf(self, info: CallInfo, digits: str) -> None:
        """Play DTMF into the call over REST (Telnyx, Plivo).

        Twilio has no REST DTMF that keeps a ``<Connect><Stream>`` running (a TwiML
        ``<Play digits>`` update would end the stream), so it raises ControlUnavailable.
        """
        if info.provider == "telnyx":
            await self.require_telnyx().send_dtmf(info.call_id, digits)
        elif info.provider == "plivo":
            await self.require_plivo().send_dtmf(info.call_id, digits)
        else:
            raise ControlUnavailable(
                f"{info.provider}: no REST DTMF that keeps the media stream running"
            )

    async def create_call(
        self,
        provider: str,
        to: str,
        from_: str,
        *,
        document: str | None = None,
        answer_url: str | None = None,
        telnyx_stream: TelnyxStreamOptions | None = None,
        client_state: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Place a call; returns the provider's id for it.

        * Twilio: ``document`` (inline TwiML) or ``answer_url``; returns the CallSid.
        * Telnyx: ``document`` (inline TeXML, TeXML application) or ``telnyx_stream``
          (Call Control dial); returns the call control id.
        * Plivo: ``answer_url`` (required: Plivo has no inline XML); returns the
          ``request_uuid``.
        """
        options = dict(extra or {})
        if provider == "twilio":
            return await self.require_twilio().create_call(
                to, from_, twiml=document, url=answer_url, **options
            )
        if provider == "telnyx":
            telnyx = self.require_telnyx()
            if telnyx_stream is not None:
                return await telnyx.dial(
                    to, from_, stream=telnyx_stream, client_state=client_state, **options
                )
            if document is None:
                raise ValueError("telnyx: give document (TeXML) or telnyx_stream")
            return await telnyx.create_texml_call(to, from_, texml=document, **options)
        if provider == "plivo":
            if answer_url is None:
                raise ValueError("plivo: answer_url is required")
            return await self.require_plivo().create_call(
                to, from_, answer_url=answer_url, **options
            )
        raise ValueError(f"unknown provider {provider!r}")
