"""mediastream with a Pipecat bot, as the benchmark runs it: one process, quiet logs.

The same server ``mediastream serve --bot bot.echo`` runs, embedded so that its logging
(stdlib and Pipecat's loguru) is set exactly like the reference server's
(:mod:`bench.pipecat_server`): equal log volume on both sides of the comparison. Like
``serve()`` it calls ``gc.freeze()`` once the bot is loaded (``--no-gc-freeze``: not).

    python -m bench.mediastream_server --port 8767 --bot bot.echo
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Sequence

from loguru import logger

from mediastream.agents import load_bot
from mediastream.config import Config
from mediastream.server import MediaStreamServer

__all__ = ["main"]


async def _serve(host: str, port: int, bot_spec: str, max_calls: int, freeze: bool,
                 bot_frame_ms: int = 20) -> None:
    config = Config(host=host, port=port, max_calls=max_calls, bot_frame_ms=bot_frame_ms)
    bot = load_bot(bot_spec)
    if freeze:
        # Everything imported so far (Pipecat is a large object graph) leaves the
        # collector's view: a full collection then scans only what calls allocate.
        gc.freeze()
    async with MediaStreamServer(config, bot=bot) as server:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        serving = asyncio.create_task(server.serve_forever())
        await stop.wait()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.mediastream_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--bot", default="bot.echo")
    parser.add_argument("--max-calls", type=int, default=2000)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--bot-frame-ms", type=int, default=20, choices=(20, 40, 60),
                        help="ms of audio per frame into the bot's pipeline")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="skip the gc.freeze() that mediastream serve does once the bot "
                             "is loaded")
    args = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    asyncio.run(_serve(args.host, args.port, args.bot, args.max_calls, not args.no_gc_freeze,
                       args.bot_frame_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
