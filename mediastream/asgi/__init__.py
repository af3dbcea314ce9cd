"""mediastream inside an ASGI application (FastAPI, Starlette, Quart ... under uvicorn).

One line mounts the media WebSockets and the webhook/operations routes::

    from fastapi import FastAPI
    from mediastream import Config
    from mediastream.asgi import asgi_app

    telephony = asgi_app(Config.from_env(), bot)
    app = FastAPI(lifespan=telephony.lifespan)         # start and drain with the app
    app.mount("/telephony", telephony)

Answer documents then point at the mounted paths (``wss://host/telephony/ws/twilio``)
and signatures are checked against them. The protocol, session and bot layers are the
same objects as under ``mediastream serve``; only the socket is the ASGI server's
(:class:`~.socket.AsgiMediaSocket`). The state -- stream tokens, agents, metrics,
capacity, drain -- is a :class:`~mediastream.server.MediaStreamServer`'s, started
without a port (or one you pass as ``server=`` and run yourself).

Your own answer endpoint gets a document with a valid stream token from
:meth:`MediaStreamASGI.answer`. Under uvicorn, :func:`~.serving.serve_with_drain`
drains live calls before uvicorn closes their sockets (uvicorn itself closes every
WebSocket with 1012 when it shuts down, before the app's lifespan shutdown runs).
"""

from __future__ import annotations

from .app import MediaStreamASGI, asgi_app
from .serving import serve_with_drain
from .socket import AsgiMediaSocket

__all__ = ["AsgiMediaSocket", "MediaStreamASGI", "asgi_app", "serve_with_drain"]
