"""RFC 6455 framing conformance (§5-§7) of the media WebSocket, with and without the
frame fast path.

A live call's whole, masked, unfragmented text frames are parsed by the server itself
(``Config(fast_frames=True)``, the default); every other frame, and every frame with
``fast_frames=False``, goes to websockets' parser. Neither may be visible: every case
here runs against a real server on 127.0.0.1 with each setting, over raw TCP (frames
built byte by byte, split and coalesced at will), and the server's observable answer --
the frames it sends back, its close code, whether it then closes the TCP connection,
and the events the call's bot receives (see ``_util_frames.Answer``) -- must be the
same from both settings (:func:`answer_of` asserts it for every case) and what RFC 6455
requires (each test asserts that).

Close codes (RFC 6455 §7.4.1): 1002 protocol error, 1003 data the endpoint cannot
accept, 1007 data inconsistent with the message type (invalid UTF-8, §8.1), 1009
message too big. Binary frames are ours to refuse (1003: README "Close codes").
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest
from _util_frames import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    Answer,
    CallBots,
    close_frame,
    declared_length_header,
    fragments,
    heard,
    json_bytes,
    raw_call,
    short_dtmf,
    text,
    with_bits,
)
from _util_server import FakeProvider, client_frame, running_server, ulaw_payload

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.parametrize(
        "fast_frames", [True, False], ids=["fast_frames", "websockets_only"]
    ),
]

T = TypeVar("T")
Build = Callable[[FakeProvider], Sequence[bytes]]

#: The caller's 20 ms μ-law frames, one per media message.
F = [ulaw_payload(1, seed=i) for i in range(6)]

# --------------------------------------------------------------------------- answers

#: Each (case, fast_frames) answer, computed once per session (see answer_of).
_ANSWERS: dict[tuple[str, bool], Any] = {}


async def answer_of(case: str, fast_frames: bool, run: Callable[[bool], Awaitable[T]]) -> T:
    """The answer of ``case`` with ``fast_frames``, after asserting that the other
    setting gives the very same answer.

    ``run(setting)`` plays the case against a fresh server with that setting. Each
    (case, setting) runs once per session: the test of the other setting reuses it, so
    both parametrized tests of a case assert the comparison, and a test selected alone
    still does (it runs the other setting itself).
    """
    for setting in (fast_frames, not fast_frames):
        if (case, setting) not in _ANSWERS:
            _ANSWERS[case, setting] = await run(setting)
    mine: T = _ANSWERS[case, fast_frames]
    other: T = _ANSWERS[case, not fast_frames]
    assert mine == other, (
        f"{case}: the two settings answer differently:\n"
        f"  fast_frames={fast_frames}: {mine}\n  fast_frames={not fast_frames}: {other}"
    )
    return mine


def one_call(
    build: Build, *, client_closed: bool = False, linger: bool = False, **config: Any
) -> Callable[[bool], Awaitable[Answer]]:
    """A case's ``run``: one raw call (see ``_util_frames.raw_call``) on a fresh server."""

    async def run(fast_frames: bool) -> Answer:
        bots = CallBots()
        async with running_server(bots, fast_frames=fast_frames, **config) as server:
            return await raw_call(
                server.port, bots, build, client_closed=client_closed, linger=linger
            )

    return run


def assert_answer(
    answer: Answer,
    *,
    code: int,
    events: tuple[str, ...],
    replies: tuple[tuple[int, bytes], ...] = (),
    where: str = "",
) -> None:
    """The RFC's answer: ``replies`` (pongs) first, then a close frame with ``code``,
    nothing after it, the TCP connection closed, and the bot got exactly ``events``
    before its call ended."""
    context = f"{where}: {answer}" if where else answer
    assert answer.replies == replies, context
    assert answer.code == code, context
    assert answer.trailing == 0, context  # §5.5.1: no data after a close frame
    assert answer.eof, context  # §7.1.1: the server closes the TCP connection
    assert answer.events == events, context
    assert answer.ended, context


def media(provider: FakeProvider, *frames: bytes) -> bytes:
    """One text frame per media message (16-bit lengths: ~370 bytes each)."""
    return b"".join(text(provider.media(frame)) for frame in frames)


def stop(provider: FakeProvider) -> bytes:
    return text(provider.stop())


def with_note(message: dict[str, Any], note: str | bytes) -> bytes:
    """``message`` as JSON bytes with an extra ``note`` field (providers' messages may
    carry fields we do not read; the protocol ignores them); bytes go in verbatim."""
    raw = note if isinstance(note, bytes) else note.encode()
    body = json_bytes({**message, "note": "@@NOTE@@"})
    return body.replace(b"@@NOTE@@", raw)


