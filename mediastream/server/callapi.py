"""The live-call commands: ``POST /calls/{id}/<action>`` (``GET /calls`` is :mod:`.pages`).

The same access rule as ``GET /calls`` (:mod:`.access`): with ``MEDIASTREAM_API_TOKEN``
set, ``Authorization: Bearer <token>`` (401 without, 403 wrong); open on loopback
without credentials for local development; off (403) otherwise. ``{id}`` is the
provider's call id (``call.info.call_id``: Twilio CallSid, Telnyx call_control_id, Plivo
CallUUID). Any instance answers for any call: the command runs where the call is
(:class:`~.cluster.CallTable`).

======================================  =============================================
``POST /calls/{id}/hangup``              ``{}`` (or no body)
``POST /calls/{id}/transfer``            ``{"to": "+15551234567" | "sip:..."}``
``POST /calls/{id}/dtmf``                ``{"digits": "12#"}``
``POST /calls/{id}/clear``               ``{}``
``POST /calls/{id}/message``             any JSON object: handed to the bot
======================================  =============================================

Statuses: 200 done; 400 bad body; 401/403 as above; 404 unknown call or action; 409
the provider or the call cannot do it; 502 the provider refused; 503 the shared state
(Redis) is unreachable; 504 the instance holding the call did not answer within
``command_timeout``.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from mediastream.cluster import ClusterUnavailable
from mediastream.config import Config

from .access import Access, access_mode, check_access
from .cluster import CallTable
from .commands import ACTIONS, MAX_MESSAGE_BYTES, CommandTarget

__all__ = ["CallTable", "CommandTarget", "add_call_routes"]

logger = logging.getLogger(__name__)

_TABLE: web.AppKey[CallTable] = web.AppKey("mediastream.calls")
_CONFIG: web.AppKey[Config] = web.AppKey("mediastream.calls.config")
_MODE: web.AppKey[Access] = web.AppKey("mediastream.calls.access")


def add_call_routes(app: web.Application, config: Config, table: CallTable) -> None:
    """Mount the live-call commands on ``app``."""
    app[_TABLE] = table
    app[_CONFIG] = config
    app[_MODE] = access_mode(config)
    app.router.add_post("/calls/{call_id}/{action}", _command)


async def _command(request: web.Request) -> web.Response:
    check_access(request.app[_MODE], request.app[_CONFIG].api_token, request.headers,
                 data=True)
    call_id, action = request.match_info["call_id"], request.match_info["action"]
    if action not in ACTIONS:
        return web.json_response({"error": f"no such action {action!r}; one of "
                                  + ", ".join(ACTIONS)}, status=404)
    raw = await request.content.read(MAX_MESSAGE_BYTES + 1)
    if len(raw) > MAX_MESSAGE_BYTES:
        return web.json_response({"error": f"body over {MAX_MESSAGE_BYTES} bytes"}, status=400)
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return web.json_response({"error": "body is not JSON"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "body must be a JSON object"}, status=400)
    try:
        result = await request.app[_TABLE].command(call_id, action, body)
    except ClusterUnavailable as exc:
        return web.json_response({"error": str(exc)}, status=503)
    if result.status >= 400:
        logger.info("call API %s %s: %d %s", action, call_id, result.status,
                    result.body.get("error", ""))
    return web.json_response(result.body, status=result.status)
