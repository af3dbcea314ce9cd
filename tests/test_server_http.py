"""One port for plain HTTP and media WebSockets: the demultiplexer and the HTTP side.

Raw sockets send exactly the bytes under test (garbage, a TLS ClientHello, oversized or
slow heads); aiohttp and websockets clients do the ordinary requests.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import aiohttp
import pytest
from _util_server import (
    FakeProvider,
    running_server,
    scaled,
    self_signed,
    served_elsewhere,
    server_config,
    ulaw_payload,
)
from aiohttp import web

from mediastream.echo import echo_bot
from mediastream.server import MediaStreamServer, mount
from mediastream.server.demux import BadHead, parse_head


async def _raw(port: int, data: bytes, *, then_wait: bool = True) -> bytes:
    """Send ``data`` on a fresh connection and return everything until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(scaled(5)):
            return await reader.read() if then_wait else b""
    finally:
        writer.close()
        await writer.wait_closed()


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.asyncio
async def test_webhook_form_post_and_media_socket_share_the_port() -> None:
    async with running_server(echo_bot) as server:
        fake = FakeProvider("twilio")
        async with fake.connect(server), aiohttp.ClientSession() as http:
            await fake.open()
            fake.start_pump()
            form = {"CallSid": fake.call_id, "AccountSid": "AC" + "0" * 32,
                    "From": "+15551230001", "To": "+15559870002", "CallStatus": "ringing",
                    "Direction": "inbound"}
            async with http.post(f"http://127.0.0.1:{server.port}/twilio", data=form) as r:
                assert r.status == 200
                assert "xml" in r.headers["Content-Type"]
                twiml = await r.text()
            assert "<Connect>" in twiml and "/ws/twilio" in twiml
            sent = ulaw_payload(3)
            for i in range(3):
                await fake.send(fake.media(sent[i * 160 : (i + 1) * 160]))
            assert await fake.wait_audio(len(sent)) == sent
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000


@pytest.mark.asyncio
async def test_an_embedders_app_serves_form_posts_on_the_same_port() -> None:
    seen: list[dict[str, str]] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(dict(await request.post()))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/my/hook", hook)
    async with (
        MediaStreamServer(server_config(), bot=echo_bot, app=app) as server,
        aiohttp.ClientSession() as http,
    ):
        url = f"http://127.0.0.1:{server.port}"
        async with http.post(f"{url}/my/hook", data={"a": "1", "b": "two words"}) as r:
            assert r.status == 200 and await r.json() == {"ok": True}
        # Keep-alive: the next requests reuse the connection through aiohttp.
        async with http.get(f"{url}/healthz") as r:
            assert r.status == 200
            assert (await r.json())["status"] == "ok"
    assert seen == [{"a": "1", "b": "two words"}]


@pytest.mark.asyncio
async def test_mount_into_an_appserved_elsewhere() -> None:
    async with MediaStreamServer(server_config(), bot=echo_bot) as server:
        app = web.Application()
        mount(app, server, control=False)
        async with (
            served_elsewhere(app) as port,
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as r,
        ):
            assert r.status == 200
            assert "mediastream_active_calls" in await r.text()


@pytest.mark.asyncio
async def test_healthz_and_metrics() -> None:
    async with running_server(echo_bot) as server:
        fake = FakeProvider("plivo")
        async with fake.connect(server):
            await fake.open()
            fake.start_pump()
            await fake.send(fake.media(ulaw_payload(1)))
            await fake.wait_audio(160)
            async with aiohttp.ClientSession() as http:
                base = f"http://127.0.0.1:{server.port}"
                async with http.get(f"{base}/healthz") as r:
                    health = await r.json()
                assert health == {"status": "ok", "calls": 1, "connections": 1}
                async with http.get(f"{base}/metrics") as r:
                    assert r.headers["Content-Type"].startswith("text/plain")
                    live = await r.text()
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{server.port}/metrics") as r,
        ):
            after = await r.text()
    assert "mediastream_active_calls 1.0" in live
    assert "mediastream_active_calls 0.0" in after
    assert 'mediastream_calls_total{outcome="stopped",provider="plivo"} 1.0' in after
    assert 'mediastream_frames_in_total{provider="plivo"} 1.0' in after
    assert 'mediastream_frames_out_total{provider="plivo"} 1.0' in after
    assert "mediastream_frame_processing_seconds_count 1.0" in after


