"""``GET /calls`` and the access rule it shares with ``/phone`` and ``/dashboard``.

Real servers on 127.0.0.1, real aiohttp clients, calls from the fake provider of
protocols.md; the rule's every refusal path is checked on the wire.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import aiohttp
import numpy as np
import pytest
from _util_server import FakeProvider, running_server, scaled, server_config

from audiocodecs import ulaw_encode
from mediastream.config import Config, ProviderCredentials
from mediastream.echo import echo_bot
from mediastream.server.access import (
    Access,
    access_mode,
    check_access,
    has_provider_credentials,
    is_loopback,
    startup_note,
)
from mediastream.server.calls import SILENCE_DBFS, CallBook, _percentiles_us, level_dbfs
from mediastream.server.ending import STOPPED

TOKEN = "s3cret-api-token"


async def _get(port: int, path: str, headers: dict[str, str] | None = None,
               ) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}{path}", headers=headers or {}) as r:
        body: Any = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, dict(r.headers), body


# ---------------------------------------------------------------- the rule itself


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.5.6.7", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("::", False),
    ("", False), ("192.168.1.10", False), ("example.com", False),
])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("credential", [
    {"twilio_account_sid": "AC1"}, {"twilio_auth_token": "t"},
    {"twilio_webhook_signing_secret": "s"}, {"telnyx_api_key": "k"},
    {"telnyx_public_key": "p"}, {"plivo_auth_id": "i"}, {"plivo_auth_token": "t"},
])
def test_any_provider_credential_closes_the_open_mode(credential: dict[str, str]) -> None:
    config = Config(host="127.0.0.1", credentials=ProviderCredentials(**credential))
    assert has_provider_credentials(config)
    assert access_mode(config) is Access.OFF
    assert "provider credentials" in startup_note(config, Access.OFF)
    # ... and a token turns it back on, behind the token.
    assert access_mode(Config(host="127.0.0.1", api_token=TOKEN,
                              credentials=ProviderCredentials(**credential))) is Access.TOKEN


def test_modes() -> None:
    assert access_mode(Config(host="127.0.0.1")) is Access.OPEN
    assert access_mode(Config(host="0.0.0.0")) is Access.OFF
    assert access_mode(Config(host="127.0.0.1", require_auth=True)) is Access.OFF
    assert access_mode(Config(host="0.0.0.0", api_token=TOKEN)) is Access.TOKEN
    # An embedder that cannot say where it is bound is never open.
    assert access_mode(Config(host="127.0.0.1"), bound_to="") is Access.OFF
    note = startup_note(Config(host="0.0.0.0"), Access.OFF)
    assert "MEDIASTREAM_API_TOKEN" in note and "0.0.0.0" in note
    assert "/phone" in startup_note(Config(host="127.0.0.1", port=8765), Access.OPEN)


def test_check_access_paths() -> None:
    from aiohttp import web

    check_access(Access.OPEN, None, {}, data=True)
    check_access(Access.TOKEN, TOKEN, {}, data=False)  # the pages' static code
    check_access(Access.TOKEN, TOKEN, {"Authorization": f"Bearer {TOKEN}"}, data=True)
    check_access(Access.TOKEN, TOKEN, {"Authorization": f"bearer {TOKEN}"}, data=True)
    with pytest.raises(web.HTTPForbidden):
        check_access(Access.OFF, None, {}, data=False)
    for headers in ({}, {"Authorization": "Basic Zm9vOmJhcg=="}, {"Authorization": "Bearer "}):
        with pytest.raises(web.HTTPUnauthorized):
            check_access(Access.TOKEN, TOKEN, headers, data=True)
    with pytest.raises(web.HTTPForbidden):
        check_access(Access.TOKEN, TOKEN, {"Authorization": "Bearer wrong"}, data=True)


# ---------------------------------------------------------------- on the wire


@pytest.mark.asyncio
async def test_calls_open_on_loopback_lists_a_live_call_then_its_end() -> None:
    async with running_server(echo_bot) as server:
        status, headers, body = await _get(server.port, "/calls")
        assert status == 200 and headers["Cache-Control"] == "no-store"
        assert body["calls"] == [] and body["ended"] == [] and len(body["instances"]) == 1
        fake = FakeProvider("telnyx", params={"direction": "inbound"})
        async with fake.connect(server):
            await fake.open()
            fake.start_pump()
            tone = (3000 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype("<i2")
            payload = bytes(ulaw_encode(tone))
            for _ in range(25):
                await fake.send(fake.media(payload))
            await fake.wait_audio(160 * 20)
            status, _, body = await _get(server.port, "/calls")
            assert status == 200
            [row] = body["calls"]
            assert row["call_id"] == fake.call_id and row["provider"] == "telnyx"
            assert row["state"] == "live" and row["direction"] == "inbound"
            assert row["frames_in"] == 25 and row["frames_out"] >= 20
            # a 3000-amplitude sine: RMS 2121 -> -23.8 dBFS (μ-law adds < 0.1 dB)
            assert math.isclose(row["level_in_dbfs"], -23.8, abs_tol=0.3)
            assert row["processing_p50_us"] is not None
            assert row["processing_p99_us"] >= row["processing_p50_us"] > 0
            assert row["inbound"] == "pcmu/8000"
            await fake.send(fake.stop())
            await fake.closed()
        for _ in range(100):
            status, _, body = await _get(server.port, "/calls")
            if not body["calls"]:
                break
            await asyncio.sleep(scaled(0.02))
        assert body["calls"] == []
        [ended] = body["ended"]
        assert ended["call_id"] == fake.call_id and ended["state"] == "ended"
        assert ended["outcome"] == "stopped" and ended["ended_at"] >= ended["started_at"]
        assert ended["frames_in"] == 25


@pytest.mark.asyncio
async def test_calls_off_on_a_public_bind() -> None:
    # Bound to every interface (reached here through loopback): off, with the way out.
    async with running_server(echo_bot, host="0.0.0.0") as server:
        status, _, text = await _get(server.port, "/calls")
        assert status == 403 and "MEDIASTREAM_API_TOKEN" in text


@pytest.mark.asyncio
async def test_calls_off_with_credentials_on_loopback() -> None:
    creds = ProviderCredentials(plivo_auth_id="MA1", plivo_auth_token="tok")
    async with running_server(echo_bot, credentials=creds) as server:
        status, _, text = await _get(server.port, "/calls")
        assert status == 403 and "off" in text


@pytest.mark.asyncio
async def test_calls_with_a_token() -> None:
    async with running_server(echo_bot, host="0.0.0.0", api_token=TOKEN) as server:
        status, headers, _ = await _get(server.port, "/calls")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        status, _, _ = await _get(server.port, "/calls", {"Authorization": "Bearer nope"})
        assert status == 403
        status, _, body = await _get(server.port, "/calls", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and body["calls"] == []


@pytest.mark.asyncio
async def test_a_directory_plugs_in() -> None:
    class Cluster:
        async def listing(self) -> dict[str, Any]:
            return {"at": 1.0, "instances": ["a", "b"], "calls": [{"call_id": "x"}],
                    "ended": []}

    async with running_server(echo_bot) as server:
        server.call_directory = Cluster()
        status, _, body = await _get(server.port, "/calls")
        assert status == 200 and body["instances"] == ["a", "b"]
        assert body["calls"] == [{"call_id": "x"}]


# ---------------------------------------------------------------- the book


def test_levels() -> None:
    assert level_dbfs(b"") == SILENCE_DBFS
    assert level_dbfs(bytes(320)) == SILENCE_DBFS
    full = np.full(160, 32767, dtype="<i2").tobytes()
    assert math.isclose(level_dbfs(full), 0.0, abs_tol=0.01)


def test_the_ended_ring_forgets_old_calls() -> None:
    book = CallBook(keep_s=0.0)
    book._ended.append((0.0, {"call_id": "old"}))
    assert book.rows() == ([], [])
    assert len(book) == 0
    # A call that never went live has no record: closing it changes nothing.
    book.close(None, STOPPED)
    assert book.rows() == ([], [])


def test_percentiles() -> None:
    assert _percentiles_us([]) == (None, None)
    assert _percentiles_us([1e-6 * n for n in range(1, 101)]) == (50.0, 99.0)
    assert _percentiles_us([2e-5]) == (20.0, 20.0)


@pytest.mark.asyncio
async def test_mounted_elsewhere_it_is_never_open() -> None:
    """An app of the embedder's, on a port whose address the rule cannot know: even a
    loopback server without credentials keeps /calls behind the token there."""
    from aiohttp import web

    from mediastream.server import MediaStreamServer, mount

    for token, expected in ((None, 403), (TOKEN, 200)):
        config = server_config(api_token=token)
        async with MediaStreamServer(config, bot=echo_bot) as server:
            app = web.Application()
            mount(app, server, control=False)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            try:
                port = runner.addresses[0][1]
                status, _, _ = await _get(port, "/calls", {"Authorization": f"Bearer {TOKEN}"})
                assert status == expected
                # The server's own port follows the rule for its own bind.
                status, _, _ = await _get(server.port, "/calls",
                                          {"Authorization": f"Bearer {TOKEN}"})
                assert status == 200
            finally:
                await runner.cleanup()
