"""The media socket's own parts, and its promise to use only websockets' public API.

* :class:`~mediastream.server.frames.FrameSplitter` cuts bytes into whole frames (any
  split, any coalescing), takes only plain masked text frames on the fast path, and
  hands a frame over the size limit on as soon as its header is in.
* :class:`~mediastream.server.assembly.Assembler` puts fragments together and refuses
  text that is not UTF-8 on the fragment where it breaks.
* A real server, driven through calls that use every part of the socket (fast path,
  fragments, pings, a bad frame, a rejected upgrade, the close), reads nothing of
  websockets' ``ServerProtocol`` that its documentation does not name; and no module of
  ours imports an underscore name of websockets or walks a generator's frames.
"""

from __future__ import annotations

import ast
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from _util_server import (
    FakeProvider,
    RecordingBot,
    client_frame,
    read_frame,
    running_server,
    scaled,
    ulaw_payload,
    upgrade_request,
)
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from mediastream.call import DtmfPressed, InboundAudio
from mediastream.server import websocket as websocket_module
from mediastream.server.assembly import Assembler
from mediastream.server.frames import FrameSplitter, close_frame_code, frame_head

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- splitter


def _stream() -> tuple[bytes, list[object]]:
    """A text frame (7-bit length), a ping, a text frame (16-bit length), a binary frame,
    and what the splitter makes of each with the fast path on."""
    short = b'{"event":"dtmf"}'
    long = json.dumps({"event": "media", "pad": "x" * 300}).encode()
    frames = [client_frame(0x1, short), client_frame(0x9, b"hi"), client_frame(0x1, long),
              client_frame(0x2, b"\x00\x01")]
    want: list[object] = [short.decode(), frames[1], long.decode(), frames[3]]
    return b"".join(frames), want


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 10_000])
def test_the_splitter_gives_the_same_frames_whatever_the_reads(chunk: int) -> None:
    data, want = _stream()
    splitter = FrameSplitter(65536)
    got: list[object] = []
    for start in range(0, len(data), chunk):
        splitter.feed(data[start : start + chunk])
        while (frame := splitter.next(fast=True)) is not None:
            got.append(frame)
    assert got == want and splitter.waiting == 0


def test_without_the_fast_path_every_frame_goes_on_whole() -> None:
    data, _ = _stream()
    splitter = FrameSplitter(65536)
    splitter.feed(data)
    frames = []
    while (frame := splitter.next(fast=False)) is not None:
        assert isinstance(frame, bytes)
        frames.append(frame)
    assert b"".join(frames) == data and len(frames) == 4  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "frame",
    [
        client_frame(0x1, b"x", fin=False),  # a fragment
        client_frame(0x1, b"x", masked=False),  # unmasked: websockets answers 1002
        bytes([0xC1]) + client_frame(0x1, b"x")[1:],  # RSV1 set: 1002
        client_frame(0x3, b"x"),  # a reserved opcode: 1002
    ],
    ids=["fragment", "unmasked", "rsv1", "reserved-opcode"],
)
def test_only_plain_masked_text_frames_take_the_fast_path(frame: bytes) -> None:
    splitter = FrameSplitter(65536)
    splitter.feed(frame)
    assert splitter.next(fast=True) == frame


def test_invalid_utf8_on_the_fast_path_is_refused() -> None:
    splitter = FrameSplitter(65536)
    splitter.feed(client_frame(0x1, b'{"a":"\xff"}'))
    with pytest.raises(UnicodeDecodeError):
        splitter.next(fast=True)


def test_a_frame_over_the_limit_is_handed_on_from_its_header() -> None:
    splitter = FrameSplitter(1024)
    head = client_frame(0x1, b"x" * 2000)[:8]  # 16-bit length + mask, no payload yet
    splitter.feed(b"\x81\x7f")  # a 64-bit length, incomplete
    assert splitter.next(fast=True) is None
    splitter.feed((1 << 40).to_bytes(8, "big") + b"mask")
    assert splitter.next(fast=True) == b"\x81\x7f" + (1 << 40).to_bytes(8, "big") + b"mask"
    splitter.feed(head)
    assert splitter.next(fast=True) == head and splitter.waiting == 0