#: Where a read starts and ends matters to a frame parser (the fast path takes only
#: whole frames, and only between messages), so multi-frame cases run both ways.
READS = pytest.mark.parametrize("reads", ["one_write", "frame_per_read"])


def delivered(reads: str, first: bytes, frames: Sequence[bytes], tail: bytes) -> list[bytes]:
    """A call's chunks: ``first``, then ``frames`` and ``tail`` in one write, or each
    frame (and the tail) in a read of its own."""
    if reads == "one_write":
        return [first, b"".join(frames) + tail]
    return [first, *frames, tail]


# --------------------------------------------------------------------------- 1: TCP


def _split_sequence(provider: FakeProvider) -> bytes:
    """Media (16-bit lengths), a short DTMF (7-bit length), media, a ping, the stop."""
    return (
        media(provider, F[0], F[1])
        + text(short_dtmf(provider, "5"))
        + media(provider, F[2])
        + client_frame(PING, b"are you there")
        + stop(provider)
    )


_SPLIT_EVENTS = (heard(F[0], F[1]), "dtmf 5", heard(F[2]))
_SPLIT_REPLIES = ((PONG, b"are you there"),)


async def _every_split(fast_frames: bool) -> tuple[Answer, ...]:
    """One call per split position k: data[:k], the server reads it, then data[k:]."""
    probe = FakeProvider("twilio")
    probe.start()
    size = len(_split_sequence(probe))  # fixed-width ids: every call's sequence is this long
    bots = CallBots()
    gate = asyncio.Semaphore(8)

    async def split_at(port: int, k: int) -> Answer:
        def build(provider: FakeProvider) -> list[bytes]:
            data = _split_sequence(provider)
            assert len(data) == size
            return [data[:k], data[k:]]

        async with gate:
            return await raw_call(port, bots, build)

    async with running_server(bots, fast_frames=fast_frames) as server:
        return tuple(
            await asyncio.gather(*(split_at(server.port, k) for k in range(1, size)))
        )


async def test_frames_split_at_every_byte_reach_the_bot_in_order(fast_frames: bool) -> None:
    """§5.2, §5.5.2-3: a frame's bytes may arrive in any TCP segmentation. For every
    position k, the sequence (media, media, short DTMF, media, ping, stop) is written as
    data[:k] then data[k:] on a call of its own: each call's bot gets the same events in
    order with exact audio, and the ping gets a pong with its payload."""
    answers = await answer_of("split-every-byte", fast_frames, _every_split)
    assert len(answers) > 1000  # ~1400 bytes: every header, payload and frame boundary
    for k, answer in enumerate(answers, start=1):
        assert_answer(
            answer, code=1000, events=_SPLIT_EVENTS, replies=_SPLIT_REPLIES, where=f"k={k}"
        )


@pytest.mark.parametrize("writes", ["coalesced", "byte_by_byte"])
async def test_frames_coalesced_or_byte_by_byte_reach_the_bot_in_order(
    fast_frames: bool, writes: str
) -> None:
    """§5.2, §5.5.2-3: the same sequence in one write (every frame in one read), then
    one byte per read: same events, same audio, same pong."""

    def build(provider: FakeProvider) -> list[bytes]:
        data = _split_sequence(provider)
        if writes == "coalesced":
            return [data]
        return [data[i : i + 1] for i in range(len(data))]

    answer = await answer_of(f"split-{writes}", fast_frames, one_call(build))
    assert_answer(answer, code=1000, events=_SPLIT_EVENTS, replies=_SPLIT_REPLIES)


# --------------------------------------------------------------------------- 2: fragments


def _interleaved(parts: list[bytes], controls: dict[int, list[bytes]]) -> list[bytes]:
    """Fragments with control frames after fragment i (``controls[i]``)."""
    out: list[bytes] = []
    for i, part in enumerate(parts):
        out.append(part)
        out += controls.get(i, [])
    return out


