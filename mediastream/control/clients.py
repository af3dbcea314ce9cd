"""Call control over REST: one front door to the Twilio, Telnyx and Plivo clients.

:class:`ProviderClients` builds the per-provider clients (twilio_api, telnyx_api,
plivo_api) from :class:`~mediastream.config.ProviderCredentials` over one injected
:class:`aiohttp.ClientSession`, and dispatches by :attr:`CallInfo.provider`:

=========  ============================  ==================  ==============================
provider   auth / body                   hang up             "already ended" (success)
=========  ============================  ==================  ==============================
Twilio     Basic SID:token, form         POST Calls/{sid}    404 code 20404, 400 code 21220
                                         Status=completed
Telnyx     Bearer key, JSON              POST actions/hangup 422 code "90018"
Plivo      Basic id:token, JSON, ``/``   DELETE Call/{id}/   404
=========  ============================  ==================  ==============================

Timeouts, bounded retries on 5xx/429 (honouring ``Retry-After``) and one log line per
failure come from :mod:`mediastream.control.rest`; creating a call is not retried on
5xx or lost connections (it may have been placed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from ..config import Config, ProviderCredentials
from ..protocols.events import CallInfo
from .plivo_api import PlivoClient
from .rest import ControlUnavailable, RestClient, basic_authorization
from .telnyx_api import TelnyxClient, TelnyxStreamOptions
from .twilio_api import TwilioClient

__all__ = [
    "ControlUnavailable",
    "PlivoClient",
    "ProviderClients",
    "TelnyxClient",
    "TelnyxStreamOptions",
    "TwilioClient",
]

Sleep = Callable[[float], Awaitable[None]]



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
