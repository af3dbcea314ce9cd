"""``python -m mediastream.healthcheck``, the container image's HEALTHCHECK, against real
servers: healthy while serving, unhealthy while draining (503), when nothing listens, or
when its settings cannot be read; it follows the port and TLS settings as the server does.

Each check runs as the container runtime runs it: a separate process, judged by its exit
code, with the settings in its environment.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest
from _util_server import running_server, scaled, self_signed, served_elsewhere
from aiohttp import web

from mediastream.echo import echo_bot
from mediastream.healthcheck import HEALTH_PATH, probe_host
from mediastream.server import mount


async def _healthcheck(**env: str) -> tuple[int, str, str]:
    """Run the check in its own process with only these MEDIASTREAM_* settings."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASTREAM_")}
    environ.update(env)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediastream.healthcheck",
        env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=scaled(60.0))
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
async def test_healthy_while_the_server_serves() -> None:
    async with running_server(echo_bot) as server:
        code, out, err = await _healthcheck(
            MEDIASTREAM_HOST="0.0.0.0", MEDIASTREAM_PORT=str(server.port))
    assert code == 0, err
    assert f"healthy: 127.0.0.1:{server.port}{HEALTH_PATH}" in out
    assert '"status": "ok"' in out


@pytest.mark.asyncio
async def test_unhealthy_while_draining() -> None:
    # A drain closes the server's own listening socket, so its /healthz answer is seen
    # here on an app it is mounted in: the same handler, still reachable.
    async with running_server(echo_bot) as server:
        app = web.Application()
        mount(app, server, control=False)
        async with served_elsewhere(app) as port:
            before = await _healthcheck(MEDIASTREAM_PORT=str(port))
            await server.aclose()
            after = await _healthcheck(MEDIASTREAM_PORT=str(port))
    assert before[0] == 0, before[2]
    code, _out, err = after
    assert code == 1
    assert f"127.0.0.1:{port}{HEALTH_PATH} answered 503" in err
    assert '"status": "draining"' in err


@pytest.mark.asyncio
async def test_unhealthy_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = await _healthcheck(MEDIASTREAM_PORT=str(port))
    assert code == 1
    assert out == ""
    assert f"unhealthy: 127.0.0.1:{port}{HEALTH_PATH}: ConnectionRefusedError" in err


@pytest.mark.asyncio
async def test_follows_tls_on_the_port(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    async with running_server(echo_bot, tls_cert=str(cert), tls_key=str(key)) as server:
        plain = await _healthcheck(MEDIASTREAM_PORT=str(server.port))
        tls = await _healthcheck(
            MEDIASTREAM_PORT=str(server.port),
            MEDIASTREAM_TLS_CERT=str(cert), MEDIASTREAM_TLS_KEY=str(key))
    assert plain[0] == 1  # plain HTTP to a TLS port is no answer
    assert tls[0] == 0, tls[2]
    assert '"status": "ok"' in tls[1]


@pytest.mark.asyncio
async def test_unreadable_settings_are_unhealthy_with_the_reason() -> None:
    code, _out, err = await _healthcheck(MEDIASTREAM_PORT="eighty")
    assert code == 1
    assert "MEDIASTREAM_PORT: cannot parse 'eighty' as int" in err


def test_wildcard_binds_are_probed_on_loopback() -> None:
    assert probe_host("0.0.0.0") == "127.0.0.1"
    assert probe_host("") == "127.0.0.1"
    assert probe_host("::") == "::1"
    assert probe_host("10.1.2.3") == "10.1.2.3"