def _cuts(size: int, pieces: int) -> list[int]:
    return [size * i // pieces for i in range(1, pieces)]


@READS
@pytest.mark.parametrize("pieces", [2, 5])
async def test_fragmented_messages_arrive_whole_and_in_order(
    fast_frames: bool, pieces: int, reads: str
) -> None:
    """§5.4: a text message in ``pieces`` fragments (0x1 FIN=0, then 0x0 continuations,
    the last with FIN) is one message, delivered in order among the others; control
    frames may come between fragments (§5.4, §5.5): pings are answered with their
    payload (§5.5.2), an unsolicited pong is ignored (§5.5.3)."""

    def build(provider: FakeProvider) -> list[bytes]:
        frames = [media(provider, F[0])]
        body = json_bytes(provider.media(F[1]))
        if pieces == 2:
            controls = {0: [client_frame(PING, b"p1"), client_frame(PONG, b"unasked")]}
        else:
            controls = {
                0: [client_frame(PING, b"p1")],
                2: [client_frame(PONG, b"unasked")],
                3: [client_frame(PING, b"")],
            }
        frames += _interleaved(fragments(body, _cuts(len(body), pieces)), controls)
        frames.append(text(short_dtmf(provider, "4")))
        dtmf = json_bytes(provider.dtmf("9"))
        frames += fragments(dtmf, _cuts(len(dtmf), pieces))
        frames += [media(provider, F[2]), stop(provider)]
        return [b"".join(frames)] if reads == "one_write" else frames

    answer = await answer_of(f"fragments-{pieces}-{reads}", fast_frames, one_call(build))
    pongs = ((PONG, b"p1"),) if pieces == 2 else ((PONG, b"p1"), (PONG, b""))
    assert_answer(
        answer,
        code=1000,
        events=(heard(F[0], F[1]), "dtmf 4", "dtmf 9", heard(F[2])),
        replies=pongs,
    )


_FRAGMENT_ERRORS: dict[str, Callable[[bytes], list[bytes]]] = {
    # §5.4: only continuations (or control frames) may follow a FIN=0 data frame.
    "text_frame_inside_a_fragmented_message": lambda body: [
        *fragments(body, [40])[:1],
        client_frame(TEXT, body),
    ],
    "new_fragmented_message_inside_one": lambda body: [
        *fragments(body, [40])[:1],
        *fragments(body, [40]),
    ],
    "binary_frame_inside_a_fragmented_message": lambda body: [
        *fragments(body, [40])[:1],
        client_frame(BINARY, body),
    ],
    # §5.4: a continuation frame with no fragmented message open.
    "final_continuation_without_a_start": lambda body: [client_frame(CONT, body)],
    "continuation_fin0_without_a_start": lambda body: [client_frame(CONT, body, fin=False)],
}


@READS
@pytest.mark.parametrize("case", list(_FRAGMENT_ERRORS))
async def test_fragments_out_of_order_close_1002(
    fast_frames: bool, case: str, reads: str
) -> None:
    """§5.4, §7.4.1: a data frame that is not a continuation while a fragmented message
    is open, or a continuation with none open, fails the connection with 1002; the
    incomplete message never reaches the bot, nothing after it is handled."""

    def build(provider: FakeProvider) -> list[bytes]:
        first = media(provider, F[0])
        bad = _FRAGMENT_ERRORS[case](json_bytes(provider.dtmf("8")))
        return delivered(reads, first, bad, media(provider, F[1]) + stop(provider))

    answer = await answer_of(f"fragment-error-{case}-{reads}", fast_frames, one_call(build))
    assert_answer(answer, code=1002, events=(heard(F[0]),))


# --------------------------------------------------------------------------- 3: UTF-8

_NOTE = "é€😀"  # 2-, 3- and 4-byte UTF-8 sequences


def _inside_characters(payload: bytes) -> list[int]:
    """Every offset in ``payload`` that falls inside a multi-byte character."""
    return [i for i in range(1, len(payload)) if payload[i] & 0xC0 == 0x80]


@pytest.mark.parametrize("message", ["dtmf_7bit", "media_16bit"])
async def test_characters_split_across_reads_are_accepted(
    fast_frames: bool, message: str
) -> None:
    """§5.6, §8.1: UTF-8 validity is a property of the message, not of a TCP read: a
    text frame whose multi-byte characters are each cut between two reads (at every
    inner byte) is valid and accepted, not closed with 1007."""

    def build(provider: FakeProvider) -> list[bytes]:
        first = media(provider, F[0])  # built first: messages are numbered in order
        body = with_note(
            provider.dtmf("3") if message == "dtmf_7bit" else provider.media(F[1]), _NOTE
        )
        frame = text(body)
        header = len(frame) - len(body)
        cuts = [header + i for i in _inside_characters(body)]
        assert len(cuts) == 1 + 2 + 3
        bounds = [0, *cuts, len(frame)]
        pieces = [frame[a:b] for a, b in itertools.pairwise(bounds)]
        return [first, *pieces, stop(provider)]

    answer = await answer_of(f"utf8-split-reads-{message}", fast_frames, one_call(build))
    events = (heard(F[0]), "dtmf 3") if message == "dtmf_7bit" else (heard(F[0], F[1]),)
    assert_answer(answer, code=1000, events=events)


async def test_characters_split_across_fragments_are_accepted(fast_frames: bool) -> None:
    """§5.6, §8.1: a message is validated whole: fragments that end inside a valid
    multi-byte character (2-, 3- and 4-byte) are accepted."""

    def build(provider: FakeProvider) -> list[bytes]:
        first = media(provider, F[0])
        body = with_note(provider.dtmf("6"), _NOTE)
        inside = _inside_characters(body)
        cuts = [inside[0], inside[1], inside[4]]  # é after 1 byte, € after 2, 😀 after 3
        return [b"".join([first, *fragments(body, cuts), stop(provider)])]

    answer = await answer_of("utf8-split-fragments", fast_frames, one_call(build))
    assert_answer(answer, code=1000, events=(heard(F[0]), "dtmf 6"))


_INVALID_UTF8 = {
    "byte_ff": b"\xff",
    "byte_fe": b"\xfe",
    "lone_continuation": b"\x80",
    "truncated_2_byte": b"\xc3",
    "truncated_4_byte": b"\xf0\x9f\x98",
    "overlong_slash_2": b"\xc0\xaf",
    "overlong_slash_3": b"\xe0\x80\xaf",
    "overlong_slash_4": b"\xf0\x80\x80\xaf",
    "overlong_nul": b"\xc0\x80",
    "surrogate_d800": b"\xed\xa0\x80",
    "surrogate_dfff": b"\xed\xbf\xbf",
    "above_10ffff": b"\xf4\x90\x80\x80",
}


@pytest.mark.parametrize("bad", list(_INVALID_UTF8))
async def test_invalid_utf8_in_a_text_frame_closes_1007(fast_frames: bool, bad: str) -> None:
    """§8.1, §5.6, §7.4.1: a text message that is not valid UTF-8 (stray bytes,
    truncated sequences, overlong encodings, UTF-16 surrogates, code points above
    U+10FFFF) fails the connection with 1007; the bot never sees it."""

    def build(provider: FakeProvider) -> list[bytes]:
        first = media(provider, F[0])
        body = with_note(provider.dtmf("2"), _INVALID_UTF8[bad])
        return [first, text(body) + media(provider, F[1]) + stop(provider)]

    answer = await answer_of(f"utf8-invalid-{bad}", fast_frames, one_call(build))
    assert_answer(answer, code=1007, events=(heard(F[0]),))


_INVALID_FRAGMENTED = {
    # Valid fragments but for one byte in the middle one.
    "invalid_byte_in_a_fragment": lambda body: fragments(
        body.replace(b"@@", b"\xff@"), [20, 60]
    ),
    # A character cut between fragments whose second half is not a continuation.
    "broken_character_across_fragments": lambda body: fragments(
        body.replace(b"@@", b"\xe2\x82@"), [body.index(b"@@") + 2]
    ),
    # The message ends inside a character (its last fragment is cut short).
    "message_ends_inside_a_character": lambda body: fragments(
        body[:-2] + b"\xe2\x82", [len(body) // 2]
    ),
    "surrogate_across_fragments": lambda body: fragments(
        body.replace(b"@@", b"\xed\xa0\x80"), [body.index(b"@@") + 1]
    ),
}


@READS
@pytest.mark.parametrize("case", list(_INVALID_FRAGMENTED))
async def test_invalid_utf8_in_a_fragmented_message_closes_1007(
    fast_frames: bool, case: str, reads: str
) -> None:
    """§8.1, §5.6: invalid UTF-8 anywhere in a fragmented text message fails the
    connection with 1007, however the fragments cut it."""

    def build(provider: FakeProvider) -> list[bytes]:
        first = media(provider, F[0])
        bad = _INVALID_FRAGMENTED[case](with_note(provider.dtmf("2"), b"@@"))
        return delivered(reads, first, bad, media(provider, F[1]) + stop(provider))

    answer = await answer_of(
        f"utf8-fragmented-{case}-{reads}", fast_frames, one_call(build)
    )
    assert_answer(answer, code=1007, events=(heard(F[0]),))


# --------------------------------------------------------------------------- 4, 5: bits


@pytest.mark.parametrize(("bits", "name"), [(0x40, "RSV1"), (0x20, "RSV2"), (0x10, "RSV3")])
async def test_reserved_bits_close_1002(fast_frames: bool, bits: int, name: str) -> None:
    """§5.2: with no extension negotiated, a frame with a reserved bit set fails the
    connection with 1002 (on an otherwise valid text frame)."""

    def build(provider: FakeProvider) -> list[bytes]:
        first = media(provider, F[0])
        bad = with_bits(text(short_dtmf(provider, "1")), bits)
        return [first, bad + media(provider, F[1]) + stop(provider)]

    answer = await answer_of(f"reserved-bit-{name}", fast_frames, one_call(build))
    assert_answer(answer, code=1002, events=(heard(F[0]),))


@pytest.mark.parametrize("opcode", [*range(0x3, 0x8), *range(0xB, 0x10)], ids=hex)
async def test_reserved_opcodes_close_1002(fast_frames: bool, opcode: int) -> None:
    """§5.2: opcodes 0x3-0x7 (data) and 0xB-0xF (control) are reserved: 1002."""

    def build(provider: FakeProvider) -> list[bytes]:
        bad = client_frame(opcode, b"x")
        return [media(provider, F[0]), bad + media(provider, F[1]) + stop(provider)]

    answer = await answer_of(f"reserved-opcode-{opcode:x}", fast_frames, one_call(build))
    assert_answer(answer, code=1002, events=(heard(F[0]),))


@pytest.mark.parametrize("kind", ["text_7bit", "media_16bit", "ping"])
async def test_unmasked_client_frames_close_1002(fast_frames: bool, kind: str) -> None:
    """§5.1: a server must fail the connection (1002) on any frame the client did not
    mask, data or control."""

    def build(provider: FakeProvider) -> list[bytes]:
        first = media(provider, F[0])
        if kind == "text_7bit":
            bad = client_frame(TEXT, json_bytes(short_dtmf(provider, "1")), masked=False)
        elif kind == "media_16bit":
            bad = client_frame(TEXT, json_bytes(provider.media(F[1])), masked=False)
        else:
            bad = client_frame(PING, b"hello", masked=False)
        return [first, bad + media(provider, F[2]) + stop(provider)]

    answer = await answer_of(f"unmasked-{kind}", fast_frames, one_call(build))
    assert_answer(answer, code=1002, events=(heard(F[0]),))


# --------------------------------------------------------------------------- 6: close


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
async def test_client_close_is_echoed_then_tcp_closed(fast_frames: bool, code: int) -> None:
    """§5.5.1, §7.4: a close frame with a valid code is answered with a close frame
    carrying the same code, then the server closes TCP (§7.1.1); the bot's call ends
    after the audio that came before it."""

    def build(provider: FakeProvider) -> list[bytes]:
        return [media(provider, F[0]) + close_frame(code, b"bye")]

    answer = await answer_of(f"close-{code}", fast_frames, one_call(build, client_closed=True))
    assert_answer(answer, code=code, events=(heard(F[0]),))


async def test_empty_close_is_answered_with_a_close(fast_frames: bool) -> None:
    """§5.5.1: a close frame with no body (no status code, §7.1.5: 1005 to the
    application) is answered with a close frame; websockets echoes the empty body, and
    anything else the server may send is 1000 (1005 must never be on the wire)."""

    def build(provider: FakeProvider) -> list[bytes]:
        return [media(provider, F[0]) + close_frame()]

    answer = await answer_of("close-empty", fast_frames, one_call(build, client_closed=True))
    assert answer.close is not None, answer
    assert answer.close == b"" or answer.code == 1000, answer
    assert answer.eof and answer.trailing == 0 and answer.ended, answer
    assert answer.events == (heard(F[0]),), answer


_BAD_CLOSES = {
    **{f"code_{code}": close_frame(code) for code in (0, 999, 1004, 1005, 1006, 1015, 1016,
                                                     2999, 5000, 65535)},
    "one_byte_body": client_frame(CLOSE, b"\x03"),
}


@pytest.mark.parametrize("case", list(_BAD_CLOSES))
async def test_invalid_close_frames_close_1002(fast_frames: bool, case: str) -> None:
    """§7.4.1-2, §5.5.1: close codes that are reserved (1004-1006, 1015), unassigned
    (1016-2999) or outside 1000-4999, and a body of one byte, fail the connection with
    1002."""

    def build(provider: FakeProvider) -> list[bytes]:
        return [media(provider, F[0]) + _BAD_CLOSES[case]]

    answer = await answer_of(
        f"close-invalid-{case}", fast_frames, one_call(build, client_closed=True)
    )
    assert_answer(answer, code=1002, events=(heard(F[0]),))


async def test_close_reason_not_utf8_closes_1007(fast_frames: bool) -> None:
    """§5.5.1, §8.1: a close reason is UTF-8; one that is not fails with 1007."""

    def build(provider: FakeProvider) -> list[bytes]:
        return [media(provider, F[0]) + close_frame(1000, b"bye \xff\xfe")]

    answer = await answer_of(
        "close-reason-invalid-utf8", fast_frames, one_call(build, client_closed=True)
    )
    assert_answer(answer, code=1007, events=(heard(F[0]),))


@READS
async def test_frames_after_the_client_close_are_not_handled(
    fast_frames: bool, reads: str
) -> None:
    """§5.5.1: a client sends nothing after its close frame. What arrives after it
    anyway (media, a DTMF, a ping) is neither delivered to the bot nor answered (no
    pong); the close is echoed and TCP closed."""

    def build(provider: FakeProvider) -> list[bytes]:
        late = [
            close_frame(1000, b"bye"),
            media(provider, F[1]),
            text(short_dtmf(provider, "7")),
            client_frame(PING, b"late"),
        ]
        return delivered(reads, media(provider, F[0]), late, b"")

    answer = await answer_of(
        f"after-close-{reads}", fast_frames, one_call(build, client_closed=True)
    )
    assert_answer(answer, code=1000, events=(heard(F[0]),))


# --------------------------------------------------------------------------- 7: control


async def test_ping_of_125_bytes_is_answered(fast_frames: bool) -> None:
    """§5.5, §5.5.2-3: a control frame may carry up to 125 bytes; the pong echoes them."""
    payload = bytes(range(125))

    def build(provider: FakeProvider) -> list[bytes]:
        return [media(provider, F[0]) + client_frame(PING, payload) + stop(provider)]

    answer = await answer_of("ping-125", fast_frames, one_call(build))
    assert_answer(answer, code=1000, events=(heard(F[0]),), replies=((PONG, payload),))


_BAD_CONTROLS = {
    "ping_126_bytes": (client_frame(PING, bytes(126)), False),
    "pong_126_bytes": (client_frame(PONG, bytes(126)), False),
    "close_126_bytes": (close_frame(1000, b"x" * 124), True),
    "fragmented_ping": (client_frame(PING, b"half", fin=False), False),
    "fragmented_pong": (client_frame(PONG, b"half", fin=False), False),
    "fragmented_ping_inside_a_message": (
        client_frame(TEXT, b'{"event":', fin=False) + client_frame(PING, b"x", fin=False),
        False,
    ),
}


@pytest.mark.parametrize("case", list(_BAD_CONTROLS))
async def test_oversized_or_fragmented_control_frames_close_1002(
    fast_frames: bool, case: str
) -> None:
    """§5.5: control frames carry at most 125 bytes and must not be fragmented;
    otherwise the connection fails with 1002."""
    bad, closing = _BAD_CONTROLS[case]

    def build(provider: FakeProvider) -> list[bytes]:
        tail = b"" if closing else media(provider, F[1]) + stop(provider)
        return [media(provider, F[0]), bad + tail]

    answer = await answer_of(
        f"control-{case}", fast_frames, one_call(build, client_closed=closing)
    )
    assert_answer(answer, code=1002, events=(heard(F[0]),))


# --------------------------------------------------------------------------- 8: size

LIMIT = 1024


def _padded_media(provider: FakeProvider, frame: bytes, size: int) -> bytes:
    """A media message of exactly ``size`` bytes: an extra ``pad`` field (unknown fields
    are ignored by the protocol) fills it out."""
    message = provider.media(frame)
    bare = len(json_bytes({**message, "pad": ""}))
    assert bare <= size
    body = json_bytes({**message, "pad": "x" * (size - bare)})
    assert len(body) == size
    return body


_SIZES: dict[str, tuple[Callable[[bytes], list[bytes]], int, bool]] = {
    # name: (frames of the padded message, its size, accepted)
    "single_frame_1024": (lambda body: [text(body)], LIMIT, True),
    "single_frame_1025": (lambda body: [text(body)], LIMIT + 1, False),
    "fragmented_total_1024": (lambda body: fragments(body, [400, 800]), LIMIT, True),
    "fragmented_total_1025": (lambda body: fragments(body, [400, 800]), LIMIT + 1, False),
    "two_fragments_of_1000": (lambda body: fragments(body, [1000]), 2000, False),
}


@READS
@pytest.mark.parametrize("case", list(_SIZES))
async def test_message_size_limit(fast_frames: bool, case: str, reads: str) -> None:
    """§7.4.1 (1009), max_message_size=1024: a message of 1024 bytes is accepted, one of
    1025 is refused with 1009 whether it comes in one frame or in fragments that each
    fit (the limit is on the message)."""
    frames_of, size, accepted = _SIZES[case]

    def build(provider: FakeProvider) -> list[bytes]:
        first = media(provider, F[0])
        body = _padded_media(provider, F[1], size)
        return delivered(reads, first, frames_of(body), stop(provider))

    answer = await answer_of(
        f"size-{case}-{reads}", fast_frames, one_call(build, max_message_size=LIMIT)
    )
    if accepted:
        assert_answer(answer, code=1000, events=(heard(F[0], F[1]),))
    else:
        assert_answer(answer, code=1009, events=(heard(F[0]),))


@pytest.mark.parametrize("length", [LIMIT + 1, 65535, 2**40, 2**63 - 1])
async def test_declared_length_over_the_limit_closes_1009_at_once(
    fast_frames: bool, length: int
) -> None:
    """§5.2, §7.4.1, max_message_size=1024: a frame header declaring more than the limit
    (16- or 64-bit length) is refused with 1009 from the header alone: the server
    neither waits for nor buffers the payload (we send none)."""

    def build(provider: FakeProvider) -> list[bytes]:
        return [media(provider, F[0]), declared_length_header(length) + b"{"]

    answer = await answer_of(
        f"declared-{length}", fast_frames, one_call(build, max_message_size=LIMIT)
    )
    assert_answer(answer, code=1009, events=(heard(F[0]),))


def _padded_dtmf(provider: FakeProvider, digit: str, size: int) -> bytes:
    """A DTMF message of exactly ``size`` bytes (an ignored ``pad`` field fills it)."""
    message = short_dtmf(provider, digit)
    bare = len(json_bytes({**message, "pad": ""}))
    body = json_bytes({**message, "pad": "x" * (size - bare)})
    assert len(body) == size
    return body


@pytest.mark.parametrize(
    ("size", "accepted"),
    [(125, True), (126, True), (127, True), (65535, True), (65536, True), (65537, False)],
)
async def test_every_length_encoding_at_its_edges(
    fast_frames: bool, size: int, accepted: bool
) -> None:
    """§5.2: payload lengths up to 125 fit in 7 bits, 126-65535 take a 16-bit and more a
    64-bit extended length. Text frames at each edge are one message each, up to the
    default max_message_size (64 KiB, 65536 bytes: accepted); one byte more is 1009."""

    def build(provider: FakeProvider) -> list[bytes]:
        first = media(provider, F[0])
        return [first + text(_padded_dtmf(provider, "7", size)) + stop(provider)]

    answer = await answer_of(f"length-{size}", fast_frames, one_call(build))
    if accepted:
        assert_answer(answer, code=1000, events=(heard(F[0]), "dtmf 7"))
    else:
        assert_answer(answer, code=1009, events=(heard(F[0]),))


def _text_frame_with_length_field(payload: bytes, bits: int) -> bytes:
    """A masked text frame whose length uses a ``bits``-bit extended field even where
    a shorter one would do (§5.2 asks senders for the minimal encoding)."""
    if bits == 16:
        size = bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    else:
        size = bytes([0x80 | 127]) + len(payload).to_bytes(8, "big")
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | TEXT]) + size + mask + body


