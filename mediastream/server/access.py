"""Who may use the softphone (``/phone``), the dashboard (``/dashboard``) and ``GET /calls``.

One rule for all three, decided from the configuration alone:

=========================================================  ========  =====================
server                                                     mode      what is served
=========================================================  ========  =====================
``MEDIASTREAM_API_TOKEN`` set                              token     the pages (static
                                                                     code, no data); every
                                                                     request for data --
                                                                     ``GET /calls``, a
                                                                     stream token for the
                                                                     phone -- needs
                                                                     ``Authorization:
                                                                     Bearer <token>``:
                                                                     401 without, 403 wrong
bound to loopback, no provider credentials, no token,      open      everything, no token
``require_auth`` not forced on                                       (``make run`` and a
                                                                     browser)
anything else (a public bind, or provider credentials      off       403 everywhere, and
without a token)                                                     the start-up log says
                                                                     how to turn them on
=========================================================  ========  =====================

Why the pages themselves are served in token mode: a browser cannot put a header on a
page it navigates to, so the page asks for the token once and sends it with each data
request; a token in the URL would land in logs and history. The pages hold nothing.

A server holding provider credentials (any of them: signing secrets or REST keys) or
forced to authenticate streams is never open, even on loopback: a local proxy or tunnel
would make it an open door to its bots. With a token, the phone gets a one-time stream
token per call (``POST /phone/token``), so stream signatures and tokens stay on for the
media path.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import logging
from collections.abc import Mapping

from aiohttp import web

from mediastream.config import Config

__all__ = ["Access", "access_mode", "check_access", "has_provider_credentials", "is_loopback",
           "startup_note"]

logger = logging.getLogger("mediastream.server.access")


class Access(enum.Enum):
    """The mode of the rule (see the module docstring)."""

    OPEN = "open"
    TOKEN = "token"
    OFF = "off"


def is_loopback(host: str) -> bool:
    """True when ``host`` (an address or ``localhost``) can only be reached from here.

    An empty host or a wildcard (``0.0.0.0``, ``::``) binds every interface: not loopback.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def has_provider_credentials(config: Config) -> bool:
    """True when any provider secret, key or id is configured, or stream authentication
    is forced on (``MEDIASTREAM_REQUIRE_AUTH``)."""
    c = config.credentials
    secrets = (
        c.twilio_account_sid, c.twilio_auth_token, c.twilio_webhook_signing_secret,
        c.telnyx_api_key, c.telnyx_public_key, c.plivo_auth_id, c.plivo_auth_token,
    )
    return any(secrets) or config.require_auth is True


def access_mode(config: Config, *, bound_to: str | None = None) -> Access:
    """The mode for a server bound to ``bound_to`` (default ``config.host``).

    An embedder whose listening address is not known here (an ASGI server) passes
    ``bound_to=""``: never open, token mode only.
    """
    if config.api_token:
        return Access.TOKEN
    host = config.host if bound_to is None else bound_to
    if is_loopback(host) and not has_provider_credentials(config):
        return Access.OPEN
    return Access.OFF


def check_access(mode: Access, api_token: str | None, headers: Mapping[str, str], *,
                 data: bool) -> None:
    """Refuse a request the rule does not allow (raises an aiohttp HTTP error).

    ``data``: the request reads or creates data (``GET /calls``, a stream token) rather
    than fetching the pages' static code.
    """
    if mode is Access.OPEN:
        return
    if mode is Access.OFF:
        raise web.HTTPForbidden(text=_OFF_TEXT)
    if not data:
        return
    assert api_token
    given = headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise web.HTTPUnauthorized(
            text="this needs the server's API token: Authorization: Bearer <token>\n",
            headers={"WWW-Authenticate": 'Bearer realm="mediastream"'})
    if not hmac.compare_digest(token.strip().encode(), api_token.encode()):
        raise web.HTTPForbidden(text="wrong API token\n")


_HOW_TO = (
    "set MEDIASTREAM_API_TOKEN (the pages then ask for it), or bind to 127.0.0.1 "
    "without provider credentials for local development")
_OFF_TEXT = f"/phone, /dashboard and /calls are off on this server: {_HOW_TO}\n"


def startup_note(config: Config, mode: Access, *, bound_to: str | None = None) -> str:
    """The start-up log line that says what the rule decided, and how to change it."""
    if mode is Access.OPEN:
        where = (f"http://{_url_host(config.host)}:{config.port}/phone and /dashboard"
                 if config.port else "/phone and /dashboard")
        return f"softphone and dashboard open on loopback (no credentials, no API token): {where}"
    if mode is Access.TOKEN:
        return "softphone, dashboard and /calls on; their data needs the API token"
    host = config.host if bound_to is None else bound_to
    if has_provider_credentials(config):
        why = "provider credentials are configured"
    elif bound_to == "":
        why = "served from an application whose address is not known here"
    else:
        why = f"the server is bound to {host or 'every interface'}"
    return f"softphone, dashboard and /calls are off ({why}): {_HOW_TO}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
