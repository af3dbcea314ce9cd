"""Incoming-call webhooks: verify the provider, pick the agent, answer with a document.

``GET|POST /twilio``, ``/telnyx``, ``/plivo`` answer a provider's incoming-call request
(protocols.md §1.5, §2.5, §3.5) with TwiML, TeXML or Plivo XML that connects the call to
``wss://<public>/ws/<provider>[/<agent>]``, carrying the caller's ``from``/``to``, every
query parameter of the webhook URL, and a stream token bound to the call id.

Agent routing: ``?agent=NAME``, or Pipecat Cloud's ``?serviceHost=agent.org`` /
``?_pipecatCloudServiceHost=agent.org``. The agent goes into the stream path, which
every provider keeps. An agent the registry does not hold is a 404, never the default bot.

``POST /telnyx`` with a JSON body is a Call Control webhook: ``call.initiated`` for an
incoming call is answered over REST with the ``stream_*`` fields (Call Control is where
Telnyx documents L16); other events are acknowledged. ``/<provider>/stream-status``
receives stream status callbacks and logs them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

from aiohttp import web

from ..config import Config
from ..errors import AuthenticationError
from .auth import WebhookRequest, stream_tokens, verify_webhook
from .clients import ControlUnavailable, ProviderClients, TelnyxStreamOptions
from .documents import (
    MAX_NAME_LENGTH,
    MAX_PARAMETERS,
    MAX_VALUE_LENGTH,
    plivo_extra_headers,
    plivo_listen_stream,
    plivo_stream,
    texml_connect_stream,
    texml_start_stream,
    twiml_connect_stream,
    twiml_start_stream,
)
from .requests import HttpRequest, mount_prefix
from .rest import ProviderAPIError
from .urls import Origin, public_origin, stream_url

__all__ = [
    "DIALOUT_PARAMETER",
    "AgentLookup",
    "ControlHandlers",
    "RequestRefused",
    "answer_document",
    "read_body",
    "request_origin",
    "resolve_agent",
    "status_callback_url",
]

logger = logging.getLogger("mediastream.control")

#: Query parameter of a Plivo dial-out answer URL carrying the signed dial-out params.
DIALOUT_PARAMETER = "_dialout"
#: Largest webhook body read (providers send a few hundred bytes of form data).
MAX_WEBHOOK_BODY = 64 * 1024
_AGENT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SERVICE_HOST_KEYS = ("_pipecatCloudServiceHost", "serviceHost")
#: Query names never forwarded as custom parameters (ours, or carried elsewhere).
_RESERVED = frozenset({"agent", "token", "_token", DIALOUT_PARAMETER})
#: Webhook fields providers send (as the query of a GET webhook): not custom parameters.
_PROVIDER_FIELDS = frozenset(
    {
        "AccountSid", "ApiVersion", "ApplicationSid", "CallSid", "CallSidLegacy",
        "CallStatus", "CallToken", "Called", "Caller", "CallerId", "CallerName",
        "CallbackSource", "ConnectionId", "Direction", "ForwardedFrom", "From", "To",
        "ParentCallSid", "SequenceNumber", "StirVerstat", "Timestamp", "ShakenStirAttestation",
        "ShakenStirValidated", "CallUUID", "ALegUUID", "ALegRequestUUID", "RequestUUID",
        "BillRate", "Event", "SessionStart", "STIRAttestation", "STIRVerification",
    }
)
_PROVIDER_FIELD_PREFIXES = ("From", "To", "Called", "Caller")
_CONTENT_TYPES = {"twilio": "text/xml", "telnyx": "text/xml", "plivo": "application/xml"}


class AgentLookup(Protocol):
    """What the control plane needs of the agent registry: membership by name."""

    def __contains__(self, name: object, /) -> bool: ...


class RequestRefused(Exception):
    """A webhook or API request is refused with ``status`` and a message for the client."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def resolve_agent(query: Mapping[str, str], agents: AgentLookup | None) -> str | None:
    """The agent a webhook names (``agent`` or ``serviceHost=agent.org``), checked.

    Raises :class:`RequestRefused` 400 for a malformed name, 404 for an unknown one.
    """
    name: str | None = None
    for key in _SERVICE_HOST_KEYS:
        host = query.get(key)
        if host:
            name = host.partition(".")[0]
            break
    else:
        name = query.get("agent") or None
    if name is None:
        return None
    if not _AGENT_NAME.fullmatch(name):
        raise RequestRefused(400, "agent names use letters, digits, '-' and '_' (at most 64)")
    if agents is not None and name not in agents:
        raise RequestRefused(404, f"unknown agent {name!r}: this server does not run it")
    return name