@pytest.mark.parametrize(
    ("bits", "message"), [(16, "dtmf_7bit"), (64, "dtmf_7bit"), (64, "media_16bit")]
)
async def test_non_minimal_length_encodings_get_one_answer(
    fast_frames: bool, bits: int, message: str
) -> None:
    """§5.2: "the minimal number of bytes MUST be used to encode the length", by the
    sender; the RFC names no answer for a receiver that gets more. Both settings must
    give the same one: the message delivered, or 1002."""

    def build(provider: FakeProvider) -> list[bytes]:
        first = media(provider, F[0])
        body = json_bytes(
            short_dtmf(provider, "3") if message == "dtmf_7bit" else provider.media(F[1])
        )
        return [first + _text_frame_with_length_field(body, bits) + stop(provider)]

    answer = await answer_of(f"non-minimal-{bits}-{message}", fast_frames, one_call(build))
    if answer.code == 1002:
        assert_answer(answer, code=1002, events=(heard(F[0]),))
    else:
        events = (heard(F[0]), "dtmf 3") if message == "dtmf_7bit" else (heard(F[0], F[1]),)
        assert_answer(answer, code=1000, events=events)


async def test_empty_text_message(fast_frames: bool) -> None:
    """§5.2: a text frame of length 0 is a valid (empty) message; the providers'
    protocols have no such message, so the call ends with 1007 (bad JSON, README "Close
    codes"), after the audio before it."""

    def build(provider: FakeProvider) -> list[bytes]:
        return [media(provider, F[0]) + client_frame(TEXT, b"") + stop(provider)]

    answer = await answer_of("empty-text", fast_frames, one_call(build))
    assert_answer(answer, code=1007, events=(heard(F[0]),))


