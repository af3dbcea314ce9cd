"""The media fast path (``mediastream/protocols/_fastmedia.py``) changes nothing but speed.

Every test feeds the same messages to two protocols: one as built (it learns the
stream's media template from the first accepted media message and then recognises
messages of that shape with one regex), and one barred from learning
(``_learn_budget = 0``), which always takes the full JSON parse. Their answers must be
identical message by message: the same events, or the same error class with the same
text, and the same state afterwards. Other tests prove the fast path is really taken,
so that the comparison is not between two full parses.

Example counts are modest by default; ``MEDIASTREAM_FUZZ=1`` raises them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import string
from binascii import a2b_base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from _util_protocols import PROVIDERS, VECTORS, load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediastream import errors
from mediastream.protocols import (
    PROTOCOLS,
    AudioReceived,
    MediaStreamProtocol,
    ProviderDetector,
    State,
    protocol_for,
)

FUZZ = os.environ.get("MEDIASTREAM_FUZZ") == "1"
SETTINGS = settings(
    max_examples=3000 if FUZZ else 150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Vectors that take each provider to STARTED, and the inbound encoding they announce.
OPENINGS = {
    "twilio": ["outbound"],
    "telnyx": ["outbound", "session_l16", "session_pcma"],
    "plivo": ["outbound", "outbound_l16"],
}
CASES = [(p, name) for p in PROVIDERS for name in OPENINGS[p]]
WORD = string.ascii_letters + string.digits + "_.:=+/-"


# ----------------------------------------------------------------------------- helpers


def opening(provider: str, vector: str, stream_id: str) -> tuple[list[str], dict[str, Any]]:
    """The vector's messages up to and including ``start`` with ``stream_id`` put in,
    compact as providers send them, and the vector's constructor options."""
    data = load(VECTORS / provider / f"{vector}.json")
    out: list[str] = []
    for message in data["messages"]:
        message = json.loads(json.dumps(message))
        if message["event"] == "start":
            key = PROTOCOLS[provider].STREAM_KEY
            if provider == "telnyx":
                message[key] = stream_id
            else:
                message["start"][key] = stream_id
                if key in message:
                    message[key] = stream_id
        out.append(json.dumps(message, separators=(",", ":")))
        if message["event"] == "start":
            break
    options = dict(data.get("options", {}))
    options.pop("outbound_format", None)
    return out, options


def pair(
    provider: str, vector: str, stream_id: str, **limits: Any
) -> tuple[MediaStreamProtocol, MediaStreamProtocol]:
    """(learning, full-parse-only) protocols, both started on the same stream.

    Telnyx L16 is forced big-endian here: in "auto" every frame is parsed until the audio
    decides the byte order (test_protocol_real_messages tests that), and these tests are
    about the templates."""
    messages, options = opening(provider, vector, stream_id)
    if provider == "telnyx" and "l16" in vector:
        limits.setdefault("l16_byteorder", "big")
    fast = protocol_for(provider, **options, **limits)
    slow = protocol_for(provider, **options, **limits)
    slow._learn_budget = 0  # the private switch: never learn, always parse
    for message in messages:
        assert fast.receive(message) == slow.receive(message)
    assert fast.state is State.STARTED
    return fast, slow


Outcome = tuple[Any, ...]


def outcome(protocol: MediaStreamProtocol, message: str | bytes) -> Outcome:
    """What ``receive`` answered: events, or the error's class and text. Any other
    exception propagates and fails the test."""
    try:
        return ("events", protocol.receive(message), protocol.state)
    except errors.RemoteProtocolError as exc:
        return ("error", type(exc), str(exc), protocol.state)


def same(fast: MediaStreamProtocol, slow: MediaStreamProtocol, message: str | bytes) -> Outcome:
    result = outcome(fast, message)
    assert result == outcome(slow, message), message
    return result


def count_full_parses(protocol: MediaStreamProtocol) -> Callable[[], int]:
    """Spy on the full parse; returns a function giving the count so far."""
    calls = 0
    parse = protocol._receive_parsed

    def counting(message: str | bytes) -> list[Any]:
        nonlocal calls
        calls += 1
        return parse(message)

    protocol._receive_parsed = counting  # type: ignore[method-assign]
    return lambda: calls


# ------------------------------------------------------------------- message rendering


