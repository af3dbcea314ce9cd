"""The asyncio server: the only place mediastream does I/O.

* :class:`MediaStreamServer` -- one port for media WebSockets and plain HTTP; use it as
  ``async with MediaStreamServer(config, bot=...) as server``.
* :func:`serve` -- run one until SIGTERM/SIGINT (what ``mediastream serve`` does).
* :func:`mount` -- add ``/healthz``, ``/metrics`` and the webhook/control routes to an
  aiohttp application of your own.
"""

from __future__ import annotations

from mediastream.agents import registry_from_config

from .http import mount
from .serve import serve
from .server import MediaStreamServer

__all__ = ["MediaStreamServer", "mount", "registry_from_config", "serve"]
