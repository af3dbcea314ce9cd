"""mediastream mounted in a FastAPI application, served by a real uvicorn.

One mount serves calls end to end -- signed webhook, answer document pointing at the
mounted path, media WebSocket, the bot, hang-up -- for each provider, with signatures and
stream tokens on; a Pipecat bot answers; an endpoint of the application's own answers
with a document from :meth:`MediaStreamASGI.answer`; shutdown drains live calls.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
import websockets
from _util_caller import check_echo_call, scaled

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import uvicorn
from fastapi import FastAPI, Request, Response

from mediastream.asgi import MediaStreamASGI, asgi_app, serve_with_drain
from mediastream.call import Call, CallEnded
from mediastream.caller import run_calls
from mediastream.config import Config, ProviderCredentials
from mediastream.echo import echo_bot

PROVIDERS = ("twilio", "telnyx", "plivo")
MOUNT = "/telephony"


def _credentials() -> tuple[ProviderCredentials, dict[str, str]]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    seed = bytes(range(32))
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)
    credentials = ProviderCredentials(
        # Signing credentials only: no REST client dials the providers' clouds.
        twilio_auth_token="twilio-token",
        telnyx_public_key=base64.b64encode(public).decode(), plivo_auth_token="plivo-token")
    secrets = {"twilio": "twilio-token", "telnyx": base64.b64encode(seed).decode(),
               "plivo": "plivo-token"}
    return credentials, secrets


class App:
    """A FastAPI application with mediastream mounted, under uvicorn on 127.0.0.1."""

    def __init__(self, telephony: MediaStreamASGI, server: uvicorn.Server, port: int) -> None:
        self.telephony = telephony
        self.server = server
        self.base = f"http://127.0.0.1:{port}"


@asynccontextmanager
async def _served(bot: Any, **config: Any) -> AsyncIterator[App]:
    credentials, _ = _credentials()
    telephony = asgi_app(Config(credentials=credentials, **config), bot)
    app = FastAPI(lifespan=telephony.lifespan)
    app.mount(MOUNT, telephony)

    @app.post("/voice")
    async def voice(request: Request) -> Response:
        """The application's own answer endpoint (not signed-checked: that is its job)."""
        form = dict(parse_qsl((await request.body()).decode()))
        document = telephony.answer(
            request.scope, mount_path=MOUNT, call_id=form["CallSid"],
            parameters={"plan": "gold"})
        return Response(document, media_type=telephony.answer_content_type("twilio"))

    async with _uvicorn(app, telephony) as (port, server):
        yield App(telephony, server, port)