@dataclass
class Shape:
    """Key order, number types and layout of one stream's media messages."""

    top: list[str]  # roles: event, sequence, stream, media, or "x:<key>" (ignored text)
    inner: list[str]  # roles: track, chunk, timestamp, payload, or "x:<key>"
    kinds: dict[str, str]  # sequence/chunk/timestamp -> str | int
    layout: str  # compact | spaced | random (whitespace anywhere JSON allows it)


@dataclass
class Values:
    sequence: int
    chunk: int
    timestamp: int
    track: str
    payload: bytes
    stream: str
    extra: str
    #: how the payload and strings are spelt: plain, ascii (ensure_ascii), escaped
    #: (a JSON escape inside the payload), bad (not base64)
    spelling: str = "plain"
    #: this message spells a number otherwise than the shape: str, int, float (2.0),
    #: zeros ("002", valid), int0 (002, invalid JSON), negative
    respell: dict[str, str] | None = None
    #: this message has random whitespace whatever the shape's layout
    reflow: bool = False


def render(provider: str, shape: Shape, v: Values, gaps: Callable[[], str]) -> str:
    cls = PROTOCOLS[provider]
    keys = {"event": "event", "sequence": cls.SEQUENCE_KEY, "stream": cls.STREAM_KEY,
            "media": "media", "track": "track", "chunk": "chunk",
            "timestamp": "timestamp", "payload": "payload"}
    ascii_only = v.spelling == "ascii"
    layout = "random" if v.reflow else shape.layout
    if layout == "compact":
        item, colon = ",", ":"
    elif layout == "spaced":
        item, colon = ", ", ": "
    else:
        item = colon = ""

    def text(value: str) -> str:
        return json.dumps(value, ensure_ascii=ascii_only)

    def number(role: str, value: int) -> str:
        kind = (v.respell or {}).get(role, shape.kinds[role])
        if kind == "int":
            return str(value)
        if kind == "float":
            return f"{value}.0"
        if kind == "zeros":
            return f'"00{value}"'
        if kind == "int0":
            return f"0{value}"
        if kind == "negative":
            return f"-{value}"
        return f'"{value}"'

    def payload() -> str:
        b64 = base64.b64encode(v.payload).decode()
        if v.spelling == "escaped":
            return '"' + b64.replace("/", "\\/").replace("A", "\\u0041") + '"'
        if v.spelling == "bad":
            return '"' + b64[:-1] + '"'
        return '"' + b64 + '"'

    def value(role: str) -> str:
        if role == "event":
            return '"media"'
        if role in ("sequence", "chunk", "timestamp"):
            return number(role, getattr(v, role))
        if role == "stream":
            return text(v.stream)
        if role == "track":
            return text(v.track)
        if role == "payload":
            return payload()
        if role == "media":
            return obj(shape.inner)
        return text(v.extra)

    def obj(roles: list[str]) -> str:
        parts = []
        for role in roles:
            key = role[2:] if role.startswith("x:") else keys[role]
            sep = colon if layout != "random" else gaps() + ":" + gaps()
            parts.append(gaps() + json.dumps(key) + sep + value(role) + gaps())
        joiner = item if layout != "random" else ","
        return "{" + joiner.join(parts) + gaps() + "}"

    return gaps() + obj(shape.top) + gaps()


# ------------------------------------------------------------------------- strategies

ROLES_TOP = ["event", "sequence", "stream", "media"]
ROLES_INNER = ["track", "chunk", "timestamp", "payload"]
numbers = st.one_of(
    st.integers(0, 10**6), st.integers(0, 10**13), st.integers(10**18, 10**20)
)
words = st.text(WORD, min_size=1, max_size=40)
texts = st.one_of(words, st.text(max_size=12))


@st.composite
def shapes(draw: st.DrawFn, plain: bool = False) -> Shape:
    """A key order and layout. ``plain`` shapes are ones the fast path must learn;
    the others mostly are too, but may lack a field or have random whitespace."""
    top = list(ROLES_TOP)
    inner = list(ROLES_INNER)
    if not plain and draw(st.integers(0, 5)) == 0:  # a field the handler reads is missing
        top = [r for r in top if r in ("event", "media") or draw(st.booleans())]
        inner = [r for r in inner if r == "payload" or draw(st.booleans())]
    if draw(st.booleans()):
        top.append("x:extra_headers")
    if draw(st.integers(0, 4)) == 0:
        inner.append("x:occurred_at")
    layouts = ["compact", "spaced"] if plain else ["compact", "compact", "spaced", "random"]
    return Shape(
        top=list(draw(st.permutations(top))),
        inner=list(draw(st.permutations(inner))),
        kinds={
            role: draw(st.sampled_from(["str", "int"]))
            for role in ("sequence", "chunk", "timestamp")
        },
        layout=draw(st.sampled_from(layouts)),
    )


