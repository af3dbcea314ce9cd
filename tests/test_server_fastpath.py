"""The live call's frame fast path: text frames parsed and written without websockets'
per-frame objects (mediastream.server.websocket).

It must be invisible: the bot gets every event in the order it came and exactly the
audio of the caller, whatever TCP does to the frames, and whatever the fast path does
not handle (fragments, control frames, bad frames) gets websockets' own answer. These
tests talk raw RFC 6455 frames to a real server on 127.0.0.1 (with batched resampling
on, so the connection's backlog behind a frame out for conversion is exercised too).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from typing import Any

import numpy as np
import pytest
from _util_reliability import scaled
from _util_server import (
    FakeProvider,
    RecordingBot,
    client_frame,
    read_frame,
    running_server,
    ulaw_payload,
    upgrade_request,
)
from websockets.frames import Frame, Opcode

from audiocodecs import resample, ulaw_decode
from mediastream.call import CallEnded, DtmfPressed, InboundAudio
from mediastream.server.frames import text_frame_header


def _text(message: dict[str, Any]) -> bytes:
    return client_frame(0x1, json.dumps(message, separators=(",", ":")).encode())


async def _server_frames(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> list[tuple[int, bytes]]:
    """Every (opcode, payload) the server sends up to its close frame, which is
    answered as a client does (close frame back, then the TCP close)."""
    frames: list[tuple[int, bytes]] = []
    while True:
        frames.append(await read_frame(reader))
        if frames[-1][0] == 0x8:
            writer.write(client_frame(0x8, frames[-1][1][:2]))
            writer.close()
            return frames


async def _live_socket(
    port: int, provider: FakeProvider
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client past the upgrade, with the provider's opening messages sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(provider.path()))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    opening = provider.connected()
    writer.write((_text(opening) if opening else b"") + _text(provider.start()))
    await writer.drain()
    return reader, writer


async def _write(writer: asyncio.StreamWriter, data: bytes, chunking: str, seed: int) -> None:
    if chunking == "whole":
        writer.write(data)
        await writer.drain()
        return
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        size = rng.randint(1, 3) if chunking == "crumbs" else rng.randint(1, 60)
        writer.write(data[pos : pos + size])
        await writer.drain()
        pos += size
        await asyncio.sleep(0.0005)  # let the server read what arrived: a split frame


def _kinds(events: list[Any]) -> list[str]:
    names = {InboundAudio: "audio", DtmfPressed: "dtmf", CallEnded: "end"}
    return [names.get(type(e), type(e).__name__) for e in events]


@pytest.mark.asyncio
@pytest.mark.parametrize("chunking", ["whole", "pieces", "crumbs"])
async def test_frames_split_anywhere_reach_the_bot_in_order_and_exact(chunking: str) -> None:
    """Media (16-bit lengths), a short DTMF (7-bit length), a fragmented DTMF with a
    ping between its fragments, and the stop, in one stream of bytes cut anywhere: the
    bot sees them in order, and its audio is exactly the caller's, resampled once."""
    bot = RecordingBot(echo=False)
    async with running_server(bot, bot_sample_rate=16000) as server:
        provider = FakeProvider("twilio")
        reader, writer = await _live_socket(server.port, provider)
        await bot.started.wait()
        sent = ulaw_payload(6, seed=3)
        frames = [sent[i * 160 : (i + 1) * 160] for i in range(6)]
        short = provider.dtmf("5")
        del short["dtmf"]["track"]  # optional: keeps the frame under 126 bytes
        assert len(_text(short)) - 6 < 126
        long = json.dumps(provider.dtmf("7")).encode()
        data = b"".join(_text(provider.media(f)) for f in frames[:3])
        data += _text(short) + _text(provider.media(frames[3]))
        data += client_frame(0x1, long[:20], fin=False) + client_frame(0x9, b"are you there")
        data += client_frame(0x0, long[20:40], fin=False) + client_frame(0x0, long[40:], fin=True)
        data += b"".join(_text(provider.media(f)) for f in frames[4:])
        data += _text(provider.stop())
        reading = asyncio.create_task(_server_frames(reader, writer))
        await _write(writer, data, chunking, seed=len(data))
        async with asyncio.timeout(scaled(10)):
            await bot.ended.wait()
            answered = await reading
    kinds = _kinds(bot.events)
    assert kinds[:8] == ["audio"] * 3 + ["dtmf"] + ["audio"] + ["dtmf"] + ["audio"] * 2, kinds
    assert set(kinds[8:]) == {"audio"}, kinds  # the resampler's tail; then the end
    assert [e.digit for e in bot.of(DtmfPressed)] == ["5", "7"]
    heard = np.frombuffer(b"".join(e.pcm for e in bot.of(InboundAudio)), dtype="<i2")
    # The session's lead pad (the resampler's delay, in silence), then the whole signal.
    expected = resample(ulaw_decode(sent), 8000, 16000)
    pad = len(heard) - len(expected)
    assert 0 < pad < 16 and not heard[:pad].any(), pad
    assert np.array_equal(heard[pad:], expected)
    assert (0xA, b"are you there") in answered  # websockets answered the ping
    assert answered[-1][0] == 0x8  # and the close handshake


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (client_frame(0x1, b'{"event":"media","bad":"\xff\xfe"}'), 1007),  # invalid UTF-8
        (client_frame(0x1, b"x" * 70_000), 1009),  # over max_message_size
        (client_frame(0x1, b'{"event":"dtmf"}', masked=False), 1002),  # clients must mask
        (client_frame(0x0, b"orphan", fin=True), 1002),  # continuation without a start
    ],
    ids=["invalid-utf8", "too-big", "unmasked", "orphan-continuation"],
)
async def test_a_bad_frame_after_good_ones_gets_websockets_answer(bad: bytes, code: int) -> None:
    """Good media then a bad frame in one write: the fast path delivers the media and
    leaves the bad frame to websockets, which closes with the RFC 6455 code."""
    bot = RecordingBot(echo=False)
    async with running_server(bot, bot_sample_rate=16000, max_message_size=65536) as server:
        provider = FakeProvider("twilio")
        reader, writer = await _live_socket(server.port, provider)
        await bot.started.wait()
        media = b"".join(_text(provider.media(ulaw_payload(1, seed=i))) for i in range(4))
        writer.write(media + bad)
        await writer.drain()
        async with asyncio.timeout(scaled(10)):
            frames = await _server_frames(reader, writer)
            await bot.ended.wait()
    closes = [payload for opcode, payload in frames if opcode == 0x8]
    assert closes and int.from_bytes(closes[0][:2], "big") == code, closes
    assert len(bot.of(InboundAudio)) >= 4  # everything before the bad frame arrived


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 300, 65535, 65536, 70_000])
def test_server_text_frames_are_what_websockets_writes(size: int) -> None:
    payload = bytes(size)
    ours = text_frame_header(size) + payload
    assert ours == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