@pytest.mark.asyncio
async def test_healthz_says_draining_during_shutdown() -> None:
    server = MediaStreamServer(server_config(drain_timeout=scaled(5)), bot=echo_bot)
    await server.start()
    try:
        fake = FakeProvider("twilio")
        async with fake.connect(server), aiohttp.ClientSession() as http:
            await fake.open()
            url = f"http://127.0.0.1:{server.port}/healthz"
            async with http.get(url) as r:
                assert r.status == 200
            closing = asyncio.ensure_future(server.aclose())
            async with asyncio.timeout(scaled(5)):
                while not server.draining:
                    await asyncio.sleep(0)
            # The listener is closed, but this keep-alive connection still answers.
            async with http.get(url) as r:
                assert r.status == 503
                assert (await r.json())["status"] == "draining"
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000
            await asyncio.wait_for(closing, scaled(10))
    finally:
        await server.aclose()


@pytest.mark.asyncio
async def test_media_path_without_upgrade_is_426() -> None:
    async with running_server(echo_bot) as server:
        response = await _raw(server.port, b"GET /ws/twilio HTTP/1.1\r\nHost: x\r\n"
                                           b"Connection: close\r\n\r\n")
    assert _status(response) == 426


@pytest.mark.asyncio
async def test_unknown_path_is_404() -> None:
    async with running_server(echo_bot) as server:
        response = await _raw(server.port, b"POST /nothing HTTP/1.1\r\nHost: x\r\n"
                                           b"Content-Length: 3\r\nConnection: close\r\n\r\na=b")
    assert _status(response) == 404


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),  # TLS ClientHello
        b"\x00\x01\x02\x03",
        b"HELLO WORLD\r\n\r\n",
        b"GET /x HTTP/2.0\r\n\r\n",
        b"GET /x HTTP/1.1\r\nno colon here\r\n\r\n",
        b"get lowercase is a token " * 3,
    ],
)
async def test_garbage_is_400(garbage: bytes) -> None:
    async with running_server(echo_bot) as server:
        response = await _raw(server.port, garbage)
    assert _status(response) == 400


@pytest.mark.asyncio
async def test_oversized_head_is_431() -> None:
    async with running_server(echo_bot, max_head_size=1024) as server:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
        response = await _raw(server.port, head)
    assert _status(response) == 431


@pytest.mark.asyncio
async def test_slow_head_is_408() -> None:
    async with running_server(echo_bot, head_timeout=0.2) as server:
        response = await _raw(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert _status(response) == 408
    assert b"Connection: close" in response


@pytest.mark.asyncio
async def test_head_split_across_many_packets_is_fine() -> None:
    async with running_server(echo_bot) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        for i in range(len(request)):
            writer.write(request[i : i + 1])
            await writer.drain()
        async with asyncio.timeout(scaled(5)):
            response = await reader.read()
        writer.close()
        await writer.wait_closed()
    assert _status(response) == 200
    assert json.loads(response.partition(b"\r\n\r\n")[2])["status"] == "ok"


def test_parse_head() -> None:
    head = parse_head(
        b"GET /ws/twilio?a=1 HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nX-A: 1\r\nx-a: 2"
    )
    assert (head.method, head.path, head.query) == ("GET", "/ws/twilio", "a=1")
    assert head.is_websocket_upgrade
    assert head.headers["x-a"] == "1, 2"
    with pytest.raises(BadHead):
        parse_head(b"GET /x HTTP/1.1\r\n: empty name")


@pytest.mark.asyncio
async def test_tls_on_the_port_itself(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with running_server(echo_bot, tls_cert=str(cert), tls_key=str(key)) as server:
        fake = FakeProvider("twilio")
        async with fake.connect(server, ssl=trusting):
            await fake.open()
            fake.start_pump()
            sent = ulaw_payload(3)
            for i in range(3):
                await fake.send(fake.media(sent[i * 160 : (i + 1) * 160]))
            assert await fake.wait_audio(len(sent)) == sent
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"https://127.0.0.1:{server.port}/healthz", ssl=trusting) as r,
        ):
            assert r.status == 200
        # Plain HTTP on the TLS port is not a TLS ClientHello: the handshake fails, the
        # connection closes, and nothing else is affected.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(scaled(5)):
            assert not (await reader.read()).startswith(b"HTTP/1.1 200")
        writer.close()
        await writer.wait_closed()


@pytest.mark.asyncio
async def test_mount_with_control_routes_needs_to_know_where_the_media_goes() -> None:
    async with MediaStreamServer(server_config(), bot=echo_bot) as server:
        with pytest.raises(ValueError, match="public_url") as refused:
            mount(web.Application(), server)
        assert "control=False" in str(refused.value)
    public = server_config(public_url="https://media.example.com")
    async with MediaStreamServer(public, bot=echo_bot) as server:
        app = web.Application()
        mount(app, server)
        async with (
            served_elsewhere(app) as port,
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{port}/twilio", data={"CallSid": "CA1"}) as r,
        ):
            assert r.status == 200
            assert 'url="wss://media.example.com/ws/twilio"' in await r.text()