@st.composite
def values(draw: st.DrawFn, stream_id: str, plain: bool = False) -> Values:
    """One message's values. Plain ones fit the template learnt from any other plain
    one; the others, about half the time, deviate from it in one or more ways."""
    plain_values = Values(
        sequence=draw(st.integers(0, 10**12)),
        chunk=draw(st.integers(0, 10**12)),
        timestamp=draw(st.integers(0, 10**18)),
        track=draw(st.sampled_from(["inbound", "outbound", "inbound_track"])),
        payload=draw(st.integers(0, 160).flatmap(lambda n: st.binary(min_size=2 * n,
                                                                      max_size=2 * n))),
        stream=stream_id,
        extra=draw(st.text(WORD + " ;,é", max_size=30)),
    )
    if plain or draw(st.booleans()):
        return plain_values
    respell = st.sampled_from(["str", "int", "float", "zeros", "int0", "negative"])
    return Values(
        sequence=draw(st.one_of(st.just(plain_values.sequence), numbers)),
        chunk=draw(st.one_of(st.just(plain_values.chunk), numbers)),
        timestamp=draw(st.one_of(st.just(plain_values.timestamp), numbers)),
        track=draw(st.one_of(st.just(plain_values.track), texts)),
        payload=draw(st.one_of(st.just(plain_values.payload), st.binary(max_size=400))),
        stream=draw(st.sampled_from([stream_id, stream_id, stream_id + "x", ""])),
        extra=draw(st.one_of(st.just(plain_values.extra), texts)),
        spelling=draw(st.sampled_from(["plain", "ascii", "escaped", "bad"])),
        respell=draw(st.dictionaries(st.sampled_from(["sequence", "chunk", "timestamp"]),
                                     respell, max_size=2)),
        reflow=draw(st.integers(0, 4)) == 0,
    )


stream_ids = st.one_of(words, words, st.text(min_size=1, max_size=24))


def gaps_from(data: st.DataObject, layout: str) -> Callable[[], str]:
    if layout != "random":
        return lambda: ""
    choice = st.sampled_from(["", "", " ", "\n", "\t", "\r\n  "])
    return lambda: data.draw(choice)


# ------------------------------------------------------------------------------- tests


def test_strict_base64_rejects_every_character_outside_its_alphabet() -> None:
    """The fast path's payload group admits anything but ``"``; strict a2b_base64
    must then reject every other character, or an escape could slip through."""
    alphabet = set(string.ascii_letters + string.digits + "+/=")
    accepted = []
    for code in range(0x110000):
        char = chr(code)
        if char in alphabet:
            continue
        try:  # CPython checks each character alike wherever it stands (binascii.c)
            a2b_base64("AA" + char + "A", strict_mode=True)
        except ValueError:
            continue
        accepted.append(code)
    assert accepted == []


def test_the_text_class_is_every_character_json_reads_as_itself() -> None:
    """Spelt as a positive class for speed, it must be exactly ``[^"\\\x00-\x1f]``."""
    from mediastream.protocols._fastmedia import _TEXT_CHAR

    text_char = re.compile(_TEXT_CHAR)
    wrong = [
        code for code in range(0x110000)
        if (text_char.fullmatch(chr(code)) is None) == (code >= 0x20 and code not in (34, 92))
    ]
    assert wrong == []


