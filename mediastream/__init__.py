"""mediastream: a pure-asyncio media-stream server for telephony voice bots.

Layers (docs/design.md §1): :mod:`mediastream.protocols` (sans-I/O provider dialects),
:mod:`mediastream.session` (codec, resampling, pacing, playout ledger),
:mod:`mediastream.server` (the only asyncio I/O), :mod:`mediastream.control` (answer
documents, REST call control, signatures) and :mod:`mediastream.caller` (a simulated
caller). Pipecat lives in the separate ``bot`` package.

The names most embedders need are importable from here; they load lazily, so
``import mediastream.protocols`` never pulls in aiohttp or websockets::

    from mediastream import Call, Config, MediaStreamServer, serve
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AgentRegistry": "mediastream.agents",
    "BotRunner": "mediastream.call",
    "Call": "mediastream.call",
    "CallInfo": "mediastream.protocols.events",
    "Config": "mediastream.config",
    "MediaStreamServer": "mediastream.server",
    "asgi_app": "mediastream.asgi",
    "load_bot": "mediastream.agents",
    "mount": "mediastream.server",
    "run_calls": "mediastream.caller",
    "serve": "mediastream.server",
}

__all__ = [
    "AgentRegistry",
    "BotRunner",
    "Call",
    "CallInfo",
    "Config",
    "MediaStreamServer",
    "asgi_app",
    "load_bot",
    "mount",
    "run_calls",
    "serve",
]

if TYPE_CHECKING:
    from mediastream.agents import AgentRegistry, load_bot
    from mediastream.asgi import asgi_app
    from mediastream.call import BotRunner, Call
    from mediastream.caller import run_calls
    from mediastream.config import Config
    from mediastream.protocols.events import CallInfo
    from mediastream.server import MediaStreamServer, mount, serve


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mediastream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
