"""Faults around a call: bad bots, a failing provider API, dead readers, SIGTERM.

Whatever one call's bot or peer does, it ends only that call, within a bound, without a
leak, while good calls (the simulated caller through the echo bot, all three providers)
lose nothing. SIGTERM drains a real ``mediastream serve`` process: live calls finish (or,
past the drain timeout, get what their bot already said and then 1001) and it exits 0.
Nothing here asserts a duration; bounds are timeouts that fail the test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import signal
import socket
import textwrap
from pathlib import Path
from typing import Any

import pytest
from _util_reliability import ServeProcess, call_ends, mediastream_errors, scaled, settled
from _util_server import FakeProvider, running_server, ulaw_payload
from fakes.providers import FakeTelnyx, FakeTwilio

from bench.bench_hostile import GOOD_PROBE, check_good_calls
from mediastream.agents import AgentRegistry
from mediastream.call import Call, CallEnded
from mediastream.caller import RunReport, run_calls
from mediastream.config import ProviderCredentials
from mediastream.echo import echo_bot
from mediastream.server import MediaStreamServer

PROVIDERS = ("twilio", "telnyx", "plivo")
ACCOUNT = "AC" + "0" * 32
TOKEN = "twilio_test_token"


async def _good_calls(port: int, seconds: float = 2.0, calls: int = 1) -> dict[str, RunReport]:
    """Direct streams to the default (echo) bot, every provider at once."""
    reports = await asyncio.gather(*(
        run_calls(f"ws://127.0.0.1:{port}/ws/{p}", provider=p, calls=calls, seconds=seconds,
                  probe=GOOD_PROBE)
        for p in PROVIDERS
    ))
    return dict(zip(PROVIDERS, reports, strict=True))


# ------------------------------------------------------------------ bots that misbehave


class Raises:
    """Raises once the first audio arrived (or CancelledError of its own).

    A fresh exception each time: one instance raised again and again would keep every
    call it went through alive in its ``__traceback__`` (and pytest keeps parameters).
    """

    def __init__(self, kind: type[BaseException]) -> None:
        self.kind = kind

    async def __call__(self, call: Call) -> None:
        await call.receive()
        raise self.kind("boom")


class Hangs:
    """Never reads, never returns (until cancelled, which it records)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, call: Call) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class Stubborn:
    """Swallows every cancellation until ``release`` is set (so the test can end)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.swallowed = 0

    async def __call__(self, call: Call) -> None:
        self.started.set()
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.swallowed += 1


class Floods:
    """Produces audio far faster than real time, for ever (1 s per loop iteration)."""

    def __init__(self) -> None:
        self.queued: list[float] = []
        self.ended = asyncio.Event()

    async def __call__(self, call: Call) -> None:
        second = b"\x10\x00" * 8000
        try:
            while not call.ended:
                call.send_audio(second, 8000)
                self.queued.append(call._session.queued_s)  # type: ignore[attr-defined]
                await asyncio.sleep(0)
        finally:
            self.ended.set()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "kind", [RuntimeError, asyncio.CancelledError], ids=["raises", "cancelled"]
)
async def test_a_bot_that_raises_ends_only_its_own_call(
    kind: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    registry = AgentRegistry(echo_bot, {"bad": Raises(kind)})
    async with running_server(registry) as server:
        good = asyncio.ensure_future(_good_calls(server.port))
        codes = []
        for provider in PROVIDERS:
            fake = FakeProvider(provider)
            async with fake.connect(server, fake.path("bad")):
                await fake.open()
                await fake.send(fake.media(ulaw_payload(1)))
                codes.append(await fake.closed())
        reports = await asyncio.wait_for(good, scaled(20))
        await settled(server)
    assert codes == [(1011, "bot error")] * 3
    assert check_good_calls(reports) == []
    failures = [r for r in caplog.records if "ending the call" in r.getMessage()]
    assert len(failures) == 3 and all("[call " in r.getMessage() for r in failures)


@pytest.mark.asyncio
async def test_a_hung_bot_is_cancelled_once_its_call_ends_and_never_holds_a_drain() -> None:
    first, second = Hangs(), Hangs()
    registry = AgentRegistry(echo_bot, {"first": first, "second": second})
    server = MediaStreamServer(
        _config(bot_exit_timeout=0.2, drain_timeout=0.3), bot=registry
    )
    await server.start()
    try:
        fake = FakeProvider("telnyx")
        async with fake.connect(server, fake.path("first")):
            await fake.open()
            await fake.send(fake.media(ulaw_payload(1)))
            await fake.send(fake.stop())
            assert await fake.closed() == (1000, "stream stopped")
        async with asyncio.timeout(scaled(5)):
            await first.cancelled.wait()
        # A live call with a hung bot when the server shuts down: drain, 1001, cancel.
        live = FakeProvider("plivo")
        async with live.connect(server, live.path("second")):
            await live.open()
            live.start_pump()
            async with asyncio.timeout(scaled(5)):
                await second.started.wait()
            async with asyncio.timeout(scaled(10)):
                await server.aclose()
            assert await live.closed() == (1001, "server shutting down")
        assert second.cancelled.is_set()
    finally:
        await server.aclose()


@pytest.mark.asyncio
async def test_a_bot_that_swallows_cancellation_is_abandoned_not_waited_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stubborn = Stubborn()
    server = MediaStreamServer(_config(bot_exit_timeout=0.2, drain_timeout=0.2), bot=stubborn)
    await server.start()
    try:
        fake = FakeProvider("twilio")
        async with fake.connect(server):
            await fake.open()
            fake.start_pump()
            async with asyncio.timeout(scaled(5)):
                await stubborn.started.wait()
            async with asyncio.timeout(scaled(10)):
                await server.aclose()  # returns although the bot never does
            assert (await fake.closed())[0] == 1001
        assert stubborn.swallowed >= 1
        assert any("abandoning it" in r.getMessage() for r in caplog.records)
    finally:
        stubborn.release.set()
        await server.aclose()


@pytest.mark.asyncio
async def test_a_bot_flooding_audio_is_ended_with_its_memory_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flood = Floods()
    registry = AgentRegistry(echo_bot, {"flood": flood})
    async with running_server(registry, max_bot_audio_s=5.0) as server:
        good = asyncio.ensure_future(_good_calls(server.port))
        fake = FakeProvider("twilio")
        async with fake.connect(server, fake.path("flood")):
            await fake.open()
            fake.start_pump()
            code = await fake.closed()
        async with asyncio.timeout(scaled(5)):
            await flood.ended.wait()
        reports = await asyncio.wait_for(good, scaled(20))
        await settled(server)
    assert code == (1011, "bot error")
    # Never more than the bound queued (one second per send: it stopped below 5 s).
    assert flood.queued and max(flood.queued) <= 5.0
    assert any("bot queued" in r.getMessage() for r in caplog.records)
    assert check_good_calls(reports) == []


@pytest.mark.asyncio
async def test_a_dtmf_flood_to_a_bot_that_reads_nothing_stays_bounded() -> None:
    hung = Hangs()
    calls: list[Call] = []

    async def bot(call: Call) -> None:
        calls.append(call)
        await hung(call)

    async with running_server(bot, bot_queue_frames=50, bot_exit_timeout=0.2) as server:
        fake = FakeProvider("twilio")
        async with fake.connect(server):
            await fake.open()
            for _ in range(2000):
                await fake.send(fake.dtmf("7"))
            async with asyncio.timeout(scaled(5)):
                await hung.started.wait()
            live: Any = calls[0]
            async with asyncio.timeout(scaled(10)):
                while len(live._events) + live.events_dropped < 2000:
                    await asyncio.sleep(0.01)
            assert len(live._events) <= 50
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000
        await settled(server)


# ------------------------------------------------------------------ the provider's REST API


class Goodbye:
    """Says a few words, then returns: the server hangs up through the REST API."""

    async def __call__(self, call: Call) -> None:
        call.send_audio(b"\x20\x00" * 1600, 8000)
        call.end_utterance()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "headers", "delay"),
    [(500, {}, 0.0), (429, {"Retry-After": "0"}, 0.0), (200, {}, 2.0)],
    ids=["500", "429", "timeout"],
)
async def test_a_failing_twilio_api_is_retried_a_bounded_number_of_times(
    status: int, headers: dict[str, str], delay: float
) -> None:
    async with FakeTwilio(ACCOUNT, TOKEN) as api:
        api.script(status, {"code": 20500, "message": "down"}, headers=headers, times=10,
                   delay=delay)
        creds = ProviderCredentials(twilio_account_sid=ACCOUNT, twilio_auth_token=TOKEN,
                                    twilio_api_base_url=api.base_url)
        async with running_server(Goodbye(), credentials=creds, require_auth=False,
                                  rest_timeout=0.3, rest_retries=2) as server:
            fake = FakeProvider("twilio", call_id=api.live_call())
            async with fake.connect(server):
                await fake.open()
                fake.start_pump()
                code = await fake.closed(timeout=15)
            await settled(server)
    # The call ends anyway, after exactly 1 + rest_retries attempts.
    assert code == (1000, "bot finished")
    assert len(fake.audio) == 1600
    hangups = [r for r in api.requests if r.path.endswith(f"/Calls/{fake.call_id}.json")]
    assert len(hangups) == 3


@pytest.mark.asyncio
async def test_a_dropped_stream_with_a_failing_telnyx_api_still_ends_in_bounded_time() -> None:
    async with FakeTelnyx("KEY123", "conn-1") as api:
        api.script(503, {"errors": [{"code": "10011", "title": "busy"}]}, times=10)
        creds = ProviderCredentials(telnyx_api_key="KEY123", telnyx_api_base_url=api.base_url)
        async with running_server(echo_bot, credentials=creds, require_auth=False,
                                  rest_timeout=0.3, rest_retries=2) as server:
            fake = FakeProvider("telnyx", call_id=api.live_call())
            async with fake.connect(server):
                await fake.open()
                await fake.send(fake.media(ulaw_payload(1)))
                async with asyncio.timeout(scaled(5)):
                    while not server.active_calls:
                        await asyncio.sleep(0.01)
                assert fake.ws is not None
                fake.ws.transport.abort()  # gone: no stop, no close frame
            await settled(server, timeout=15)
    hangups = [r for r in api.requests if "/actions/hangup" in r.path]
    assert len(hangups) == 3


# ------------------------------------------------------------------ peers


class Burst:
    """Queues 60 s of audio at once (a 60 s playout lead lets it all go out at once)."""

    async def __call__(self, call: Call) -> None:
        call.send_audio(b"\x00\x10" * 16000 * 60, 16000)
        call.end_utterance()
        async for _ in call:
            pass


@pytest.mark.asyncio
async def test_a_client_that_stops_reading_is_cut_off_and_the_others_lose_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = AgentRegistry(echo_bot, {"burst": Burst()})
    async with running_server(registry, playout_lead=60.0, send_timeout=0.3,
                              bot_sample_rate=16000) as server:
        good = asyncio.ensure_future(_good_calls(server.port))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        stuck = FakeProvider("plivo", encoding="l16", sample_rate=16000)
        async with stuck.connect(server, stuck.path("burst"), max_queue=1, sock=sock):
            await stuck.open()
            # Never read: the server's send blocks until send_timeout ends the call.
            async with asyncio.timeout(scaled(10)):
                while not any("peer stopped reading" in r.getMessage() for r in caplog.records):
                    await asyncio.sleep(0.02)
        reports = await asyncio.wait_for(good, scaled(20))
        await settled(server)
    assert check_good_calls(reports) == []


# ------------------------------------------------------------------ SIGTERM


@pytest.mark.asyncio
async def test_sigterm_during_20_live_calls_lets_them_finish_then_exits_0() -> None:
    async with ServeProcess.run("--bot", "echo", "--drain-timeout", "20") as serve:
        calls = asyncio.ensure_future(_good_calls(serve.port, seconds=2.5, calls=7))
        await _wait_started(serve, 21)
        serve.signal(signal.SIGTERM)
        reports = await asyncio.wait_for(calls, scaled(30))
        code = await serve.exit_code()
    assert code == 0, serve.text
    assert check_good_calls(reports) == []
    ends = call_ends(serve.lines)
    # Twilio and Telnyx callers send stop; Plivo has none and just closes (§3.2).
    assert len(ends) == 21
    for report in reports.values():
        for call in report.calls:
            expected = "disconnected" if report.provider == "plivo" else "stopped"
            assert ends[call.call_id].outcome == expected
    assert "SIGTERM: shutting down gracefully" in serve.text
    assert "server closed" in serve.text
    assert not [line for line in serve.lines if " ERROR " in line or "Traceback" in line]


@pytest.mark.asyncio
async def test_sigterm_past_the_drain_delivers_what_each_bot_said_then_1001() -> None:
    async with ServeProcess.run("--bot", "echo", "--drain-timeout", "0.3") as serve:
        calls = asyncio.ensure_future(_good_calls(serve.port, seconds=4.0, calls=7))
        await _wait_started(serve, 21)
        await asyncio.sleep(0.5)  # the echoes are flowing
        serve.signal(signal.SIGTERM)
        reports = await asyncio.wait_for(calls, scaled(30))
        code = await serve.exit_code()
    assert code == 0, serve.text
    ends = call_ends(serve.lines)
    assert len(ends) == 21
    for report in reports.values():
        for call in report.calls:
            end = ends[call.call_id]
            assert (call.end, call.close_code) == ("server_closed", 1001), call.failure
            assert end.outcome == "shutdown"
            # Everything the bot produced was sent before the close, and arrived.
            assert call.frames_received == end.frames_out, (call.call_id, end)
            assert call.protocol_errors == 0


@pytest.mark.asyncio
async def test_sigterm_with_a_hung_bot_still_exits_0(tmp_path: Path) -> None:
    bots = tmp_path / "bots.py"
    bots.write_text(textwrap.dedent("""
        import asyncio

        async def hang(call):
            await asyncio.Event().wait()
    """))
    async with ServeProcess.run("--bot", "echo", "--agent", f"hang={bots}:hang",
                                "--drain-timeout", "0.3") as serve:
        fake = FakeProvider("twilio")
        async with fake.connect(_Port(serve.port), fake.path("hang")):  # type: ignore[arg-type]
            await fake.open()
            await _wait_started(serve, 1)
            serve.signal(signal.SIGTERM)
            assert await fake.closed(timeout=10) == (1001, "server shutting down")
        code = await serve.exit_code()
    assert code == 0, serve.text
    assert "cancelling it" in serve.text


# ------------------------------------------------------------------ the simulated caller


@pytest.mark.asyncio
async def test_the_caller_counts_messages_that_arrive_with_the_close_frame() -> None:
    # A server's last audio and its close frame often share a TCP segment (a shutdown
    # flush): the caller once dropped every message read in the same chunk as the close.
    payload = ulaw_payload(1)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = re.search(rb"(?i)sec-websocket-key: *(\S+)", head)
        assert key is not None
        accept = base64.b64encode(hashlib.sha1(key[1] + _WS_GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        sid = ""
        while not sid:  # connected, then start (masked client frames)
            sid = json.loads(await _client_frame(reader)).get("streamSid", "")
        media = json.dumps({"event": "media", "streamSid": sid,
                            "media": {"payload": base64.b64encode(payload).decode()}})
        close = (1001).to_bytes(2, "big") + b"bye"
        writer.write(_server_frame(0x1, media.encode()) * 3 + _server_frame(0x8, close))
        await writer.drain()
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await _client_frame(reader)  # the caller's close reply; then TCP closes
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        report = await asyncio.wait_for(run_calls(
            f"ws://127.0.0.1:{port}/ws/twilio", provider="twilio", seconds=2.0,
            probe=GOOD_PROBE), scaled(10))
    (call,) = report.calls
    assert (call.end, call.close_code) == ("server_closed", 1001)
    assert call.frames_received == 3


_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


def _server_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    length = bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big")
    return bytes([0x80 | opcode]) + length + payload


async def _client_frame(reader: asyncio.StreamReader) -> bytes:
    _first, second = await reader.readexactly(2)
    n = second & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    mask = await reader.readexactly(4)
    data = await reader.readexactly(n)
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


# ------------------------------------------------------------------ helpers


class _Port:
    def __init__(self, port: int) -> None:
        self.port = port


def _config(**changes: Any) -> Any:
    from _util_server import server_config

    return server_config(**changes)


async def _wait_started(serve: ServeProcess, count: int) -> None:
    async with asyncio.timeout(scaled(20)):
        while sum("call started" in line for line in serve.lines) < count:
            await asyncio.sleep(0.02)


def test_errors_helper_sees_tracebacks() -> None:
    record = logging.LogRecord("x", logging.WARNING, "f", 1, "m", None, (None, None, None))
    assert mediastream_errors([record]) == ["WARNING x: m"]
    _ = CallEnded  # the bots above read until CallEnded through ``async for``