@pytest.mark.asyncio
async def test_media_and_stop_in_one_read_end_cleanly_while_the_echo_is_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An echo reply still out for conversion when the provider's stop arrives (same
    read): the stop is parsed only after it, the call ends with 1000 and nothing is
    logged as an error (a stop parsed early used to make the reply a protocol error)."""
    from _util_reliability import mediastream_errors

    from mediastream.echo import echo_bot

    started = asyncio.Event()

    async def bot(call: Any) -> None:
        started.set()
        await echo_bot(call)

    caplog.set_level(logging.WARNING)
    async with running_server(bot, bot_sample_rate=16000) as server:
        for frames in (2, 3, 6):
            provider = FakeProvider("twilio")
            started.clear()
            reader, writer = await _live_socket(server.port, provider)
            await started.wait()
            await asyncio.sleep(0.01)  # the echo has set its listener
            data = b"".join(
                _text(provider.media(ulaw_payload(1, seed=i))) for i in range(frames)
            )
            writer.write(data + _text(provider.stop()))
            await writer.drain()
            async with asyncio.timeout(scaled(10)):
                answered = await _server_frames(reader, writer)
            closes = [payload for opcode, payload in answered if opcode == 0x8]
            assert int.from_bytes(closes[0][:2], "big") == 1000, (frames, closes)
    assert mediastream_errors(caplog.records) == []


@pytest.mark.asyncio
async def test_random_frame_mixes_cut_at_random_reach_each_bot_exactly() -> None:
    """Twelve calls, each a random mix of media, short and fragmented DTMF messages and
    pings, cut into random pieces: each bot gets its DTMF in order between the right
    audio frames, and exactly its caller's audio (three calls at a time share batches)."""
    calls: dict[str, list[Any]] = {}
    done: dict[str, asyncio.Event] = {}

    async def bot(call: Any) -> None:
        events = calls.setdefault(call.info.call_id, [])
        async for event in call:
            events.append(event)
        done.setdefault(call.info.call_id, asyncio.Event()).set()

    async def one(seed: int, port: int) -> None:
        rng = random.Random(seed)
        provider = FakeProvider("twilio")
        reader, writer = await _live_socket(port, provider)
        sent = ulaw_payload(8, seed=seed)
        data, expected, frame = b"", [], 0
        while frame < 8:
            roll = rng.random()
            if roll < 0.6 or frame == 0:
                data += _text(provider.media(sent[frame * 160 : (frame + 1) * 160]))
                expected.append("audio")
                frame += 1
            elif roll < 0.75:
                digit = rng.choice("0123456789*#")
                short = provider.dtmf(digit)
                del short["dtmf"]["track"]
                data += _text(short)
                expected.append(digit)
            elif roll < 0.9:
                digit = rng.choice("0123456789")
                long = json.dumps(provider.dtmf(digit)).encode()
                cut = rng.randint(1, len(long) - 1)
                data += client_frame(0x1, long[:cut], fin=False)
                if rng.random() < 0.5:
                    data += client_frame(0x9, b"ping")
                data += client_frame(0x0, long[cut:], fin=True)
                expected.append(digit)
            else:
                data += client_frame(0x9, os.urandom(rng.randint(0, 20)))
        data += _text(provider.stop())
        reading = asyncio.create_task(_server_frames(reader, writer))
        await _write(writer, data, rng.choice(["whole", "pieces", "crumbs"]), seed)
        async with asyncio.timeout(scaled(20)):
            await reading
            await done.setdefault(provider.call_id, asyncio.Event()).wait()
        events = calls[provider.call_id]
        kinds = [e.digit if isinstance(e, DtmfPressed) else "audio" for e in events]
        assert kinds[: len(expected)] == expected, (seed, kinds)
        assert set(kinds[len(expected) :]) <= {"audio"}, (seed, kinds)
        heard = np.frombuffer(b"".join(e.pcm for e in bot_audio(events)), dtype="<i2")
        want = resample(ulaw_decode(sent), 8000, 16000)
        assert np.array_equal(heard[len(heard) - len(want) :], want), seed

    async with running_server(bot, bot_sample_rate=16000) as server:
        for first in range(0, 12, 3):
            await asyncio.gather(*(one(seed, server.port) for seed in range(first, first + 3)))


def bot_audio(events: list[Any]) -> list[InboundAudio]:
    return [e for e in events if isinstance(e, InboundAudio)]
