"""mediastream mounted in a FastAPI application under uvicorn, as the benchmark runs it.

The ASGI path of :mod:`mediastream.asgi` -- ``app.mount("/telephony", asgi_app(...))``
served by uvicorn (its defaults: httptools/h11 for HTTP, websockets' sans-I/O
implementation for WebSockets) -- with the same echo bot, settings and ``gc.freeze()``
as ``mediastream serve --bot echo`` in :mod:`bench.bench_server`, so the two differ only
in who owns the socket.

    python -m bench.asgi_server --port 8768 --bot-sample-rate 8000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn
from fastapi import FastAPI

from mediastream.asgi import asgi_app, serve_with_drain
from mediastream.config import Config
from mediastream.echo import echo_bot

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.asgi_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8768)
    parser.add_argument("--bot-sample-rate", type=int, default=16000)
    parser.add_argument("--max-calls", type=int, default=5000)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    config = Config(bot_sample_rate=args.bot_sample_rate, max_calls=args.max_calls)
    telephony = asgi_app(config, echo_bot)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with telephony.lifespan():
            # As serve() does once the bot is loaded, here once uvicorn is up too (its
            # protocol modules load at start-up): what exists now leaves the collector's
            # view, and a full collection scans only what calls allocate.
            gc.freeze()
            yield

    app = FastAPI(lifespan=lifespan)
    app.mount("/telephony", telephony)
    uv = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level.lower(),
                        access_log=False, lifespan="on")
    asyncio.run(serve_with_drain(uv, telephony))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