def operator_query(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The part of a GET webhook's query the operator wrote on the answer URL.

    A provider fetching an answer URL with GET appends its own fields to the URL's query
    (Twilio, TeXML, Plivo ``answer_method=GET``). Their names are not a closed list: a
    captured 2024 Plivo GET carries ``CountryCode``, ``ParentAuthID`` and ``RouteType``
    besides the documented ones, and forwarding those would hand the parent account id
    to the bot and spend Plivo's 512-byte ``extraHeaders`` budget. So the first field
    we know to be the provider's marks where its part begins, and no capitalised name
    from there on is the operator's, whether or not we know it: all three providers name
    their fields in PascalCase (``CallSid``, ``CallUUID``, ``X-PH-...``). A lower-case
    name there (``agent``, ``serviceHost``) is still the operator's, should a provider
    ever not append. A query with no known provider field (someone fetching the URL by
    hand) is all the operator's.
    """
    for index, (name, _value) in enumerate(pairs):
        if name in _PROVIDER_FIELDS:
            return pairs[:index] + [
                pair for pair in pairs[index:] if not pair[0][:1].isupper()
            ]
    return pairs


def forwarded_parameters(query: Mapping[str, str]) -> dict[str, str]:
    """Query parameters of the webhook URL that become custom parameters, bounded."""
    out: dict[str, str] = {}
    for name, value in query.items():
        if name in _RESERVED or name in _PROVIDER_FIELDS:
            continue
        if name.startswith(_PROVIDER_FIELD_PREFIXES) and name[:1].isupper():
            continue
        if not name or len(name) > MAX_NAME_LENGTH or len(value) > MAX_VALUE_LENGTH:
            logger.warning("webhook parameter %.64r dropped: too long", name)
            continue
        if len(out) >= MAX_PARAMETERS:
            logger.warning("webhook parameters beyond %d dropped", MAX_PARAMETERS)
            break
        out[name] = value
    return out


def request_origin(config: Config, request: HttpRequest, unknown: str) -> Origin:
    """The public origin ``request`` came to (:func:`~.urls.public_origin` with
    ``config``'s public URL and proxy trust); RequestRefused 400 ``unknown`` if untold."""
    origin = public_origin(
        config.public_url,
        config.trust_forwarded,
        scheme=request.scheme,
        headers=request.headers,
        fallback_host=request.host,
    )
    if origin is None:
        raise RequestRefused(400, unknown)
    return origin.below(mount_prefix(request))


def status_callback_url(config: Config, origin: Origin, provider: str) -> str | None:
    """Our ``/<provider>/stream-status`` URL, when stream status callbacks are on."""
    if not config.stream_status_callbacks:
        return None
    return origin.http_url(f"/{provider}/stream-status")


async def read_body(request: HttpRequest, limit: int, timeout: float | None = None) -> bytes:
    """The whole request body, refused with 413 beyond ``limit`` bytes and with 408 when
    it has not all arrived within ``timeout`` seconds (RFC 9110 §15.5.9).

    ``StreamReader.read(n)`` returns what has arrived so far, not ``n`` bytes: read to
    EOF, counting, so a body split across TCP segments is never truncated (a truncated
    body would fail its signature). aiohttp bounds no body read in time: without
    ``timeout`` a client announcing a body and sending it a byte at a time (slowloris)
    would hold its connection and handler for ever.
    """
    if request.content_length is not None and request.content_length > limit:
        raise RequestRefused(413, "request body too large")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(16 * 1024):
                size += len(chunk)
                if size > limit:
                    raise RequestRefused(413, "request body too large")
                chunks.append(chunk)
    except TimeoutError:
        logger.warning(
            "%s %s from %s: body not received within %gs (%d bytes so far)",
            request.method, request.path, request.remote, timeout, size,
        )
        raise RequestRefused(408, "request body not received in time") from None
    return b"".join(chunks)


def _first_values(pairs: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(name, value)
    return out


@dataclass(frozen=True, slots=True)
class _Incoming:
    """A read and verified webhook request."""

    origin: Origin
    query: dict[str, str]
    fields: dict[str, str]
    body: bytes
    is_json: bool


class ControlHandlers:
    """aiohttp handlers for the answer and status webhooks (mounted by routes.py)."""

    def __init__(
        self, config: Config, agents: AgentLookup | None, clients: ProviderClients | None
    ) -> None:
        self.config = config
        self.agents = agents
        self.clients = clients

    # ------------------------------------------------------------------ plumbing

    async def _read(self, request: HttpRequest, provider: str) -> _Incoming:
        body = await read_body(request, MAX_WEBHOOK_BODY, self.config.head_timeout)
        origin = request_origin(self.config, request, "cannot tell the public URL: no Host header")
        is_json = request.content_type == "application/json"
        form: list[tuple[str, str]] = []
        if request.method == "POST" and not is_json:
            form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        query_pairs = list(request.query.items())
        webhook = WebhookRequest(
            method=request.method,
            urls=origin.http_urls(request.raw_path),
            headers=request.headers,
            body=body,
            form=form,
        )
        try:
            verify_webhook(self.config, provider, webhook)
        except AuthenticationError as exc:
            call_id = _call_id(provider, _first_values(form or query_pairs))
            logger.warning(
                "%s webhook refused call=%s from %s: %s",
                provider, call_id or "-", request.remote, exc,
            )
            raise RequestRefused(403, "request authentication failed") from None
        if request.method == "POST":
            query = _first_values(query_pairs)
            fields = _first_values(form)
        else:
            query = _first_values(operator_query(query_pairs))
            fields = _first_values(query_pairs)
        return _Incoming(origin, query, fields, body, is_json)

    @staticmethod
    def _refusal(exc: RequestRefused) -> web.Response:
        return web.Response(status=exc.status, text=exc.message + "\n")

    # ------------------------------------------------------------------- answers

    async def twilio(self, request: HttpRequest) -> web.StreamResponse:
        """Answer a Twilio incoming-call webhook with ``<Connect><Stream>`` TwiML."""
        return await self._answer(request, "twilio")

    async def telnyx(self, request: HttpRequest) -> web.StreamResponse:
        """Answer a TeXML webhook, or handle a Call Control (JSON) webhook."""
        return await self._answer(request, "telnyx")

    async def plivo(self, request: HttpRequest) -> web.StreamResponse:
        """Answer a Plivo answer_url request with ``<Stream>`` XML."""
        return await self._answer(request, "plivo")

    async def _answer(self, request: HttpRequest, provider: str) -> web.StreamResponse:
        try:
            incoming = await self._read(request, provider)
            if provider == "telnyx" and incoming.is_json:
                return await self._telnyx_call_control(incoming)
            document = self._document(provider, incoming)
        except RequestRefused as exc:
            return self._refusal(exc)
        return web.Response(
            text=document, content_type=_CONTENT_TYPES[provider], charset="utf-8"
        )

    def _document(self, provider: str, incoming: _Incoming) -> str:
        query, fields = incoming.query, incoming.fields
        params: dict[str, str] = {}
        agent: str | None
        blob = query.get(DIALOUT_PARAMETER)
        if blob is not None:
            # Our own dial-out answer URL (Plivo): parameters signed by us (dialout.py).
            try:
                packed = stream_tokens(self.config).open_params(blob)
            except AuthenticationError as exc:
                logger.warning("%s dial-out answer refused: %s", provider, exc)
                raise RequestRefused(403, "dial-out parameters do not verify") from None
            agent = packed.pop("_agent", None) or None
            if agent is not None:
                agent = resolve_agent({"agent": agent}, self.agents)
            params.update(packed)
        else:
            try:
                agent = resolve_agent(query, self.agents)
            except RequestRefused as exc:
                logger.warning(
                    "%s webhook call=%s refused: %s",
                    provider, _call_id(provider, fields) or "-", exc.message,
                )
                raise
        call_id = _call_id(provider, fields)
        caller, callee = fields.get("From"), fields.get("To")
        ordered: dict[str, str] = {}
        if caller:
            ordered["from"] = caller
        if callee:
            ordered["to"] = callee
        ordered.update(forwarded_parameters(query))
        ordered.update(params)
        listen_only = agent is not None and agent in self.config.listen_only_names
        continue_with = self.config.listen_continue
        logger.info(
            "%s answer call=%s agent=%s from=%s to=%s%s",
            provider, call_id or "-", agent or "-", caller or "-", callee or "-",
            f" listen-only, then {continue_with or 'nothing'}" if listen_only else "",
        )
        return answer_document(
            self.config, provider, incoming.origin, call_id=call_id, agent=agent,
            parameters=ordered)

    async def _telnyx_call_control(self, incoming: _Incoming) -> web.StreamResponse:
        try:
            event = json.loads(incoming.body)
            data = event["data"]
            event_type = str(data["event_type"])
            payload: dict[str, Any] = data.get("payload") or {}
        except (ValueError, KeyError, TypeError):
            raise RequestRefused(400, "not a Telnyx Call Control event") from None
        call_control_id = str(payload.get("call_control_id") or "")
        if event_type != "call.initiated" or payload.get("direction") != "incoming":
            logger.debug("telnyx event %s call=%s acknowledged", event_type, call_control_id)
            return web.json_response({"ok": True})
        if not call_control_id:
            raise RequestRefused(400, "call.initiated without call_control_id")
        if self.clients is None or not self.clients.configured("telnyx"):
            logger.error(
                "telnyx call=%s: Call Control webhook but no TELNYX_API_KEY to answer it",
                call_control_id,
            )
            raise RequestRefused(503, "call control is not configured")
        telnyx = self.clients.require_telnyx()
        try:
            agent = resolve_agent(incoming.query, self.agents)
        except RequestRefused as exc:
            logger.warning("telnyx call=%s refused: %s", call_control_id, exc.message)
            await _quietly(telnyx.hangup(call_control_id), call_control_id)
            raise
        token = stream_tokens(self.config).issue("telnyx", call_control_id)
        query: dict[str, str] = {"token": token}
        for key, name in (("from", "from"), ("to", "to")):
            value = payload.get(key)
            if isinstance(value, str) and value:
                query[name] = value
        query.update(forwarded_parameters(incoming.query))
        url = stream_url(incoming.origin, "telnyx", agent=agent, query=query)
        listen_only = agent is not None and agent in self.config.listen_only_names
        options = TelnyxStreamOptions(
            url,
            codec=self.config.telnyx_call_control_codec,
            sample_rate=self.config.telnyx_call_control_sample_rate,
            listen_only=listen_only,
        )
        try:
            await telnyx.answer(call_control_id, stream=options)
            target = self.config.listen_continue.strip()
            if listen_only and target and not target.startswith(("https://", "http://")):
                # Call Control has no documents: the call goes on by a transfer, which
                # keeps the A leg's stream (the fork) running.
                await telnyx.transfer(call_control_id, target)
            elif listen_only and target:
                logger.warning(
                    "telnyx call=%s: a Call Control call cannot continue with a document "
                    "(%s); only a number or sip: URI can be dialled", call_control_id, target,
                )
        except (ProviderAPIError, ControlUnavailable) as exc:
            logger.error("telnyx call=%s: answer failed: %s", call_control_id, exc)
            raise RequestRefused(502, "answering the call failed") from None
        logger.info("telnyx answer (call control) call=%s agent=%s", call_control_id, agent or "-")
        return web.json_response({"ok": True})

    # -------------------------------------------------------------- stream status

    def stream_status(
        self, provider: str
    ) -> Callable[[HttpRequest], Awaitable[web.StreamResponse]]:
        """The handler logging ``provider``'s stream status callbacks (started, stopped,
        failed)."""

        async def handle(request: HttpRequest) -> web.StreamResponse:
            return await self._stream_status(request, provider)

        return handle

    async def _stream_status(self, request: HttpRequest, provider: str) -> web.StreamResponse:
        try:
            incoming = await self._read(request, provider)
        except RequestRefused as exc:
            return self._refusal(exc)
        f = incoming.fields
        event = f.get("StreamEvent") or f.get("Event") or "-"
        error = f.get("StreamError") or f.get("Error") or f.get("Reason")
        log = logger.warning if error or event in ("stream-error", "DroppedStream") else logger.info
        log(
            "%s stream status call=%s stream=%s event=%s%s",
            provider,
            _call_id(provider, f) or "-",
            f.get("StreamSid") or f.get("StreamID") or f.get("StreamId") or "-",
            event,
            f" error={error}" if error else "",
        )
        return web.Response(status=204)


def answer_document(
    config: Config,
    provider: str,
    origin: Origin,
    *,
    call_id: str | None,
    agent: str | None = None,
    parameters: Mapping[str, str] | None = None,
) -> str:
    """The answer document connecting a call to our media URL under ``origin``: TwiML
    ``<Connect><Stream>``, TeXML, or Plivo ``<Stream>`` XML, with a fresh stream token
    bound to ``call_id`` (``None``: unbound, single use) and the custom ``parameters``.

    What the webhook routes answer; an application's own answer endpoint can return it
    too (:meth:`mediastream.asgi.MediaStreamASGI.answer`).
    """
    ordered = dict(parameters or {})
    token = stream_tokens(config).issue(provider, call_id)
    status = status_callback_url(config, origin, provider)
    # A listen-only agent gets a fork of both tracks, then the call goes on with
    # config.listen_continue (documents.py).
    listen_only = agent is not None and agent in config.listen_only_names
    continue_with = config.listen_continue
    if provider == "twilio":
        url = stream_url(origin, "twilio", agent=agent)
        if listen_only:
            return twiml_start_stream(
                url, {**ordered, "_token": token}, continue_with=continue_with,
                status_callback=status,
            )
        return twiml_connect_stream(url, {**ordered, "_token": token}, status_callback=status)
    if provider == "telnyx":
        url = stream_url(origin, "telnyx", agent=agent, query={"token": token})
        if listen_only:
            return texml_start_stream(
                url, {**ordered, "_token": token}, codec=config.telnyx_texml_codec,
                continue_with=continue_with, status_callback=status,
            )
        return texml_connect_stream(
            url,
            {**ordered, "_token": token},
            codec=config.telnyx_texml_codec,
            sample_rate=8000,
            status_callback=status,
        )
    if provider != "plivo":
        raise ValueError(f"unknown provider {provider!r}: twilio, telnyx or plivo")
    url = stream_url(origin, "plivo", agent=agent, query={"token": token, **ordered})
    extra, dropped = plivo_extra_headers({"token": token, **ordered})
    if dropped:
        logger.info(
            "plivo call=%s: parameters %s not alphanumeric or over 512 bytes: sent in the "
            "stream URL query only", call_id or "-", ", ".join(dropped),
        )
    if listen_only:
        return plivo_listen_stream(
            url,
            content_type=config.plivo_content_type,
            extra_headers=extra,
            continue_with=continue_with,
            status_callback=status,
        )
    return plivo_stream(
        url,
        content_type=config.plivo_content_type,
        extra_headers=extra,
        status_callback=status,
    )


def _call_id(provider: str, fields: Mapping[str, str]) -> str | None:
    if provider == "plivo":
        return fields.get("CallUUID") or None
    return fields.get("CallSid") or fields.get("CallControlId") or None


async def _quietly(awaitable: Any, call_id: str) -> None:
    try:
        await awaitable
    except (ProviderAPIError, ControlUnavailable) as exc:
        logger.error("telnyx call=%s: hang-up after refusal failed: %s", call_id, exc)
