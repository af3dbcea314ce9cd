"""Redis configured but unreachable (nothing listens on its port): the token check fails
closed by default, open when configured; the API answers 503 for what needs Redis and
still serves the calls this process holds. Needs no redis-server: that is the point.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest
from _util_cluster import free_port, provider_call
from _util_server import RecordingBot, running_server

from mediastream.call import BotMessage
from mediastream.server import MediaStreamServer

pytest.importorskip("redis", reason="the [cluster] extra (redis package) is not installed")

SECRET = "cluster-stream-secret"  # _util_cluster's, which issues the tokens
API = "t0ken"


async def api(server: MediaStreamServer, method: str, path: str, body: Any = None
              ) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {API}"}
    async with aiohttp.ClientSession() as http, http.request(
            method, f"http://127.0.0.1:{server.port}{path}", json=body,
            headers=headers) as response:
        text = await response.text()
    return response.status, json.loads(text)


def _settings(**changes: Any) -> dict[str, Any]:
    return {"redis_url": f"redis://127.0.0.1:{free_port()}/0", "require_auth": True,
            "stream_token_secret": SECRET, "api_token": API, **changes}


@pytest.mark.asyncio
async def test_unreachable_redis_refuses_stream_tokens_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = RecordingBot(echo=False)
    with caplog.at_level(logging.INFO):
        async with running_server(bot, **_settings()) as server:
            fake = provider_call("twilio")
            async with fake.connect(server):
                await fake.open()
                code, _ = await fake.closed()
            status, body = await api(server, "GET", "/calls")
    assert code == 1008 and not bot.calls
    assert status == 503 and "redis" in body["error"]
    text = caplog.text
    assert "redis unreachable" in text
    assert "shared state is unreachable (failing closed)" in text


@pytest.mark.asyncio
async def test_fail_open_accepts_on_the_local_check_and_local_commands_still_work() -> None:
    bot = RecordingBot(echo=False)
    async with running_server(bot, **_settings(redis_fail_open=True)) as server:
        fake = provider_call("twilio")
        async with fake.connect(server):
            await fake.open()
            fake.start_pump()
            await bot.started.wait()
            status, _ = await api(server, "POST", f"/calls/{fake.call_id}/message", {"a": 1})
            assert status == 200
            assert [m.data for m in await bot.wait_for(BotMessage)] == [{"a": 1}]
            # A call this process does not hold needs Redis to be found: 503.
            status, body = await api(server, "POST", "/calls/CAelsewhere/hangup", {})
            assert status == 503, body
            # Fail open is no replay window on this process: the local record holds.
            replay = provider_call("twilio", token=fake.params["_token"], call_id=fake.call_id)
            async with replay.connect(server):
                await replay.open()
                code, _ = await replay.closed()
            assert code == 1008

