"""``POST /dialout``: place an outbound call whose media comes to one of our agents.

Request (JSON, ``Authorization: Bearer <MEDIASTREAM_API_TOKEN>``)::

    {"provider": "twilio" | "telnyx" | "plivo", "to": "+15551230001",
     "from": "+15559870002", "agent": "sales", "params": {"tenant": "acme"}}

Response ``201 {"provider": ..., "call_id": ..., "status": "queued"}``; for Plivo the id
is the ``request_uuid`` (the CallUUID exists only once the callee answers).

How the call reaches the bot, per provider (protocols.md §1.6, §2.6, §3.6):

* Twilio: ``Calls.json`` with inline ``Twiml`` (``<Connect><Stream>`` + ``<Parameter>``s).
* Telnyx: ``config.telnyx_dialout_api == "texml"``: ``/v2/texml/calls/{connection_id}``
  with inline ``Texml``; ``"call_control"``: ``/v2/calls`` with ``stream_*`` fields and the
  parameters in the stream URL's query.
* Plivo: ``Call/`` with ``answer_url`` pointing at our ``/plivo`` with the parameters
  signed into ``?_dialout=`` (Plivo has no inline XML).

Errors: 404 when dial-out is off (no API token configured), 401 for a missing or wrong
token (compared in constant time), 400 with ``{"error", "field"}`` for invalid input,
503 when the provider's credentials are missing, 502 when the provider refuses.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ..config import Config
from .auth import stream_tokens
from .clients import ControlUnavailable, ProviderClients, TelnyxStreamOptions
from .documents import (
    MAX_NAME_LENGTH,
    MAX_PARAMETERS,
    MAX_VALUE_LENGTH,
    texml_connect_stream,
    twiml_connect_stream,
)
from .requests import HttpRequest
from .rest import ProviderAPIError
from .urls import Origin, stream_url
from .webhooks import (
    DIALOUT_PARAMETER,
    AgentLookup,
    RequestRefused,
    read_body,
    request_origin,
    resolve_agent,
    status_callback_url,
)

__all__ = ["DialOut", "DialoutHandler", "parse_dialout"]

logger = logging.getLogger("mediastream.control")

MAX_DIALOUT_BODY = 16 * 1024
_PROVIDERS = ("twilio", "telnyx", "plivo")
# E.164 (ITU-T E.164: up to 15 digits, no leading zero) or a SIP URI.
_E164 = re.compile(r"\+?[1-9][0-9]{1,14}")
_SIP = re.compile(r"sips?:[^\s<>\"]{1,250}")
_PARAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class DialOut:
    """A validated dial-out request."""

    provider: str
    to: str
    from_: str
    agent: str | None
    params: dict[str, str]


def _bad(message: str, field: str | None) -> RequestRefused:
    return RequestRefused(400, message, field)


def _number(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(f"{field} must be a phone number (E.164) or a SIP URI", field)
    text = value.strip()
    if not (_E164.fullmatch(text) or _SIP.fullmatch(text)):
        raise _bad(f"{field}: {text[:40]!r} is not an E.164 number or SIP URI", field)
    return text


def parse_dialout(body: Any, agents: AgentLookup | None) -> DialOut:
    """Validate a decoded JSON body; raises :class:`RequestRefused` 400 naming the field."""
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object", None)
    provider = body.get("provider")
    if provider not in _PROVIDERS:
        raise _bad("provider must be one of twilio, telnyx, plivo", "provider")
    to = _number(body.get("to"), "to")
    from_ = _number(body.get("from"), "from")
    agent_value = body.get("agent")
    agent: str | None = None
    if agent_value is not None:
        if not isinstance(agent_value, str):
            raise _bad("agent must be a string", "agent")
        try:
            agent = resolve_agent({"agent": agent_value}, agents)
        except RequestRefused as exc:
            raise _bad(exc.message, "agent") from None
    raw_params = body.get("params", {})
    if raw_params is None:
        raw_params = {}
    if not isinstance(raw_params, dict):
        raise _bad("params must be a JSON object of strings", "params")
    if len(raw_params) > MAX_PARAMETERS:
        raise _bad(f"at most {MAX_PARAMETERS} params", "params")
    params: dict[str, str] = {}
    for name, value in raw_params.items():
        where = f"params.{name}"[:80]
        if not _PARAM_NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
            raise _bad(
                "param names: letters, digits, '_', '.', '-', not starting with '_' "
                "or punctuation, at most 64",
                where,
            )
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        if not isinstance(value, str):
            raise _bad("param values must be strings, numbers or booleans", where)
        if len(value) > MAX_VALUE_LENGTH:
            raise _bad(f"param values are at most {MAX_VALUE_LENGTH} characters", where)
        params[name] = value
    return DialOut(provider, to, from_, agent, params)


class DialoutHandler:
    """The ``POST /dialout`` handler (mounted by routes.py)."""

    def __init__(
        self, config: Config, agents: AgentLookup | None, clients: ProviderClients | None
    ) -> None:
        self.config = config
        self.agents = agents
        self.clients = clients

    async def handle(self, request: HttpRequest) -> web.StreamResponse:
        """Place the call the request describes (see the module docstring)."""
        try:
            self._authorize(request)
            body = await self._json(request, self.config.head_timeout)
            dial = parse_dialout(body, self.agents)
            origin = request_origin(
                self.config, request, "cannot tell the public URL: set MEDIASTREAM_PUBLIC_URL"
            )
            call_id = await self._place(dial, origin)
        except RequestRefused as exc:
            payload: dict[str, Any] = {"error": exc.message}
            if exc.field is not None:
                payload["field"] = exc.field
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return web.json_response(payload, status=exc.status, headers=headers)
        except ControlUnavailable as exc:
            logger.error("dial-out refused: %s", exc)
            return web.json_response({"error": str(exc)}, status=503)
        except ProviderAPIError as exc:
            logger.error("dial-out failed: %s", exc)
            return web.json_response(
                {"error": str(exc), "provider_status": exc.status, "provider_code": exc.code},
                status=502,
            )
        result = {"provider": dial.provider, "call_id": call_id, "status": "queued"}
        if dial.provider == "plivo":
            result["request_uuid"] = call_id
        logger.info(
            "dial-out %s call=%s to=%s agent=%s", dial.provider, call_id, dial.to, dial.agent or "-"
        )
        return web.json_response(result, status=201)

    def _authorize(self, request: HttpRequest) -> None:
        expected = self.config.api_token
        if not expected:
            raise RequestRefused(404, "dial-out disabled: set MEDIASTREAM_API_TOKEN to enable it")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # Constant-time comparison of the bearer token (no early exit on a prefix).
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8"), expected.encode("utf-8")
        ):
            logger.warning(
                "dial-out refused from %s: missing or wrong bearer token", request.remote
            )
            raise RequestRefused(401, "missing or wrong bearer token")

    @staticmethod
    async def _json(request: HttpRequest, timeout: float) -> Any:
        raw = await read_body(request, MAX_DIALOUT_BODY, timeout)
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise _bad("the body is not valid JSON", None) from None

    async def _place(self, dial: DialOut, origin: Origin) -> str:
        if self.clients is None:
            raise ControlUnavailable(f"{dial.provider}: no REST clients configured")
        tokens = stream_tokens(self.config)
        parameters = {"from": dial.from_, "to": dial.to, **dial.params}
        if dial.provider == "twilio":
            twilio = self.clients.require_twilio()
            # The call SID is unknown until Twilio answers this request: the token is
            # issued unbound (single use, short-lived; tokens.py).
            document = twiml_connect_stream(
                stream_url(origin, "twilio", agent=dial.agent),
                {**parameters, "_token": tokens.issue("twilio")},
                status_callback=status_callback_url(self.config, origin, "twilio"),
            )
            if len(document) > 4000:
                raise _bad("params too large for Twilio's inline TwiML (4000 chars)", "params")
            return await twilio.create_call(dial.to, dial.from_, twiml=document)
        if dial.provider == "telnyx":
            telnyx = self.clients.require_telnyx()
            token = tokens.issue("telnyx")
            if self.config.telnyx_dialout_api == "call_control":
                url = stream_url(
                    origin, "telnyx", agent=dial.agent, query={"token": token, **parameters}
                )
                options = TelnyxStreamOptions(
                    url,
                    codec=self.config.telnyx_call_control_codec,
                    sample_rate=self.config.telnyx_call_control_sample_rate,
                )
                return await telnyx.dial(dial.to, dial.from_, stream=options)
            document = texml_connect_stream(
                stream_url(origin, "telnyx", agent=dial.agent, query={"token": token}),
                {**parameters, "_token": token},
                codec=self.config.telnyx_texml_codec,
                status_callback=status_callback_url(self.config, origin, "telnyx"),
            )
            return await telnyx.create_texml_call(dial.to, dial.from_, texml=document)
        plivo = self.clients.require_plivo()
        packed = dict(dial.params)
        if dial.agent:
            packed["_agent"] = dial.agent
        # The answer request comes once the callee picks up: allow ringing time.
        blob = tokens.sign_params(packed, ttl=max(self.config.stream_token_ttl, 600.0))
        answer_url = origin.http_url("/plivo") + "?" + urlencode({DIALOUT_PARAMETER: blob})
        # Plivo numbers are digits with the country code and no '+' (§3.6).
        return await plivo.create_call(
            dial.to.removeprefix("+"), dial.from_.removeprefix("+"), answer_url=answer_url
        )