@pytest.mark.parametrize("bad", ["rsv1", "invalid_utf8", "binary"])
async def test_a_client_that_ignores_the_close_is_cut_off(fast_frames: bool, bad: str) -> None:
    """§7.1.1, §7.1.7: after failing the connection the server closes TCP; a client that
    neither answers its close frame nor closes its side does not keep the connection,
    or the bot's call, alive: both end within the server's close timeout."""

    def build(provider: FakeProvider) -> list[bytes]:
        first = media(provider, F[0])
        if bad == "rsv1":
            frame = with_bits(text(short_dtmf(provider, "1")), 0x40)
        elif bad == "invalid_utf8":
            frame = text(with_note(provider.dtmf("1"), b"\xff"))
        else:
            frame = client_frame(BINARY, b"{}")
        return [first, frame]

    answer = await answer_of(f"linger-{bad}", fast_frames, one_call(build, linger=True))
    code = {"rsv1": 1002, "invalid_utf8": 1007, "binary": 1003}[bad]
    assert_answer(answer, code=code, events=(heard(F[0]),))


# --------------------------------------------------------------------------- 9: binary


@pytest.mark.parametrize("framing", ["whole", "fragmented"])
async def test_binary_messages_close_1003(fast_frames: bool, framing: str) -> None:
    """§5.6, §7.4.1 (1003: data the endpoint cannot accept): the providers speak text
    only, so a binary message -- here valid JSON -- ends the call with 1003 (README
    "Close codes"); the bot gets what came before it."""

    def build(provider: FakeProvider) -> list[bytes]:
        first = media(provider, F[0])
        body = json_bytes(provider.dtmf("1"))
        if framing == "whole":
            bad = client_frame(BINARY, body)
        else:
            bad = b"".join(fragments(body, [10], opcode=BINARY))
        return [first, bad + media(provider, F[1]) + stop(provider)]

    answer = await answer_of(f"binary-{framing}", fast_frames, one_call(build))
    assert_answer(answer, code=1003, events=(heard(F[0]),))