def test_frame_heads_and_server_close_frames_are_read_right() -> None:
    assert frame_head(b"\x81", 0) is None
    assert frame_head(b"\x81\x85abcd", 0) == (0x81, 6, 5, True)
    assert frame_head(b"\x82\x7e\x01\x00", 0) == (0x82, 4, 256, False)
    close = Frame(Opcode.CLOSE, (1002).to_bytes(2, "big") + b"bad").serialize(
        mask=False, extensions=[])
    assert close_frame_code(close) == (1002, "bad")
    assert close_frame_code(b"\x88\x00") == (1005, "")
    # Not a close frame: an HTTP response (its first byte's low bits are 0x8), a pong.
    assert close_frame_code(b"HTTP/1.1 101 Switching Protocols\r\n") is None
    assert close_frame_code(b"\x8a\x02hi") is None


# --------------------------------------------------------------------------- assembler


def test_fragments_make_one_message_and_text_is_checked_per_fragment() -> None:
    assembler = Assembler()
    euro = "€".encode()  # three bytes, split across two fragments
    assert assembler.add(Frame(Opcode.TEXT, b"a" + euro[:1], fin=False)) is None
    assert assembler.open
    assert assembler.add(Frame(Opcode.CONT, euro[1:] + b"b", fin=True)) == "a€b"
    assert not assembler.open
    assert assembler.add(Frame(Opcode.BINARY, b"\xff", fin=False)) is None
    assert assembler.add(Frame(Opcode.CONT, b"\xfe", fin=True)) == b"\xff\xfe"
    assert assembler.add(Frame(Opcode.TEXT, b"a", fin=False)) is None
    with pytest.raises(UnicodeDecodeError):  # fails on this fragment, not at the end
        assembler.add(Frame(Opcode.CONT, b"\xed\xa0\x80", fin=False))
    assert not assembler.open


# --------------------------------------------------------------------------- public API

#: websockets' documented sans-I/O API (reference/sansio: Protocol, ServerProtocol).
PUBLIC = {
    "receive_data", "receive_eof", "send_continuation", "send_text", "send_binary",
    "send_close", "send_ping", "send_pong", "fail", "events_received", "data_to_send",
    "close_expected", "state", "close_code", "close_reason", "close_exc", "id", "logger",
    "accept", "reject", "send_response", "select_subprotocol", "handshake_exc",
}


class _Recording(ServerProtocol):
    """Records every attribute our own code reads off the protocol object."""

    read: ClassVar[set[str]] = set()

    def __getattribute__(self, name: str) -> Any:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith("mediastream"):
            _Recording.read.add(name)
        return super().__getattribute__(name)


@pytest.mark.asyncio
async def test_the_socket_reads_only_websockets_documented_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _Recording.read = set()
    monkeypatch.setattr(websocket_module, "ServerProtocol", _Recording)
    bot = RecordingBot(echo=True)
    async with running_server(bot, bot_sample_rate=16000, max_message_size=4096) as server:
        provider = FakeProvider("twilio")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(upgrade_request(provider.path()))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        opening = provider.connected()
        dtmf = json.dumps(provider.dtmf("7")).encode()
        data = (client_frame(0x1, json.dumps(opening).encode()) if opening else b"")
        data += client_frame(0x1, json.dumps(provider.start()).encode())
        data += b"".join(client_frame(0x1, json.dumps(provider.media(
            ulaw_payload(1, seed=i))).encode()) for i in range(3))
        data += client_frame(0x1, dtmf[:10], fin=False) + client_frame(0x9, b"ping")
        data += client_frame(0x0, dtmf[10:], fin=True)
        data += client_frame(0x1, b"y" * 5000)  # over the limit: websockets answers 1009
        writer.write(data)
        async with asyncio.timeout(scaled(10)):
            while True:
                opcode, payload = await read_frame(reader)
                if opcode == 0x8:
                    assert int.from_bytes(payload[:2], "big") == 1009
                    break
            await bot.ended.wait()
        writer.close()
        # A rejected upgrade (unknown path) goes through the same protocol class.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(upgrade_request("/ws/nobody"))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 404")
        writer.close()
    kinds = [type(e) for e in bot.events]
    assert InboundAudio in kinds and DtmfPressed in kinds
    assert {"receive_data", "events_received", "data_to_send", "accept", "reject",
            "send_response", "state"} <= _Recording.read  # the recorder saw our calls
    assert _Recording.read <= PUBLIC, sorted(_Recording.read - PUBLIC)


def _sources() -> list[Path]:
    return sorted(p for pkg in ("mediastream", "bot") for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_of_websockets_and_no_generator_frames(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("websockets"):
            parts = (node.module or "").split(".")
            bad += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
            bad += [node.module or ""] if any(p.startswith("_") for p in parts) else []
        if isinstance(node, ast.Attribute) and node.attr.startswith(("gi_", "cr_", "ag_")):
            bad.append(node.attr)
    assert not bad, f"{path} reaches into websockets' internals: {bad}"
