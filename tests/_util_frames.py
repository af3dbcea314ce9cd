"""Helpers for the framing conformance suite: raw RFC 6455 frames, a raw live call, and
the server's observable answer to what such a call sends.

A raw call is a plain TCP connection on 127.0.0.1: the upgrade request, the provider's
opening messages (the call is then live), then whatever bytes a test wants, written in
the chunks it chooses (the server reads each chunk before the next is written). The
server's *answer* (:class:`Answer`) is everything a client and the bot can observe
afterwards: the frames the server sent, its close frame, whether it then closed the TCP
connection, and the events the call's bot received. Answers are plain, comparable
values: the suite compares the answer of the server with the frame fast path
(``Config(fast_frames=True)``) to the answer without it, and both to what RFC 6455
requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from _util_server import FakeProvider, RecordingBot, client_frame, read_frame, upgrade_request
from _util_timing import scaled as scaled  # re-exported for the tests

from audiocodecs import ulaw_decode
from mediastream.call import Call, CallEvent, DtmfPressed, InboundAudio

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA

#: How long a raw call waits for each thing it observes: the server's frames up to its
#: close, the TCP close after it, the bot's end of the call. Generous: only a server
#: that never answers waits this long, and nothing here measures speed.
WAIT_S = 5.0


# --------------------------------------------------------------------------- frames


def json_bytes(message: dict[str, Any]) -> bytes:
    """A provider message as compact JSON (non-ASCII kept as UTF-8, not escaped)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def text(message: dict[str, Any] | bytes) -> bytes:
    """One masked, unfragmented text frame carrying ``message``."""
    payload = message if isinstance(message, bytes) else json_bytes(message)
    return client_frame(TEXT, payload)


