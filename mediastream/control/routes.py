"""Mount the control plane on the server's aiohttp application.

==========================================  =============================================
``GET|POST /twilio`` ``/telnyx`` ``/plivo``  answer documents (webhooks.py)
``POST /<provider>/stream-status``           stream status callbacks (logged)
``POST /dialout``                            place a call (dialout.py)
``GET|POST /plivo/transfer?p=``              the ``<Dial>`` of a call-API transfer
==========================================  =============================================

The server imports this package, never the reverse (docs/design.md §1): the agent registry
is seen only through :class:`~mediastream.control.webhooks.AgentLookup`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ..config import Config
from ..errors import AuthenticationError
from .auth import stream_tokens
from .clients import ProviderClients
from .dialout import DialoutHandler
from .documents import plivo_dial
from .requests import HttpRequest
from .webhooks import AgentLookup, ControlHandlers

__all__ = [
    "PLIVO_TRANSFER_PATH",
    "ControlRoute",
    "add_control_routes",
    "control_routes",
    "plivo_transfer_url",
    "validate_control_config",
]

_TEXML_CODECS = ("PCMU", "PCMA")
_CALL_CONTROL_CODECS = ("PCMU", "PCMA", "L16")
_PLIVO_CONTENT_TYPES = (
    "audio/x-mulaw;rate=8000",
    "audio/x-l16;rate=8000",
    "audio/x-l16;rate=16000",
)


def validate_control_config(config: Config) -> None:
    """Raise ``ValueError`` naming the setting when a control option is not supported."""
    if config.telnyx_texml_codec not in _TEXML_CODECS:
        raise ValueError(
            f"MEDIASTREAM_TELNYX_TEXML_CODEC={config.telnyx_texml_codec!r}: use PCMU or PCMA "
            "(TeXML <Stream> documents no L16; use Call Control for L16)"
        )
    if config.telnyx_call_control_codec not in _CALL_CONTROL_CODECS:
        raise ValueError(
            f"MEDIASTREAM_TELNYX_CALL_CONTROL_CODEC={config.telnyx_call_control_codec!r}: "
            "use PCMU, PCMA or L16"
        )
    rate = config.telnyx_call_control_sample_rate
    if config.telnyx_call_control_codec == "L16":
        if rate not in (8000, 16000):
            raise ValueError(f"MEDIASTREAM_TELNYX_CALL_CONTROL_SAMPLE_RATE={rate}: 8000 or 16000")
    elif rate != 8000:
        raise ValueError("G.711 streams run at 8000 Hz: set TELNYX_CALL_CONTROL_SAMPLE_RATE=8000")
    if config.telnyx_dialout_api not in ("texml", "call_control"):
        raise ValueError(
            f"MEDIASTREAM_TELNYX_DIALOUT_API={config.telnyx_dialout_api!r}: texml or call_control"
        )
    if config.plivo_content_type not in _PLIVO_CONTENT_TYPES:
        raise ValueError(
            f"MEDIASTREAM_PLIVO_CONTENT_TYPE={config.plivo_content_type!r}: one of "
            + ", ".join(_PLIVO_CONTENT_TYPES)
        )
    if config.stream_token_ttl <= 0:
        raise ValueError("MEDIASTREAM_STREAM_TOKEN_TTL must be positive")


#: A control route: HTTP method, path (below the mount), handler.
ControlRoute = tuple[str, str, Callable[[HttpRequest], Awaitable[web.StreamResponse]]]


def control_routes(
    *,
    config: Config,
    agents: AgentLookup | None,
    clients: ProviderClients | None,
) -> list[ControlRoute]:
    """The answer, stream-status and dial-out routes, for any server to mount.

    ``agents`` (the registry; ``None``: any agent name is passed on to the media
    server) and ``clients`` (``None``: dial-out and Telnyx Call Control answer 503) are
    used at request time. Raises ``ValueError`` for an unsupported control setting.
    """
    validate_control_config(config)
    handlers = ControlHandlers(config, agents, clients)
    dialout = DialoutHandler(config, agents, clients)
    routes: list[ControlRoute] = []
    for provider, handler in (
        ("twilio", handlers.twilio),
        ("telnyx", handlers.telnyx),
        ("plivo", handlers.plivo),
    ):
        status = handlers.stream_status(provider)
        routes += [
            ("GET", f"/{provider}", handler),
            ("POST", f"/{provider}", handler),
            ("POST", f"/{provider}/stream-status", status),
            ("GET", f"/{provider}/stream-status", status),
        ]
    routes.append(("POST", "/dialout", dialout.handle))
    transfer = plivo_transfer_handler(config)
    routes += [("GET", PLIVO_TRANSFER_PATH, transfer), ("POST", PLIVO_TRANSFER_PATH, transfer)]
    return routes


#: Where Plivo fetches the document of a transfer asked through the call API.
PLIVO_TRANSFER_PATH = "/plivo/transfer"
_TRANSFER_TTL_S = 300.0


def plivo_transfer_url(config: Config, to: str) -> str | None:
    """The signed URL whose document dials ``to`` (``None`` without ``public_url``):
    Plivo's transfer takes a URL, not a document (protocols.md §3.6), and the target
    travels signed and expiring so nobody else can make us serve a ``<Dial>``."""
    if not config.public_url:
        return None
    blob = stream_tokens(config).sign_params({"to": to}, _TRANSFER_TTL_S)
    return f"{config.public_url.rstrip('/')}{PLIVO_TRANSFER_PATH}?p={blob}"


def plivo_transfer_handler(
    config: Config,
) -> Callable[[HttpRequest], Awaitable[web.StreamResponse]]:
    """Serve :func:`~.documents.plivo_dial` for a URL made by :func:`plivo_transfer_url`."""

    async def handle(request: HttpRequest) -> web.StreamResponse:
        try:
            to = stream_tokens(config).open_params(request.query.get("p", "")).get("to", "")
        except AuthenticationError as exc:
            return web.Response(status=403, text=f"{exc}\n")
        return web.Response(text=plivo_dial(to), content_type="application/xml")

    return handle


def add_control_routes(
    app: web.Application,
    *,
    config: Config,
    agents: AgentLookup | None,
    clients: ProviderClients | None,
) -> None:
    """Add the :func:`control_routes` to an aiohttp ``app``."""
    for method, path, handler in control_routes(config=config, agents=agents, clients=clients):
        app.router.add_route(method, path, handler)
