"""Real processes for the cluster tests: a ``redis-server`` and ``mediastream serve``
instances on loopback, each with its own port, log file and bot log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from _util_server import FakeProvider
from _util_timing import scaled

from mediastream.control.tokens import StreamTokens

ROOT = Path(__file__).resolve().parent.parent
API = "cluster-api-token"
SECRET = "cluster-stream-secret"
REDIS = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stream_token(provider: str, call_id: str) -> str:
    """A stream token as our answer documents carry it (same secret as the instances)."""
    return StreamTokens(SECRET.encode(), 300.0).issue(provider, call_id)


def provider_call(provider: str, token: str | None = None, call_id: str = "") -> FakeProvider:
    """The provider's side of a stream whose token travels as the provider sends it."""
    fake = FakeProvider(provider, call_id=call_id)
    token = token or stream_token(provider, fake.call_id)
    fake.params = {"_token" if provider == "twilio" else "token": token}
    return fake


class RedisServer:
    """``redis-server`` on a free loopback port: no daemon, no persistence."""

    def __init__(self, port: int | None = None) -> None:
        assert REDIS is not None
        self.port = port or free_port()
        self.process = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def ready(self) -> None:
        async with asyncio.timeout(scaled(10)):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                return

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Instance:
    """One ``mediastream serve`` process (see :func:`instance`)."""

    def __init__(self, tmp: Path, name: str, *args: str, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.log = tmp / f"{name}.log"
        self.bot_log = tmp / f"{name}.bot.jsonl"
        self.bot_log.touch()
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("MEDIASTREAM_", "TWILIO_", "TELNYX_", "PLIVO_",
                                        "PROMETHEUS_"))}
        environ.update({
            "PYTHONPATH": str(ROOT), "MEDIASTREAM_API_TOKEN": API,
            "MEDIASTREAM_STREAM_TOKEN_SECRET": SECRET, "MEDIASTREAM_REQUIRE_AUTH": "true",
            "CLUSTER_BOT_LOG": str(self.bot_log), **(env or {}),
        })
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mediastream", "serve", "--port", str(self.port),
                 "--bot", str(ROOT / "tests" / "_cluster_bot.py"), "--bot-sample-rate", "8000",
                 *args],
                cwd=ROOT, env=environ, stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def ready(self, listening: int = 1) -> None:
        async with asyncio.timeout(scaled(30)):
            while self.text().count("listening on") < listening:
                assert self.process.poll() is None, "instance exited:\n" + self.text()
                await asyncio.sleep(0.05)

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.bot_log.read_text().splitlines()]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    async def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(scaled(30)):
                while self.process.poll() is None:
                    await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def instances(tmp: Path, count: int, *args: str) -> AsyncIterator[list[Instance]]:
    """``count`` instances started together, stopped (killed if need be) afterwards."""
    started = [Instance(tmp, f"instance{i}", *args) for i in range(count)]
    try:
        await asyncio.gather(*(i.ready() for i in started))
        yield started
    finally:
        for process in started:
            with contextlib.suppress(TimeoutError):
                await process.stop()
            process.kill()


async def api(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One call-API request with the bearer token; (status, JSON body)."""
    headers = {"Authorization": f"Bearer {API}"}
    url = f"http://127.0.0.1:{port}{path}"
    async with aiohttp.ClientSession() as http, \
            http.request(method, url, json=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def call_ids(port: int) -> set[str]:
    status, body = await api(port, "GET", "/calls")
    assert status == 200, body
    return {row["call_id"] for row in body["calls"]}


async def eventually(check: Any, timeout: float = 10.0) -> None:
    """Poll the async predicate ``check`` until it holds (fail after ``timeout``)."""
    async with asyncio.timeout(scaled(timeout)):
        while not await check():
            await asyncio.sleep(0.05)