# --------------------------------------------------------------------------- 10: mixed


_AFTER_GOOD: dict[str, tuple[Callable[[FakeProvider], bytes], int]] = {
    "invalid_utf8": (lambda p: text(with_note(p.dtmf("0"), b"\xc0\xaf")), 1007),
    "rsv1": (lambda p: with_bits(text(short_dtmf(p, "0")), 0x40), 1002),
    "unmasked": (lambda p: client_frame(TEXT, json_bytes(short_dtmf(p, "0")), masked=False),
                 1002),
    "reserved_opcode": (lambda p: client_frame(0x3, json_bytes(short_dtmf(p, "0"))), 1002),
    "orphan_continuation": (lambda p: client_frame(CONT, json_bytes(short_dtmf(p, "0"))),
                            1002),
    "ping_126_bytes": (lambda p: client_frame(PING, bytes(126)), 1002),
    "invalid_close_code": (lambda p: close_frame(1005), 1002),
    "too_big": (lambda p: client_frame(TEXT, b"x" * 70_000), 1009),
    "binary": (lambda p: client_frame(BINARY, json_bytes(short_dtmf(p, "0"))), 1003),
}


@pytest.mark.parametrize("bad", list(_AFTER_GOOD))
async def test_good_frames_then_a_bad_one_in_one_write(fast_frames: bool, bad: str) -> None:
    """§5.2-§8.1 in one read: media, a short DTMF, more media, a bad frame, then good
    frames again, all in one write: everything before the bad frame reaches the bot,
    exactly and in order, nothing after it does, and the close code is the bad frame's
    (the default 64 KiB max_message_size for ``too_big``)."""
    make_bad, code = _AFTER_GOOD[bad]

    def build(provider: FakeProvider) -> list[bytes]:
        good = (
            media(provider, F[0])
            + text(short_dtmf(provider, "5"))
            + media(provider, F[1], F[2])
        )
        after = media(provider, F[3]) + text(short_dtmf(provider, "6")) + stop(provider)
        return [good + make_bad(provider) + after]

    answer = await answer_of(f"after-good-{bad}", fast_frames, one_call(build))
    assert_answer(answer, code=code, events=(heard(F[0]), "dtmf 5", heard(F[1], F[2])))


async def test_a_frame_split_across_reads_then_bad_bytes(fast_frames: bool) -> None:
    """§5.2: a good frame cut between reads, completed in the same read as a bad
    frame: the good message arrives, then 1002 (the parser resumes mid-frame)."""

    def build(provider: FakeProvider) -> list[bytes]:
        first = media(provider, F[0])
        good = media(provider, F[1])
        bad = with_bits(text(short_dtmf(provider, "0")), 0x20)
        return [first + good[:100], good[100:] + bad + stop(provider)]

    answer = await answer_of("split-then-bad", fast_frames, one_call(build))
    assert_answer(answer, code=1002, events=(heard(F[0], F[1]),))
