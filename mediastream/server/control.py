"""The server's seam to the control plane (:mod:`mediastream.control`).

The server needs four things from it: the authentication checks before the upgrade and
at ``start``, a REST hang-up, and the webhook/REST routes. They are gathered here so the
server code reads as policy ("authenticate, then admit") and this module is the only
place that knows the control plane's signatures.

The HTTP client session for provider REST calls is created at server start and closed
at shutdown (docs/design.md §5: one injected ``ClientSession``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

import aiohttp
from aiohttp import web

from mediastream.agents import AgentRegistry
from mediastream.config import Config
from mediastream.control.auth import (
    STREAM_TOKEN_PARAMETERS,
    auth_warnings,
)
from mediastream.control.auth import (
    check_media_upgrade as _check_media_upgrade,
)
from mediastream.control.auth import (
    check_stream_start as _check_stream_start,
)
from mediastream.control.auth import token_to_claim as _token_to_claim
from mediastream.control.clients import ProviderClients
from mediastream.control.routes import ControlRoute, add_control_routes, control_routes
from mediastream.protocols.base import MediaStreamProtocol
from mediastream.protocols.events import CallInfo

__all__ = [
    "ControlRoute",
    "add_routes",
    "check_media_upgrade",
    "check_stream_start",
    "hangup",
    "public_call_info",
    "routes",
    "start",
    "stop",
    "token_to_claim",
]

logger = logging.getLogger(__name__)

_TELNYX_TOKEN_HEADER = "x-telnyx-streaming-auth-token"


async def start(config: Config) -> ProviderClients:
    """Create the REST clients (one ``ClientSession``) and log the auth posture."""
    for warning in auth_warnings(config):
        logger.warning("%s", warning)
    http = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, connect=config.rest_timeout),
    )
    return ProviderClients.from_config(http, config)


async def stop(clients: ProviderClients | None) -> None:
    """Close the REST clients' session."""
    if clients is not None:
        await clients.http.close()


def check_media_upgrade(
    config: Config,
    *,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    mount_prefix: str = "",
) -> None:
    """Before the upgrade: raises AuthenticationError (the server answers 403)."""
    _check_media_upgrade(config, path=path, query=query, headers=headers, public_url=None,
                         mount_prefix=mount_prefix)


def check_stream_start(
    config: Config,
    call: CallInfo,
    protocol: MediaStreamProtocol,
    *,
    query: Mapping[str, str],
    headers: Mapping[str, str],
) -> None:
    """At ``start``: raises AuthenticationError (the server closes with 1008).

    Telnyx may carry its stream auth token in the ``connected`` frame rather than the
    upgrade header (protocols.md §2.2); the protocol object knows either way.
    """
    _check_stream_start(config, call, query=query, headers=_with_telnyx(protocol, headers))


def token_to_claim(
    config: Config,
    call: CallInfo,
    protocol: MediaStreamProtocol,
    *,
    query: Mapping[str, str],
    headers: Mapping[str, str],
) -> tuple[str, int] | None:
    """The ``(nonce, expiry)`` :func:`check_stream_start` would spend (or ``None``)."""
    return _token_to_claim(config, call, query=query, headers=_with_telnyx(protocol, headers))


def _with_telnyx(protocol: MediaStreamProtocol, headers: Mapping[str, str]) -> Mapping[str, str]:
    token = protocol.stream_auth_token
    if token and _TELNYX_TOKEN_HEADER not in headers:
        return {**headers, _TELNYX_TOKEN_HEADER: token}
    return headers


def public_call_info(call: CallInfo) -> CallInfo:
    """``call`` without our stream token among its custom parameters (bots never see it)."""
    params = call.custom_parameters
    if not any(name in params for name in STREAM_TOKEN_PARAMETERS):
        return call
    kept = {k: v for k, v in params.items() if k not in STREAM_TOKEN_PARAMETERS}
    return replace(call, custom_parameters=MappingProxyType(kept))


async def hangup(clients: ProviderClients | None, call: CallInfo) -> bool:
    """REST hang-up when the provider's credentials are configured; False if not."""
    if clients is None or not clients.configured(call.provider):
        return False
    await clients.hangup(call)
    return True


def add_routes(
    app: web.Application,
    config: Config,
    agents: AgentRegistry,
    clients: ProviderClients | None,
) -> None:
    """Mount the webhook and REST control routes (ValueError for a bad control setting)."""
    add_control_routes(app, config=config, agents=agents, clients=clients)


def routes(
    config: Config, agents: AgentRegistry, clients: ProviderClients | None
) -> list[ControlRoute]:
    """The webhook and REST control routes as (method, path, handler), for an ASGI app."""
    return control_routes(config=config, agents=agents, clients=clients)