@pytest.mark.parametrize(("provider", "vector"), CASES)
def test_documented_media_takes_the_fast_path_after_the_first(
    provider: str, vector: str
) -> None:
    stream_id = "MZ18ad3ab5a668481ce02b83e7395059f0"
    fast, slow = pair(provider, vector, stream_id)
    parses = count_full_parses(fast)
    documented = next(
        m for m in load(VECTORS / provider / "session.json")["messages"]
        if m["event"] == "media"
    )
    fmt = fast.call.inbound_format if fast.call else None
    for n in range(5):
        message = json.loads(json.dumps(documented))
        message[PROTOCOLS[provider].STREAM_KEY] = stream_id
        message["media"]["chunk"] = str(n + 1) if provider != "plivo" else n + 1
        message["media"]["payload"] = base64.b64encode(bytes(range(n, n + 160))).decode()
        kind, events, state = same(fast, slow, json.dumps(message, separators=(",", ":")))
        assert kind == "events" and state is State.STARTED
        [event] = events
        assert isinstance(event, AudioReceived) and event.chunk == n + 1
        assert event.payload == bytes(range(n, n + 160)) and event.format == fmt
    assert parses() == 1  # the first message taught the template; the rest matched it
    assert slow._template is None and fast._template is not None


@pytest.mark.parametrize("provider", PROVIDERS)
@SETTINGS
@given(data=st.data(), stream_id=words)
def test_plain_shapes_are_learnt_and_give_the_same_events(
    provider: str, data: st.DataObject, stream_id: str
) -> None:
    """Any key order, either separator style, numbers as text or JSON numbers."""
    vector = data.draw(st.sampled_from(OPENINGS[provider]))
    fast, slow = pair(provider, vector, stream_id)
    parses = count_full_parses(fast)
    shape = data.draw(shapes(plain=True))
    batch = data.draw(st.lists(values(stream_id, plain=True), min_size=2, max_size=5))
    for v in batch:
        message = render(provider, shape, v, lambda: "")
        kind, events, _ = same(fast, slow, message)
        assert kind == "events" and len(events) == 1
    assert parses() == 1, shape


@pytest.mark.parametrize("provider", PROVIDERS)
@SETTINGS
@given(data=st.data(), stream_id=stream_ids)
def test_any_media_message_gives_what_the_full_parse_gives(
    provider: str, data: st.DataObject, stream_id: str
) -> None:
    """Random ids, key orders, number spellings, whitespace, escapes, missing fields,
    wrong stream ids, bad payloads and sizes over the limits: mostly after a template
    has been learnt from the stream's first message, so that a message that deviates
    from it meets the fast path first."""
    vector = data.draw(st.sampled_from(OPENINGS[provider]))
    limits = data.draw(st.sampled_from([{}, {"max_payload_ms": 20}]))
    fast, slow = pair(provider, vector, stream_id, **limits)
    shape = data.draw(shapes())
    for v in data.draw(st.lists(values(stream_id), min_size=1, max_size=6)):
        layout = "random" if v.reflow else shape.layout
        same(fast, slow, render(provider, shape, v, gaps_from(data, layout)))


EDITS = '"\\{}[],:0123456789-+.eE aA=/\n\x00é\u2028'


