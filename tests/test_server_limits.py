"""Every limit answers clearly: an HTTP status before the upgrade, a close code after.

Timeouts are configured tiny so the tests are fast; nothing here sleeps to assert.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest
import websockets
from _util_reliability import settled
from _util_server import (
    PROVIDERS,
    FakeProvider,
    RecordingBot,
    client_frame,
    running_server,
    scaled,
    ulaw_payload,
    upgrade_request,
)
from websockets.asyncio.client import connect

from mediastream.call import Call, CallEnded
from mediastream.echo import echo_bot
from mediastream.server import server as server_module
from mediastream.server.supervisor import BotSupervisor


async def _status_of_upgrade(port: int, path: str) -> int:
    with pytest.raises(websockets.InvalidStatus) as caught:
        async with connect(f"ws://127.0.0.1:{port}{path}", open_timeout=scaled(5)):
            pass
    return caught.value.response.status_code


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "path", ["/nope", "/ws/skype", "/ws/twilio/a/b", "/wsx", "/ws/twilio/bad%20name"]
)
async def test_unknown_media_path_is_404_before_the_upgrade(path: str) -> None:
    async with running_server(echo_bot) as server:
        assert await _status_of_upgrade(server.port, path) == 404


@pytest.mark.asyncio
async def test_unknown_agent_in_the_path_is_404() -> None:
    async with running_server(echo_bot) as server:
        assert await _status_of_upgrade(server.port, "/ws/twilio/nobody") == 404


@pytest.mark.asyncio
async def test_capacity_is_503_before_the_upgrade_and_frees_up_after() -> None:
    async with running_server(echo_bot, max_calls=1) as server:
        first = FakeProvider("twilio")
        async with first.connect(server):
            await first.open()
            assert await _status_of_upgrade(server.port, "/ws/twilio") == 503
            await first.send(first.stop())
            assert (await first.closed())[0] == 1000
        # The slot is free again.
        second = FakeProvider("plivo")
        async with second.connect(server):
            await second.open()
            await second.send(second.stop())
            assert (await second.closed())[0] == 1000
        text = await _metrics(server.port)
        assert 'mediastream_upgrades_rejected_total{status="503"} 1.0' in text


@pytest.mark.asyncio
async def test_capacity_race_after_start_is_1013() -> None:
    # Two upgrades cannot race past the 503 check in one event loop (the check and the
    # registration run without a yield in between), so the race is staged: the call
    # slots are taken by another call admitted between this upgrade and its start.
    async with running_server(echo_bot, max_calls=1) as server:
        fake = FakeProvider("telnyx")
        async with fake.connect(server):
            server._calls = 1  # another call was admitted meanwhile
            try:
                await fake.open()
                code, reason = await fake.closed()
            finally:
                server._calls = 0
    assert code == 1013
    assert reason == "server at capacity"


@pytest.mark.asyncio
async def test_message_too_big_is_1009() -> None:
    async with running_server(echo_bot, max_message_size=4096) as server:
        fake = FakeProvider("twilio")
        async with fake.connect(server):
            await fake.open()
            await fake.send(fake.media(b"\xff" * 4000))  # 5.3 kB of base64
            code, _ = await fake.closed()
    assert code == 1009


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_bad_json_is_1007(provider: str) -> None:
    async with running_server(echo_bot) as server:
        fake = FakeProvider(provider)
        async with fake.connect(server):
            await fake.open()
            await fake.send('{"event": "media", ')
            code, reason = await fake.closed()
    assert code == 1007
    assert reason and "JSON" in reason


@pytest.mark.asyncio
async def test_bad_base64_is_1007() -> None:
    async with running_server(echo_bot) as server:
        fake = FakeProvider("telnyx")
        async with fake.connect(server):
            await fake.open()
            message = fake.media(b"\xff" * 160)
            message["media"]["payload"] = "not*base64"
            await fake.send(message)
            code, reason = await fake.closed()
    assert code == 1007
    assert reason and "payload" in reason


@pytest.mark.asyncio
async def test_binary_frame_is_1003() -> None:
    async with running_server(echo_bot) as server:
        fake = FakeProvider("twilio")
        async with fake.connect(server):
            await fake.open()
            await fake.send(b"\xff" * 160)
            code, _ = await fake.closed()
    assert code == 1003


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_media_before_start_is_1002(provider: str) -> None:
    async with running_server(echo_bot) as server:
        fake = FakeProvider(provider)
        async with fake.connect(server):
            first = fake.connected()
            if first is not None:
                await fake.send(first)
            await fake.send(fake.media(b"\xff" * 160))
            code, reason = await fake.closed()
    assert code == 1002
    assert reason and "media" in reason


@pytest.mark.asyncio
async def test_unsupported_codec_is_1003() -> None:
    async with running_server(echo_bot) as server:
        fake = FakeProvider("telnyx")
        async with fake.connect(server):
            start = fake.start()
            start["start"]["media_format"]["encoding"] = "OPUS"
            await fake.send(start)
            code, _ = await fake.closed()
    assert code == 1003


@pytest.mark.asyncio
async def test_no_start_in_time_is_1008() -> None:
    async with running_server(echo_bot, first_message_timeout=0.2) as server:
        fake = FakeProvider("twilio")
        async with fake.connect(server):
            await fake.send(fake.connected())  # connected, then nothing
            code, reason = await fake.closed()
    assert code == 1008
    assert reason and "no start" in reason


@pytest.mark.asyncio
async def test_idle_media_is_1008_and_the_bot_hears_the_end() -> None:
    bot = RecordingBot()
    async with running_server(bot, idle_media_timeout=0.3) as server:
        fake = FakeProvider("plivo")
        async with fake.connect(server):
            await fake.open()
            await fake.send(fake.media(ulaw_payload(1)))
            code, reason = await fake.closed()
        async with asyncio.timeout(scaled(5)):
            await bot.ended.wait()
    assert code == 1008
    assert reason and "no media" in reason
    assert bot.calls[0].ended


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_unknown_agent_parameter_is_1008_never_the_default_bot(provider: str) -> None:
    default = RecordingBot()
    async with running_server(default) as server:
        fake = FakeProvider(provider, params={"agent": "nobody"})
        async with fake.connect(server):
            await fake.open()
            code, reason = await fake.closed()
    assert code == 1008
    assert reason == "unknown agent nobody"
    assert not default.calls


class Flood:
    """Sends 60 s of audio at once; with a 60 s playout lead it all goes out at once."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    async def __call__(self, call: Call) -> None:
        call.send_audio(b"\x00\x10" * 16000 * 60, 16000)
        call.end_utterance()
        async for _ in call:
            pass
        self.ended.set()


