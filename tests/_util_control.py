"""Helpers for the control-plane tests: the control routes on a real aiohttp server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection

import aiohttp
from aiohttp import web

from mediastream.config import Config
from mediastream.control import ProviderClients, add_control_routes


@contextlib.asynccontextmanager
async def control_server(
    config: Config, agents: Collection[str]
) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """``add_control_routes`` served on 127.0.0.1:<ephemeral>, its REST clients built from
    ``config``'s credentials without retries; yields the base URL and a client session."""
    async with aiohttp.ClientSession() as http:
        app = web.Application()
        clients = ProviderClients(http, config.credentials, retries=0)
        add_control_routes(app, config=config, agents=agents, clients=clients)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            yield f"http://{host}:{port}", http
        finally:
            await runner.cleanup()