@pytest.mark.parametrize("provider", PROVIDERS)
@SETTINGS
@given(data=st.data(), stream_id=words)
def test_mutated_media_messages_give_what_the_full_parse_gives(
    provider: str, data: st.DataObject, stream_id: str
) -> None:
    """A learnt template, then messages of its shape with a few characters changed:
    whatever they become, both protocols answer alike, and only with events or a
    RemoteProtocolError (``outcome`` lets anything else through to fail the test)."""
    vector = data.draw(st.sampled_from(OPENINGS[provider]))
    fast, slow = pair(provider, vector, stream_id)
    shape = data.draw(shapes(plain=True))
    teach, *rest = data.draw(st.lists(values(stream_id, plain=True), min_size=3, max_size=3))
    same(fast, slow, render(provider, shape, teach, lambda: ""))
    assert fast._template is not None
    for v in rest:
        text = list(render(provider, shape, v, lambda: ""))
        for _ in range(data.draw(st.integers(1, 3))):
            i = data.draw(st.integers(0, len(text)))
            edit = data.draw(st.sampled_from(["delete", "insert", "replace", "repeat"]))
            if edit == "insert" or not text[i:]:
                text.insert(i, data.draw(st.sampled_from(EDITS)))
            elif edit == "delete":
                del text[i]
            elif edit == "replace":
                text[i] = data.draw(st.sampled_from(EDITS))
            else:
                j = data.draw(st.integers(i, len(text)))
                text[j:j] = text[i:j]
        same(fast, slow, "".join(text))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_matching_messages_that_fail_a_check_fail_alike(provider: str) -> None:
    """Shape right, content wrong: each check the fast path makes falls back to the full
    parse, which raises its usual error."""
    stream_id = "stream-1"
    shape = Shape(top=list(ROLES_TOP), inner=list(ROLES_INNER),
                  kinds=dict.fromkeys(("sequence", "chunk", "timestamp"), "str"),
                  layout="compact")

    def message(**changes: Any) -> str:
        # bytes(range(160)) spells "AAEC...", with the A and / that "escaped" escapes
        v = Values(sequence=2, chunk=1, timestamp=0, track="inbound",
                   payload=bytes(range(160)), stream=stream_id, extra="")
        for key, value in changes.items():
            setattr(v, key, value)
        return render(provider, shape, v, lambda: "")

    # (opening, changes, error expected or None, taken by the fast path)
    cases: list[tuple[str, dict[str, Any], type[errors.RemoteProtocolError] | None, bool]] = [
        ("l16", {"payload": b"\x00" * 161}, errors.InvalidMessageError, False),
        ("outbound", {"stream": "stream-2"}, errors.InvalidMessageError, False),
        ("outbound", {"payload": b"\x00" * 163}, errors.MessageTooBigError, False),
        ("outbound", {"payload": b"\x00" * 162}, None, True),  # 216 characters: the limit
        ("outbound", {"spelling": "bad"}, errors.InvalidMessageError, False),
        ("outbound", {"spelling": "escaped"}, None, False),
        ("outbound", {"sequence": 10**19}, errors.InvalidMessageError, False),
        ("outbound", {"sequence": 10**19 - 1, "timestamp": 10**18}, None, True),
        ("outbound", {"track": "inboünd", "spelling": "ascii"}, None, False),  # \u00fc
        ("outbound", {"respell": {"chunk": "int0"}}, errors.InvalidMessageError, False),
        ("outbound", {"respell": {"chunk": "int"}}, None, False),  # another shape
    ]
    for vector, changes, error, taken in cases:
        if vector == "l16":
            vector = next((v for v in OPENINGS[provider] if "l16" in v), "")
            if not vector:
                continue
        fast, slow = pair(provider, vector, stream_id, max_payload_ms=20)
        parses = count_full_parses(fast)
        same(fast, slow, message())  # teaches
        assert fast._template is not None
        result = same(fast, slow, message(**changes))
        if error is None:
            assert result[0] == "events"
        else:
            assert result[:2] == ("error", error), (changes, result)
            assert fast.state is State.FAILED
        assert parses() == (1 if taken else 2)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_message_size_limit_and_state_apply_on_the_fast_path(provider: str) -> None:
    fast, slow = pair(provider, "outbound", "s", max_message_chars=1200)
    cls = PROTOCOLS[provider]
    small = json.dumps(
        {"event": "media", cls.SEQUENCE_KEY: "2", cls.STREAM_KEY: "s",
         "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "AAAA"}},
        separators=(",", ":"),
    )
    big = small.replace("AAAA", "A" * 1200)
    assert same(fast, slow, small)[0] == "events"
    assert same(fast, slow, big)[:2] == ("error", errors.MessageTooBigError)
    # A stopped stream discards late media, learnt shape or not.
    fast, slow = pair(provider, "outbound", "s")
    same(fast, slow, small)
    same(fast, slow, json.dumps({"event": "stop", cls.STREAM_KEY: "s"}))
    assert same(fast, slow, small) == ("events", [], State.STOPPED)
    assert same(fast, slow, small.encode())[:2] == ("error", errors.UnsupportedDataError)


def test_unlearnable_shapes_stay_on_the_full_parse() -> None:
    fast, slow = pair("plivo", "outbound", "s")
    media = {"event": "media", "sequenceNumber": 2, "streamId": "s", "extra": {"a": [1]},
             "media": {"track": "inbound", "chunk": 1, "timestamp": "5", "payload": "AAAA"}}
    for _ in range(12):  # more than the learning budget: it stops trying, stays correct
        same(fast, slow, json.dumps(media, separators=(",", ":")))
    assert fast._template is None and fast._learn_budget == 0


def test_a_detected_stream_learns_too() -> None:
    messages, _ = opening("telnyx", "outbound", "s-1")
    detector = ProviderDetector()
    for message in messages:
        detector.receive(message)
    media = ('{"event":"media","sequence_number":"%d","stream_id":"s-1","media":'
             '{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"AAAA"}}')
    events = [e for n in range(3) for e in detector.receive(media % (n, n, 20 * n))]
    assert [e.chunk for e in events if isinstance(e, AudioReceived)] == [0, 1, 2]
    assert detector.protocol is not None and detector.protocol._template is not None


@pytest.mark.parametrize("provider", PROVIDERS)
def test_text_the_template_admits_is_text_json_reads_alike(provider: str) -> None:
    """A template learnt from non-word ids and tracks admits any unescaped text there,
    and a string the handler ignores admits any too; an escape, a raw control character
    or a backslash before a closing quote (which JSON reads as an escaped quote) must
    not slip through as what they are not."""
    stream_id, track = "strøm 1", "ïnbound"
    cls = PROTOCOLS[provider]

    def media(track_json: str, extra_json: str) -> str:
        return (
            f'{{"event":"media","{cls.SEQUENCE_KEY}":"3","{cls.STREAM_KEY}":'
            f'{json.dumps(stream_id, ensure_ascii=False)},"media":{{"track":{track_json},'
            f'"chunk":"1","timestamp":"0","payload":"AAAA"}},"extra_headers":{extra_json}}}'
        )

    plain = json.dumps(track, ensure_ascii=False)
    for track_json, extra_json, taken in [
        (plain, '"b=2;c"', True),  # the template's own shape
        (json.dumps(track), '"a"', False),  # \u00ef: the same track, escaped
        (plain, '"a\\u0041"', False),  # an escape in an ignored string
        (plain, '"a\nb"', False),  # a raw newline: invalid JSON
        (plain, '"a\\","x":"', False),  # JSON: a\", then x; a template reading a\ differs
        ('"\u00efn\x01bound"', '"a"', False),  # a raw control character: invalid JSON
    ]:
        fast, slow = pair(provider, "outbound", stream_id)
        parses = count_full_parses(fast)
        assert same(fast, slow, media(plain, '"a=1"'))[0] == "events"  # teaches
        assert fast._template is not None
        same(fast, slow, media(track_json, extra_json))
        assert parses() == (1 if taken else 2), (track_json, extra_json)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_json_numbers_are_read_as_json_reads_them(provider: str) -> None:
    """Plivo sends JSON numbers; a template learnt from them admits no spelling JSON
    refuses (a leading zero, a sign) or reads otherwise (a fraction)."""
    fast, slow = pair(provider, "outbound", "s")
    parses = count_full_parses(fast)
    shape = Shape(top=list(ROLES_TOP), inner=list(ROLES_INNER),
                  kinds=dict.fromkeys(("sequence", "chunk", "timestamp"), "int"),
                  layout="compact")
    v = Values(sequence=0, chunk=10, timestamp=10**18, track="inbound", payload=b"",
               stream="s", extra="")
    assert same(fast, slow, render(provider, shape, v, lambda: ""))[0] == "events"
    assert same(fast, slow, render(provider, shape, v, lambda: ""))[0] == "events"
    assert parses() == 1
    for spelling in ("float", "int0", "negative"):
        v.respell = {"chunk": spelling}
        same(fast, slow, render(provider, shape, v, lambda: ""))
    assert parses() == 4


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_stream_id_is_compared_as_text_and_templates_are_shared(provider: str) -> None:
    """The template captures the stream id and compares it with the started stream's:
    characters that mean something in a regex mean nothing there, any length works,
    and every stream of one serializer shares one compiled template (compiling per call
    cost call set-up time)."""
    cls = PROTOCOLS[provider]

    def media(sid: str) -> str:
        return json.dumps(
            {"event": "media", cls.SEQUENCE_KEY: "2", cls.STREAM_KEY: sid,
             "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "AA=="}},
            separators=(",", ":"),
        )

    fast, slow = pair(provider, "outbound", "a.b+")
    assert same(fast, slow, media("a.b+"))[0] == "events"
    assert fast._template is not None
    assert same(fast, slow, media("aXbb"))[:2] == ("error", errors.InvalidMessageError)
    long_id = "s" * 3000
    other, slow = pair(provider, "outbound", long_id)
    for _ in range(2):
        assert same(other, slow, media(long_id))[0] == "events"
    assert other._template is not None
    assert other._template[0] is fast._template[0]  # one compiled pattern for both
