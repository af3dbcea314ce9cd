"""Hostile peers get their documented answer in bounded time; good calls lose nothing.

The corpus is ``bench/bench_hostile.py`` (``make hostile`` runs it as a benchmark against
a server process). Here every case runs at once against an embedded server that
authenticates provider requests, while signed good calls of all three providers stream
through the echo bot; afterwards nothing is left behind and nothing was logged as an
error. The REST hang-ups the server places for failed streams reach the faithful local
fakes of tests/fakes/providers.py. No timing is asserted (``make hostile`` measures it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from typing import Any

import aiohttp
import pytest
from _util_reliability import mediastream_errors, scaled, settled
from _util_server import (
    FakeProvider,
    client_frame,
    read_frame,
    running_server,
    ulaw_payload,
    upgrade_request,
)
from fakes.providers import FakePlivo, FakeTwilio

from bench.bench_hostile import (
    CASES,
    PLIVO_ID,
    PLIVO_TOKEN,
    TWILIO_ACCOUNT,
    TWILIO_TOKEN,
    Target,
    _masked_frame,
    _table,
    check_good_calls,
    good_calls,
    hostile_config,
    run_corpus,
)
from mediastream.echo import echo_bot
from mediastream.server import MediaStreamServer


def test_the_corpus_covers_the_documented_answers() -> None:
    expected = {c.expect for c in CASES}
    for answer in ("HTTP 400", "HTTP 403", "HTTP 404", "HTTP 408", "HTTP 413", "HTTP 426",
                   "HTTP 431", "close 1000", "close 1002", "close 1003", "close 1007",
                   "close 1008", "close 1009", "dropped"):
        assert answer in expected, answer
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.asyncio
async def test_every_hostile_peer_at_once_while_good_calls_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with (
        FakeTwilio(TWILIO_ACCOUNT, TWILIO_TOKEN) as twilio,
        FakePlivo(PLIVO_ID, PLIVO_TOKEN) as plivo,
        MediaStreamServer(hostile_config(twilio.base_url, plivo.base_url)) as server,
        aiohttp.ClientSession() as http,
    ):
        target = Target("127.0.0.1", server.port, http)
        good = asyncio.ensure_future(good_calls(target.base, seconds=3.0))
        await asyncio.sleep(0.3)  # the good calls are streaming
        async with asyncio.timeout(scaled(30)):
            results = await run_corpus(target, together=True)
            reports = await good
        await settled(server)
    wrong = [r for r in results if not r.ok]
    assert not wrong, "\n" + _table(results) + "\n" + "\n".join(
        f"{r.case.name}: {r.error}" for r in wrong if r.error)
    assert check_good_calls(reports) == []
    assert all(len(r.calls) == 1 for r in reports.values())
    # Peer misbehaviour is logged as a warning with the call id; never as an error.
    assert mediastream_errors(caplog.records) == []
    # Streams that failed were hung up through the providers' REST APIs (the fakes
    # check every request; an unknown call id answers "already ended").
    assert twilio.requests and all(r.method == "POST" for r in twilio.requests)


@pytest.mark.asyncio
async def test_a_ping_flood_from_a_peer_that_reads_nothing_is_cut_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_server(echo_bot) as server:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        with sock:
            await loop.sock_connect(sock, ("127.0.0.1", server.port))
            await loop.sock_sendall(sock, upgrade_request("/ws/twilio"))
            assert (await loop.sock_recv(sock, 1024)).startswith(b"HTTP/1.1 101")
            pings = _masked_frame(0x9, b"p" * 125) * 256
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                async with asyncio.timeout(scaled(10)):
                    while True:
                        await loop.sock_sendall(sock, pings)
        await settled(server)
    assert any("reads none of our replies" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_frames_sent_before_the_101_are_read_after_it() -> None:
    # RFC 6455 §4.1 says a client waits for the 101; one that does not must still see
    # the 101 first and its frames handled in order, as if it had waited.
    async with running_server(echo_bot) as server:
        sid = "MZ" + "1" * 32
        start = {"event": "start", "sequenceNumber": "1", "streamSid": sid,
                 "start": {"streamSid": sid, "callSid": "CA" + "2" * 32,
                           "accountSid": "AC" + "3" * 32, "tracks": ["inbound"],
                           "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                           "channels": 1}}}
        payload = ulaw_payload(1)
        media = {"event": "media", "sequenceNumber": "2", "streamSid": sid,
                 "media": {"track": "inbound", "chunk": "1", "timestamp": "0",
                           "payload": base64.b64encode(payload).decode()}}
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        ping = _masked_frame(0x9, b"early")
        writer.write(upgrade_request("/ws/twilio") + ping + _text(start) + _text(media))
        async with asyncio.timeout(scaled(10)):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            echoed = await _read_server_frame(reader)
        writer.close()
        await writer.wait_closed()
    message = json.loads(echoed)
    assert message["event"] == "media" and message["streamSid"] == sid
    # 8 kHz bot (tests/_util_server.py): the echo is byte-exact.
    assert base64.b64decode(message["media"]["payload"]) == payload


@pytest.mark.asyncio
async def test_an_upgrade_then_half_close_is_answered_and_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with running_server(echo_bot) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(upgrade_request("/ws/telnyx"))
        writer.write_eof()
        async with asyncio.timeout(scaled(10)):
            data = await reader.read()
        writer.close()
        await writer.wait_closed()
        await settled(server)
    assert data.startswith(b"HTTP/1.1 101")
    assert mediastream_errors(caplog.records) == []


@pytest.mark.asyncio
async def test_a_head_split_between_cr_and_lf_is_answered() -> None:
    # A TCP segment may end anywhere: right after the request line's CR once read as
    # "not HTTP" (400). Found by tests/test_hostile_fuzz.py.
    async with running_server(echo_bot) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"\nHost: x\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(scaled(5)):
            response = await reader.read()
        writer.close()
        await writer.wait_closed()
    assert response.startswith(b"HTTP/1.1 200"), response[:60]


@pytest.mark.asyncio
@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\n\r\n",  # no Host (RFC 9112 §3.2)
    b"POST /twilio HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST /plivo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
async def test_a_request_only_aiohttp_rejects_is_a_4xx_and_no_error_log(
    request_bytes: bytes, caplog: pytest.LogCaptureFixture,
) -> None:
    # aiohttp logs requests it cannot parse as ERROR with a traceback; a peer's
    # mistake is an INFO line here, and still answered 400.
    caplog.set_level(logging.INFO)
    async with running_server(echo_bot) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request_bytes)
        async with asyncio.timeout(scaled(5)):
            response = await reader.read()
        writer.close()
        await writer.wait_closed()
    assert response.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), response[:60]
    assert mediastream_errors(caplog.records) == []
    assert any("answered 400" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_a_flooding_peer_lets_the_event_loop_run_between_batches() -> None:
    # recv() hands out queued messages without yielding: a peer that floods us once held
    # the loop (every other call) for its whole backlog. Counted in loop turns, not time.
    calls: list[Any] = []

    async def bot(call: Any) -> None:
        calls.append(call)
        await asyncio.Event().wait()  # reads nothing: every key is dropped or queued

    async with running_server(bot, bot_queue_frames=10, bot_exit_timeout=0.1) as server:
        fake = FakeProvider("twilio")
        async with fake.connect(server):
            await fake.open()
            async with asyncio.timeout(scaled(5)):
                while not calls:
                    await asyncio.sleep(0.01)
            live = calls[0]
            flood = "".join(f"\x00{json.dumps(fake.dtmf('1'))}" for _ in range(3200))
            turns = 0

            async def count_turns() -> None:
                nonlocal turns
                while True:
                    await asyncio.sleep(0)
                    turns += 1

            for message in flood.split("\x00")[1:]:  # queued without a yield in between
                await fake.send(message)
            counter = asyncio.ensure_future(count_turns())
            async with asyncio.timeout(scaled(10)):
                while len(live._events) + live.events_dropped < 3200:
                    await asyncio.sleep(0)
            counter.cancel()
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000
    # One turn at least per 32 messages (the reader's batch), whatever the reads were.
    assert turns >= 3200 // 32 - 5, turns


# ------------------------------------------------------------------ raw WebSocket bits


def _text(message: dict[str, object]) -> bytes:
    """One masked client text frame (RFC 6455 §5.2), any length."""
    return client_frame(0x1, json.dumps(message).encode())


async def _read_server_frame(reader: asyncio.StreamReader) -> bytes:
    """The payload of the next server text frame (pongs skipped)."""
    while True:
        opcode, payload = await read_frame(reader)
        if opcode == 0x1:
            return payload
