"""Running a server as the process's job: :func:`serve` (signals, graceful drain)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal

from mediastream.agents import AgentRegistry
from mediastream.call import BotRunner
from mediastream.config import Config

from .server import MediaStreamServer

__all__ = ["serve"]

logger = logging.getLogger("mediastream.server")


_background: set[asyncio.Future[None]] = set()


async def serve(
    config: Config | None = None,
    bot: BotRunner | AgentRegistry | None = None,
    *,
    reuse_port: bool = False,
) -> None:
    """Run a server until SIGTERM or SIGINT, then shut down gracefully.

    The first signal starts the drain (``config.drain_timeout``); a second one during
    the drain closes the remaining calls at once.
    """
    server = MediaStreamServer(config, bot=bot, reuse_port=reuse_port)
    await server.start()
    # serve() owns the process: everything loaded by now (the bots, Pipecat's large object
    # graph) leaves the cyclic collector's view, so a full collection scans only what
    # calls allocate. With Pipecat loaded a full collection cost 65-84 ms of CPU, a pause
    # every live call hears (python -m bench pipecat --unfrozen: p99 at 50 calls 50 ms
    # instead of 120 ms). Embedders running MediaStreamServer themselves decide for
    # their own process.
    gc.freeze()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum: int) -> None:
        if stop.is_set():
            logger.warning("second %s: closing remaining calls now", signal.Signals(signum).name)
            task = asyncio.ensure_future(server.aclose(drain_timeout=0))
            _background.add(task)
            task.add_done_callback(_background.discard)
            return
        logger.info("%s: shutting down gracefully", signal.Signals(signum).name)
        stop.set()

    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
    try:
        await stop.wait()
        await server.aclose()
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await server.aclose()