@asynccontextmanager
async def _uvicorn(app: Any, *drained: Any, lifespan: str = "on"
                   ) -> AsyncIterator[tuple[int, uvicorn.Server]]:
    """``app`` under a real uvicorn on 127.0.0.1:<free port> (``serve_with_drain`` with
    ``drained``), stopped afterwards; yields the port and the uvicorn server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    started: asyncio.Future[uvicorn.Server] = asyncio.get_running_loop().create_future()
    uv_config = uvicorn.Config(app, log_level="warning", lifespan=lifespan)
    task = asyncio.create_task(serve_with_drain(uv_config, *drained, sockets=[sock],
                                                started=started))
    server: uvicorn.Server | None = None
    try:
        server = await asyncio.wait_for(started, scaled(10))
        yield port, server
    finally:
        if server is not None and not task.done():
            server.should_exit = True
        await asyncio.wait_for(task, scaled(20))
        sock.close()


@pytest.mark.asyncio
async def test_signed_dial_in_through_the_mounted_webhooks_for_every_provider() -> None:
    _, secrets = _credentials()
    async with _served(echo_bot) as app:
        signed = await asyncio.wait_for(asyncio.gather(*(
            run_calls(f"{app.base}{MOUNT}/{p}", provider=p, seconds=1.5,  # type: ignore[arg-type]
                      secret=secrets[p])
            for p in PROVIDERS)), scaled(20))
        unsigned, direct = await asyncio.wait_for(asyncio.gather(
            run_calls(f"{app.base}{MOUNT}/twilio", provider="twilio", seconds=1.0),
            run_calls(f"ws://127.0.0.1:{app.base.rsplit(':', 1)[1]}{MOUNT}/ws/plivo",
                      provider="plivo", seconds=1.0),
        ), scaled(15))
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{app.base}{MOUNT}/metrics") as response,
        ):
            metrics = await response.text()
    for provider, report in zip(PROVIDERS, signed, strict=True):
        call = report.calls[0]
        check_echo_call(call)
        # The answer document pointed at the mounted media path.
        assert call.stream_url.startswith(f"ws://127.0.0.1:{app.base.rsplit(':', 1)[1]}"
                                          f"{MOUNT}/ws/{provider}"), call.stream_url
    # Secure by default: no signature, no answer; no stream token, no stream.
    assert unsigned.handshake_failures == 1 and "HTTP 403" in (unsigned.calls[0].failure or "")
    refused = direct.calls[0]
    assert refused.close_code == 1008, refused
    # One server state: the calls are counted where `mediastream serve` counts them.
    assert 'mediastream_calls_total{outcome="stopped",provider="twilio"} 1.0' in metrics
    assert 'outcome="unauthorized",provider="plivo"} 1.0' in metrics


@pytest.mark.asyncio
async def test_the_applications_own_answer_endpoint_gets_a_valid_stream() -> None:
    _, secrets = _credentials()
    seen: list[dict[str, str]] = []

    async def bot(call: Call) -> None:
        seen.append(dict(call.info.custom_parameters))
        await echo_bot(call)

    async with _served(bot) as app:
        report = await asyncio.wait_for(run_calls(
            f"{app.base}/voice", provider="twilio", seconds=1.0, secret=secrets["twilio"]),
            scaled(15))
    check_echo_call(report.calls[0])
    # The token was spent at start and never reaches the bot; the parameter does.
    assert seen == [{"plan": "gold"}]


@pytest.mark.asyncio
async def test_a_pipecat_bot_serves_a_call_through_the_mount() -> None:
    pytest.importorskip("pipecat")
    from bot import echo
    from bot.transport import pipecat_runner

    _, secrets = _credentials()
    async with _served(pipecat_runner(echo.run_bot)) as app:
        report = await asyncio.wait_for(run_calls(
            f"{app.base}{MOUNT}/twilio", provider="twilio", seconds=2.0,
            secret=secrets["twilio"]), scaled(20))
    call = report.calls[0]
    assert call.end == "completed", (call.failure, call.close_code, call.close_reason)
    assert call.probes > 0 and call.probes_returned == call.probes
    assert call.protocol_errors == 0, call.protocol_error_samples


@pytest.mark.asyncio
async def test_refusals_and_plain_http_on_the_mount() -> None:
    async with _served(echo_bot) as app:
        ws_base = app.base.replace("http://", "ws://") + MOUNT
        for path, status in (("/ws/nowhere", 404), ("/ws/twilio/nobody", 404)):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(ws_base + path):
                    pass
            assert refused.value.response.status_code == status, path
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{app.base}{MOUNT}/ws/twilio") as response:
                assert response.status == 426
            async with http.get(f"{app.base}{MOUNT}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["status"] == "ok"
            async with http.get(f"{app.base}{MOUNT}/nothing") as response:
                assert response.status == 404
            async with http.get(f"{app.base}{MOUNT}/dialout") as response:
                assert response.status == 405


@pytest.mark.asyncio
async def test_a_message_over_the_limit_is_closed_1009() -> None:
    from mediastream.control.auth import stream_tokens

    async with _served(echo_bot, max_message_size=4096) as app:
        url = app.base.replace("http://", "ws://") + MOUNT + "/ws/plivo"
        token = stream_tokens(app.telephony.config).issue("plivo")
        async with websockets.connect(f"{url}?token={token}") as ws:
            await ws.send("x" * 5000)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), scaled(5))
            assert ws.protocol.close_code == 1009


@pytest.mark.asyncio
async def test_shutdown_drains_live_calls_before_uvicorn_closes_them() -> None:
    _, secrets = _credentials()
    ended: list[str] = []

    async def bot(call: Call) -> None:
        while True:
            event = await call.receive()
            if isinstance(event, CallEnded):
                ended.append(event.reason)
                return
            call.send_audio(b"\x00\x10" * 160, 8000)

    async with _served(bot, drain_timeout=0.5) as app:
        calls = asyncio.ensure_future(run_calls(
            f"{app.base}{MOUNT}/twilio", provider="twilio", calls=2, seconds=30.0,
            secret=secrets["twilio"]))
        while app.telephony.server.active_calls < 2:
            await asyncio.sleep(0.05)
        app.server.should_exit = True
        async with aiohttp.ClientSession() as http:
            while True:  # during the drain: the health check says so, uvicorn still serves
                async with http.get(f"{app.base}{MOUNT}/healthz") as response:
                    if response.status == 503:
                        assert (await response.json())["status"] == "draining"
                        break
                await asyncio.sleep(0.02)
        report = await asyncio.wait_for(calls, scaled(15))
    # Closed by us with 1001 after the drain, not by uvicorn with 1012.
    assert [c.close_code for c in report.calls] == [1001, 1001], [
        (c.close_code, c.close_reason, c.failure) for c in report.calls]
    assert len(ended) == 2, ended


@pytest.mark.asyncio
async def test_the_readme_fastapi_example_serves_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from starlette.routing import Mount

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (block,) = [b for b in readme.split("```python\n") if "asgi_app(Config.from_env()" in b]
    for name in [n for n in __import__("os").environ if n.startswith("MEDIASTREAM_")]:
        monkeypatch.delenv(name)
    namespace: dict[str, Any] = {}
    exec(compile(block.split("```", 1)[0], "README:fastapi", "exec"), namespace)
    app, telephony = namespace["app"], namespace["telephony"]
    assert [r.path for r in app.routes if isinstance(r, Mount)] == [MOUNT]
    async with _uvicorn(app, telephony) as (port, _):
        mounted, own = await asyncio.wait_for(asyncio.gather(
            run_calls(f"http://127.0.0.1:{port}{MOUNT}/twilio", provider="twilio", seconds=1.0),
            run_calls(f"http://127.0.0.1:{port}/voice", provider="twilio", seconds=1.0),
        ), scaled(15))
    for report in (mounted, own):
        check_echo_call(report.calls[0])


@pytest.mark.asyncio
async def test_one_state_shared_with_a_server_on_its_own_port() -> None:
    from mediastream.server import MediaStreamServer

    async with MediaStreamServer(Config(host="127.0.0.1", port=0), bot=echo_bot) as own:
        telephony = asgi_app(server=own)
        app = FastAPI()
        app.mount(MOUNT, telephony)
        async with _uvicorn(app, lifespan="off") as (port, _):
            mounted, direct = await asyncio.wait_for(asyncio.gather(
                run_calls(f"ws://127.0.0.1:{port}{MOUNT}/ws/twilio", provider="twilio",
                          seconds=1.0),
                run_calls(f"ws://127.0.0.1:{own.port}/ws/twilio", provider="twilio",
                          seconds=1.0),
            ), scaled(15))
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{own.port}/metrics") as response,
            ):
                metrics = await response.text()
    for report in (mounted, direct):
        check_echo_call(report.calls[0])
    # Both calls, whichever socket they came in on, are the one server's.
    assert 'mediastream_calls_total{outcome="stopped",provider="twilio"} 2.0' in metrics
    with pytest.raises(TypeError, match="either server="):
        asgi_app(Config(), echo_bot, server=own)


@pytest.mark.asyncio
async def test_dialout_through_the_mount_points_the_call_at_the_mounted_path() -> None:
    import xml.etree.ElementTree as ET

    from fakes.providers import FakeTwilio

    sid, token = "AC" + "4" * 32, "twilio-token"
    twilio = FakeTwilio(sid, token)
    credentials = ProviderCredentials(twilio_account_sid=sid, twilio_auth_token=token,
                                      twilio_api_base_url=await twilio.start())
    config = Config(credentials=credentials, api_token="dial-token",
                    public_url="https://voice.example.com")
    telephony = asgi_app(config, echo_bot)
    app = FastAPI(lifespan=telephony.lifespan)
    app.mount(MOUNT, telephony)
    try:
        async with (
            _uvicorn(app, telephony) as (port, _),
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{port}{MOUNT}/dialout",
                      json={"provider": "twilio", "to": "+15550001111", "from": "+15550002222"},
                      headers={"Authorization": "Bearer dial-token"}) as response,
        ):
            assert response.status == 201, await response.text()
            placed = await response.json()
    finally:
        await twilio.close()
    twiml = twilio.calls[placed["call_id"]]["twiml"]
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None
    assert stream.get("url") == f"wss://voice.example.com{MOUNT}/ws/twilio"


@pytest.mark.asyncio
async def test_get_calls_on_the_mount_needs_the_api_token() -> None:
    """Under ASGI the server's address is unknown: /calls is behind the API token only
    (the softphone and dashboard pages are not served there)."""
    for token, expected in ((None, 403), ("asgi-token", 200)):
        async with _served(echo_bot, api_token=token) as app, aiohttp.ClientSession() as http:
            headers = {"Authorization": "Bearer asgi-token"}
            async with http.get(f"{app.base}{MOUNT}/calls", headers=headers) as response:
                assert response.status == expected
                if expected == 200:
                    assert (await response.json())["calls"] == []
            async with http.get(f"{app.base}{MOUNT}/phone") as response:
                assert response.status == 404