@pytest.mark.asyncio
async def test_a_peer_that_stops_reading_is_cut_off_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from mediastream.agents import AgentRegistry

    flood = Flood()
    registry = AgentRegistry(echo_bot, {"flood": flood})
    async with running_server(
        registry, bot_sample_rate=16000, playout_lead=60.0, send_timeout=0.3
    ) as server:
        stuck = FakeProvider("plivo", encoding="l16", sample_rate=16000)
        healthy = FakeProvider("twilio")
        # A small receive buffer (no autotuning), and max_queue=1: the client stops
        # reading its socket once one message is unread, and the kernel holds little.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        async with (
            stuck.connect(server, stuck.path("flood"), max_queue=1, sock=sock),
            healthy.connect(server),
        ):
            await stuck.open()
            await healthy.open()
            healthy.start_pump()
            # Never read: the server's writes fill the socket buffers, then its send blocks
            # until the server gives up on the peer and ends that call.
            async with asyncio.timeout(scaled(10)):
                await flood.ended.wait()
            # The other call is unaffected (16 kHz bot here: the echo is resampled twice,
            # so it is compared by amount, not bytes).
            sent = ulaw_payload(5, seed=4)
            for i in range(5):
                await healthy.send(healthy.media(sent[i * 160 : (i + 1) * 160]))
            assert len(await healthy.wait_audio(len(sent))) >= len(sent)
            await healthy.send(healthy.stop())
            assert (await healthy.closed())[0] == 1000
        text = await _metrics(server.port)
    assert any("peer stopped reading" in r.getMessage() for r in caplog.records)
    assert 'mediastream_calls_total{outcome="send_timeout",provider="plivo"} 1.0' in text


