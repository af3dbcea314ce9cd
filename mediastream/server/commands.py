"""Commands on a live call held by this process: what ``POST /calls/{id}/<action>`` does.

==========  ==========================================================================
action      what happens, and through what
==========  ==========================================================================
hangup      the call's own hang-up (provider REST when configured, else close 1000)
transfer    ``{"to": "+1555..." | "sip:..."}`` through the provider's REST API: Twilio
            call update with TwiML ``<Dial>``, Telnyx ``actions/transfer``, Plivo
            transfer of the A leg to our ``/plivo/transfer`` document (needs
            ``public_url``). 409 without the provider's credentials.
dtmf        ``{"digits": "12#"}``: on the media socket where the provider carries it
            (Plivo ``sendDTMF``), else Telnyx ``actions/send_dtmf`` over REST; Twilio has
            neither for a ``<Connect><Stream>`` call: 409
clear       interrupt the bot's audio (``Call.clear``; 409 on a listen-only stream)
message     the JSON object body goes to the bot as a :class:`~mediastream.call.BotMessage`
==========  ==========================================================================

Results are :class:`~mediastream.cluster.CommandResult` (status + JSON body) so that a
command run here for another worker or instance travels back unchanged.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from mediastream.call import BotMessage
from mediastream.cluster import CommandResult
from mediastream.config import Config
from mediastream.control.clients import ProviderClients
from mediastream.control.rest import ControlUnavailable, ProviderAPIError
from mediastream.errors import LocalProtocolError
from mediastream.protocols.events import CallInfo

from .live import LiveCall

__all__ = ["ACTIONS", "MAX_MESSAGE_BYTES", "CommandTarget", "run_command", "valid_transfer_target"]

logger = logging.getLogger(__name__)

ACTIONS: Final = ("hangup", "transfer", "dtmf", "clear", "message")
#: Largest ``/message`` body handed to a bot (serialised JSON).
MAX_MESSAGE_BYTES: Final = 64 * 1024
_DIGITS = re.compile(r"[0-9*#A-D]{1,64}")
_NUMBER = re.compile(r"\+?[0-9]{2,20}")
_SIP = re.compile(r"sips?:[^\s<>\"'&]{1,250}")


class CommandTarget(Protocol):
    """What a command needs of the connection holding the call."""

    info: CallInfo | None

    @property
    def done(self) -> bool: ...

    @property
    def live_call(self) -> LiveCall | None: ...

    async def hangup(self, reason: str) -> None: ...


def valid_transfer_target(to: object) -> bool:
    """A phone number (E.164-ish digits) or a ``sip:``/``sips:`` URI."""
    return isinstance(to, str) and bool(_NUMBER.fullmatch(to) or _SIP.fullmatch(to))


def _gone(call_id: str) -> CommandResult:
    return CommandResult(404, {"error": f"no live call {call_id}"})


async def run_command(
    target: CommandTarget,
    action: str,
    body: dict[str, Any],
    *,
    config: Config,
    clients: ProviderClients | None,
    plivo_transfer_url: Callable[[str], str | None] | None = None,
) -> CommandResult:
    """Run ``action`` on ``target``'s call; ``plivo_transfer_url(to)`` is the signed URL of
    the ``<Dial>`` document Plivo fetches for a transfer (``None``: no public URL)."""
    call, info = target.live_call, target.info
    if call is None or info is None or target.done or call.ended:
        return _gone(info.call_id if info is not None else "?")
    if action == "hangup":
        await target.hangup("hung up through the call API")
        return CommandResult(200, {"call_id": info.call_id, "result": "hung up"})
    if action == "clear":
        if call.listen_only:
            return CommandResult(409, {"error": "a listen-only stream has no bot audio"})
        call.clear()
        return CommandResult(200, {"call_id": info.call_id, "result": "cleared"})
    if action == "message":
        size = len(json.dumps(body, separators=(",", ":")))
        if size > MAX_MESSAGE_BYTES:
            return CommandResult(400, {"error": f"message is {size} bytes; at most "
                                       f"{MAX_MESSAGE_BYTES}"})
        call.push([BotMessage(body)])
        return CommandResult(200, {"call_id": info.call_id, "result": "delivered"})
    if action == "dtmf":
        return await _dtmf(call, info, body, clients)
    if action == "transfer":
        return await _transfer(info, body, clients, plivo_transfer_url)
    return CommandResult(404, {"error": f"no such action {action!r}"})


async def _dtmf(
    call: LiveCall, info: CallInfo, body: dict[str, Any], clients: ProviderClients | None
) -> CommandResult:
    digits = body.get("digits")
    if not isinstance(digits, str) or not _DIGITS.fullmatch(digits):
        return CommandResult(400, {"error": "digits: 1-64 of 0-9 * # A-D"})
    if call.capabilities.send_dtmf and not call.listen_only:
        try:
            call.send_dtmf(digits)
        except LocalProtocolError as exc:
            return CommandResult(409, {"error": str(exc)})
        return CommandResult(200, {"call_id": info.call_id, "result": "sent", "via": "stream"})
    if info.provider == "telnyx":
        return await _rest(info, "dtmf", clients, lambda c: c.send_dtmf(info, digits))
    return CommandResult(409, {"error": f"{info.provider} cannot play DTMF into this call "
                               "(no media-stream DTMF, no REST DTMF that keeps the stream)"})


async def _transfer(
    info: CallInfo,
    body: dict[str, Any],
    clients: ProviderClients | None,
    plivo_transfer_url: Callable[[str], str | None] | None,
) -> CommandResult:
    to = body.get("to")
    if not valid_transfer_target(to):
        return CommandResult(400, {"error": "to: a phone number or a sip: URI"})
    assert isinstance(to, str)
    if info.provider == "twilio":
        return await _rest(info, "transfer", clients,
                           lambda c: c.require_twilio().transfer(info.call_id, to))
    if info.provider == "telnyx":
        return await _rest(info, "transfer", clients,
                           lambda c: c.require_telnyx().transfer(info.call_id, to))
    url = plivo_transfer_url(to) if plivo_transfer_url is not None else None
    if url is None:
        return CommandResult(409, {"error": "plivo transfer needs MEDIASTREAM_PUBLIC_URL "
                                   "(Plivo fetches the <Dial> document from us)"})
    return await _rest(info, "transfer", clients,
                       lambda c: c.require_plivo().transfer(info.call_id, aleg_url=url))


async def _rest(info: CallInfo, action: str, clients: ProviderClients | None,
                operation: Callable[[ProviderClients], Awaitable[None]]) -> CommandResult:
    """One provider REST operation: 409 without credentials, 502 when the provider refuses."""
    if clients is None or not clients.configured(info.provider):
        return CommandResult(409, {"error": f"{info.provider} REST credentials are not "
                                   f"configured: {action} needs them"})
    try:
        await operation(clients)
    except ControlUnavailable as exc:
        return CommandResult(409, {"error": str(exc)})
    except ProviderAPIError as exc:
        return CommandResult(502, {"error": str(exc)})
    logger.info("[call %s] %s through %s REST", info.call_id, action, info.provider)
    return CommandResult(200, {"call_id": info.call_id, "result": f"{action} requested"})