def fragments(payload: bytes, cuts: Sequence[int], *, opcode: int = TEXT) -> list[bytes]:
    """``payload`` as a fragmented message (RFC 6455 §5.4), cut at the offsets ``cuts``:
    the first frame ``opcode`` with FIN clear, continuations (0x0), the last with FIN."""
    bounds = [0, *cuts, len(payload)]
    pieces = [payload[a:b] for a, b in itertools.pairwise(bounds)]
    return [
        client_frame(opcode if i == 0 else CONT, piece, fin=i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    ]


def with_bits(frame: bytes, bits: int) -> bytes:
    """``frame`` with ``bits`` (e.g. RSV1 0x40) set in its first byte."""
    return bytes([frame[0] | bits]) + frame[1:]


def close_frame(code: int | None = None, reason: bytes = b"") -> bytes:
    """A masked client close frame (§5.5.1): no payload when ``code`` is None."""
    payload = b"" if code is None else code.to_bytes(2, "big") + reason
    return client_frame(CLOSE, payload)


def declared_length_header(length: int) -> bytes:
    """The header of a masked text frame declaring ``length`` payload bytes, without
    the payload: the server must judge the frame by its header alone."""
    if length < 126:
        size = bytes([0x80 | length])
    elif length < 65536:
        size = bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        size = bytes([0x80 | 127]) + length.to_bytes(8, "big")
    return bytes([0x80 | TEXT]) + size + b"\x00\x00\x00\x00"


def short_dtmf(provider: FakeProvider, digit: str) -> dict[str, Any]:
    """A DTMF message whose frame has a 7-bit length (< 126 bytes of payload)."""
    message = provider.dtmf(digit)
    message["dtmf"].pop("track", None)  # optional (protocols.md): keeps the frame short
    assert len(json_bytes(message)) < 126, message
    return message


# --------------------------------------------------------------------------- answers


def describe(events: Iterable[CallEvent]) -> tuple[str, ...]:
    """The bot's events as comparable strings: each run of consecutive audio as one
    ``audio <samples> samples <digest>`` entry (exact audio, chunking aside), each key as
    ``dtmf <digit>``, anything else by its type name."""
    out: list[str] = []
    run = bytearray()
    for event in events:
        if isinstance(event, InboundAudio):
            run += event.pcm
            continue
        if run:
            out.append(_audio_entry(bytes(run)))
            run.clear()
        if isinstance(event, DtmfPressed):
            out.append(f"dtmf {event.digit}")
        else:
            out.append(type(event).__name__)
    if run:
        out.append(_audio_entry(bytes(run)))
    return tuple(out)


def heard(*ulaw: bytes) -> str:
    """The :func:`describe` entry of the caller's μ-law frames as an 8 kHz bot hears
    them (decoded, no resampling): what one run of media messages must produce."""
    return _audio_entry(ulaw_decode(b"".join(ulaw)).astype("<i2").tobytes())


def _audio_entry(pcm: bytes) -> str:
    return f"audio {len(pcm) // 2} samples {hashlib.sha256(pcm).hexdigest()[:12]}"


@dataclass(frozen=True)
class Answer:
    """What the server did with one raw call, as a client and the bot observe it."""

    #: Frames before the server's close, in order: (opcode, payload) for control
    #: frames, (opcode, b"") for data frames (their payloads carry random stream ids).
    replies: tuple[tuple[int, bytes], ...]
    #: The server's close frame payload (code + reason); None when none came.
    close: bytes | None
    #: The server closed the TCP connection (after its close frame, if any).
    eof: bool
    #: Bytes the server sent after its close frame (RFC 6455 §5.5.1: none may follow).
    trailing: int
    #: The bot's events (see :func:`describe`).
    events: tuple[str, ...]
    #: The bot's call ended.
    ended: bool

    @property
    def code(self) -> int | None:
        """The close code, None without a close frame or with an empty one."""
        if self.close is None or len(self.close) < 2:
            return None
        return int.from_bytes(self.close[:2], "big")

    @property
    def reason(self) -> bytes:
        return b"" if self.close is None else self.close[2:]


# --------------------------------------------------------------------------- raw calls


class CallBots:
    """The server's bot: each call runs the :class:`RecordingBot` registered for its call
    id (:meth:`expect`), so calls on one server keep their events apart."""

    def __init__(self) -> None:
        self._bots: dict[str, RecordingBot] = {}

    def expect(self, provider: FakeProvider) -> RecordingBot:
        bot = self._bots[provider.call_id] = RecordingBot(echo=False)
        return bot

    async def __call__(self, call: Call) -> None:
        await self._bots.pop(call.info.call_id)(call)


async def let_server_read(writer: asyncio.StreamWriter) -> None:
    """Flush what was written and give the (in-process) server time to read it, so the
    next write arrives in a read of its own."""
    await writer.drain()
    await asyncio.sleep(0.001)


async def raw_call(
    port: int,
    bots: CallBots,
    build: Callable[[FakeProvider], Sequence[bytes]],
    *,
    client_closed: bool = False,
    linger: bool = False,
) -> Answer:
    """A live Twilio call on a raw socket that writes the chunks ``build`` makes of its
    provider's messages (the server reads each chunk before the next is written) and
    returns the server's :class:`Answer`.

    ``client_closed``: the chunks include our own close frame, so the server's close
    frame is its answer to it (none is sent back); otherwise the server's close frame is
    answered with a close frame echoing its code, as a client does (RFC 6455 §5.5.1).
    ``linger``: a client that neither answers the server's close nor closes its side of
    the TCP connection until the bot's call has ended.
    """
    provider = FakeProvider("twilio")
    bot = bots.expect(provider)
    opening = provider.connected()
    start = provider.start()
    chunks = build(provider)  # after start(): it numbers the messages from there
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(upgrade_request(provider.path()))
        async with asyncio.timeout(scaled(WAIT_S)):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            writer.write((text(opening) if opening else b"") + text(start))
            await bot.started.wait()  # live: the bot runs, the call's reader is set
        await asyncio.sleep(0)
        with contextlib.suppress(ConnectionError):  # the server may close before the end
            for i, chunk in enumerate(chunks):
                if i:
                    await let_server_read(writer)
                writer.write(chunk)
            await writer.drain()
        answer = await observe(
            reader, writer, bot, client_closed=client_closed, linger=linger
        )
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return answer


async def observe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    bot: RecordingBot,
    *,
    client_closed: bool = False,
    linger: bool = False,
) -> Answer:
    """Read the server's frames up to its close frame, answer it (unless we closed
    first), wait for the TCP close, close our side, then wait for the end of the bot's
    call; each wait bounded. ``linger``: answer nothing and keep our side open."""
    replies: list[tuple[int, bytes]] = []
    close: bytes | None = None
    eof = False
    trailing = 0
    try:
        async with asyncio.timeout(scaled(WAIT_S)):
            while True:
                opcode, payload = await read_frame(reader)
                if opcode == CLOSE:
                    close = payload
                    break
                replies.append((opcode, payload if opcode & 0x8 else b""))
    except (asyncio.IncompleteReadError, ConnectionError):
        eof = True  # the TCP connection closed without (the rest of) a close frame
    except TimeoutError:
        pass
    if close is not None:
        if not (client_closed or linger):
            with contextlib.suppress(ConnectionError):
                writer.write(client_frame(CLOSE, close[:2]))
                await writer.drain()
        try:
            async with asyncio.timeout(scaled(WAIT_S)):
                while data := await reader.read(65536):
                    trailing += len(data)
            eof = True
        except ConnectionError:
            eof = True
        except TimeoutError:
            pass
    # The server closed TCP (or never will): close our side too, as a client does on
    # EOF (RFC 6455 §7.1.1); only then has the server's connection ended for sure.
    if not linger:
        writer.close()
    ended = True
    try:
        async with asyncio.timeout(scaled(WAIT_S)):
            await bot.ended.wait()
    except TimeoutError:
        ended = False
    return Answer(tuple(replies), close, eof, trailing, describe(bot.events), ended)