class SlowTalker:
    """Queues 1 s of audio; the shutdown flush must deliver all of it before 1001."""

    def __init__(self) -> None:
        self.end_reason: str | None = None
        self.started = asyncio.Event()

    async def __call__(self, call: Call) -> None:
        call.send_audio(b"\x20\x00" * 8000, 8000)
        self.started.set()
        event = await call.receive()
        while not isinstance(event, CallEnded):
            event = await call.receive()
        self.end_reason = event.reason


@pytest.mark.asyncio
async def test_shutdown_drains_then_flushes_and_closes_1001(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mediastream")
    talker = SlowTalker()
    server_cm = running_server(talker, drain_timeout=0.2)
    server = await server_cm.__aenter__()
    try:
        fake = FakeProvider("telnyx")
        async with fake.connect(server):
            await fake.open()
            fake.start_pump()
            async with asyncio.timeout(scaled(5)):
                await talker.started.wait()
            closing = asyncio.ensure_future(server.aclose())
            code, reason = await fake.closed()
            await asyncio.wait_for(closing, scaled(10))
    finally:
        await server_cm.__aexit__(None, None, None)
    assert code == 1001
    assert reason == "server shutting down"
    # Paced sending would have taken 1 s; the drain was 0.2 s. Everything still arrived.
    assert len(fake.audio) == 8000
    assert talker.end_reason == "server shutting down"
    # New connections are refused once shutdown began.
    with pytest.raises(OSError):
        async with connect(f"ws://127.0.0.1:{server.port}/ws/twilio", open_timeout=scaled(2)):
            pass


@pytest.mark.asyncio
async def test_shutdown_lets_a_call_that_ends_in_time_end_normally() -> None:
    async with running_server(echo_bot, drain_timeout=scaled(5)) as server:
        fake = FakeProvider("twilio")
        async with fake.connect(server):
            await fake.open()
            closing = asyncio.ensure_future(server.aclose())
            async with asyncio.timeout(scaled(5)):
                while not server.draining:  # let the shutdown begin
                    await asyncio.sleep(0)
            await fake.send(fake.stop())
            code, _ = await fake.closed()
            await asyncio.wait_for(closing, scaled(5))
    assert code == 1000


@pytest.mark.asyncio
async def test_shutdown_still_ends_a_connection_whose_end_is_stuck(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection whose own end never finishes (here its bot's exit is awaited for
    ever, as a bug in a bounded step would do) must not hold the server: after the
    bounded time the end may take, shutdown cancels it and drops its socket, and the
    peer sees its TCP connection closed."""

    async def stuck(self: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(BotSupervisor, "stop", stuck)
    monkeypatch.setattr(server_module, "HANGUP_TIMEOUT_S", 0.1)
    async with running_server(echo_bot, drain_timeout=0.1, send_timeout=0.2,
                              bot_exit_timeout=0.1) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        fake = FakeProvider("twilio")
        writer.write(upgrade_request(fake.path()))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        writer.write(client_frame(0x1, json.dumps(fake.start()).encode()))
        async with asyncio.timeout(scaled(5)):
            while server.active_calls == 0:
                await asyncio.sleep(0.01)
        async with asyncio.timeout(scaled(10)):
            await server.aclose()
            while await reader.read(65536):  # the 1001 close frame, then the end
                pass
        writer.close()
    assert server.media_connections == 0 and not server._tasks
    assert any("did not end" in r.getMessage() for r in caplog.records)


async def _metrics(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body.decode()


def test_json_helper_is_valid() -> None:
    assert json.loads(json.dumps(FakeProvider("plivo").start()))["event"] == "start"


@pytest.mark.asyncio
async def test_nothing_leaks_after_bad_clients() -> None:
    async with running_server(echo_bot, first_message_timeout=0.2, head_timeout=0.2) as server:
        for provider in PROVIDERS:
            fake = FakeProvider(provider)
            async with fake.connect(server):
                await fake.open()
                await fake.send(b"binary")
                assert (await fake.closed())[0] == 1003
            silent = FakeProvider(provider)
            async with silent.connect(server):
                assert (await silent.closed())[0] == 1008
        assert await _status_of_upgrade(server.port, "/ws/nope") == 404
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x16\x03\x01")
        assert (await reader.read()).startswith(b"HTTP/1.1 400")
        writer.close()
        await writer.wait_closed()
        # Every handler has returned and every registry is empty again.
        await settled(server)
