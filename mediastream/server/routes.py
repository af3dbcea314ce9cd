"""The media WebSocket paths, parsed once per upgrade.

=====================================  =========================================
``/ws``                                provider detected from the first frames
``/ws/twilio`` ``/ws/telnyx``          that provider's dialect
``/ws/plivo``
``/ws/<provider>/<agent>``             same, routed to a named agent
``/ws/auto/<agent>``                   detection, routed to a named agent
=====================================  =========================================

A trailing slash is ignored. Anything else under ``/ws`` is not a media path: the
upgrade is answered 404 before it happens (docs/design.md §3: reject before the upgrade what
can be rejected there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from mediastream.protocols.events import ProviderName

__all__ = ["MEDIA_PREFIX", "PROVIDERS", "MediaRoute", "is_media_prefix", "parse_media_path"]

MEDIA_PREFIX = "/ws"
PROVIDERS: tuple[ProviderName, ...] = get_args(ProviderName)
_AUTO = "auto"
_MAX_AGENT = 64


@dataclass(frozen=True, slots=True)
class MediaRoute:
    """Where an upgrade request is going: a provider (``None``: detect) and an agent."""

    provider: ProviderName | None
    agent: str | None = None


def parse_media_path(path: str) -> MediaRoute | None:
    """The route for a request path (query string already removed), or ``None``."""
    if path != MEDIA_PREFIX and not path.startswith(MEDIA_PREFIX + "/"):
        return None
    parts = path[len(MEDIA_PREFIX) :].strip("/").split("/") if path != MEDIA_PREFIX else []
    if parts == [""]:
        parts = []
    if not parts:
        return MediaRoute(None)
    if len(parts) > 2:
        return None
    name = parts[0]
    provider: ProviderName | None
    if name == _AUTO:
        provider = None
    elif name in PROVIDERS:
        provider = name
    else:
        return None
    agent = parts[1] if len(parts) == 2 else None
    if agent is not None and not _valid_agent(agent):
        return None
    return MediaRoute(provider, agent)


def is_media_prefix(path: str) -> bool:
    """True for ``/ws`` and anything below it: upgrades there are ours to answer."""
    return path == MEDIA_PREFIX or path.startswith(MEDIA_PREFIX + "/")


def _valid_agent(name: str) -> bool:
    return 0 < len(name) <= _MAX_AGENT and all(c.isalnum() or c in "-_" for c in name)
