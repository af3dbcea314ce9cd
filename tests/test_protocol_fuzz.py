"""Property tests: whatever arrives, a protocol answers with events or a
RemoteProtocolError, never any other exception, and once failed it stays failed.

Example counts are modest by default; ``MEDIASTREAM_FUZZ=1`` (``make fuzz``) raises them.
"""

from __future__ import annotations

import base64
import copy
import json
import os
from typing import Any

import pytest
from _util_protocols import PROVIDERS, load, to_wire, vector_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediastream import errors
from mediastream.protocols import (
    ClearAudio,
    Event,
    MediaStreamProtocol,
    ProviderDetector,
    SendAudio,
    SendDtmf,
    SendMark,
    State,
    protocol_for,
)
from mediastream.protocols._json import parse_json

FUZZ = os.environ.get("MEDIASTREAM_FUZZ") == "1"
FUZZ_SETTINGS = settings(
    max_examples=5000 if FUZZ else 100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

EVENT_NAMES = [
    "connected", "start", "media", "dtmf", "mark", "stop", "error", "playedStream",
    "played", "clearedAudio", "playFailed", "clear", "playAudio", "checkpoint",
]
KEYS = [
    "event", "start", "media", "payload", "streamSid", "stream_id", "streamId", "callSid",
    "callId", "call_control_id", "sequenceNumber", "sequence_number", "chunk", "timestamp",
    "track", "digit", "dtmf", "mark", "name", "mediaFormat", "media_format", "encoding",
    "sampleRate", "sample_rate", "channels", "customParameters", "custom_parameters",
    "extra_headers", "tracks", "connected",
]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(EVENT_NAMES), st.sampled_from(["AAAA", "////", "=", "8000", "-1", "PCMU"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children,
                        max_size=5),
    ),
    max_leaves=25,
)
messages = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v)),
    st.fixed_dictionaries({"event": st.sampled_from(EVENT_NAMES)},
                          optional={k: json_values for k in KEYS[1:]}).map(json.dumps),
)


def _feed(protocol: MediaStreamProtocol | ProviderDetector, message: str | bytes) -> bool:
    """Feed one message; True if it raised (which must be a RemoteProtocolError)."""
    try:
        events = protocol.receive(message)
    except errors.RemoteProtocolError:
        return True
    assert isinstance(events, list)
    assert all(isinstance(e, Event.__args__) for e in events)  # type: ignore[attr-defined]
    return False


def _assert_stays_failed(protocol: MediaStreamProtocol, valid: list[Any]) -> None:
    assert protocol.state is State.FAILED
    for message in valid[:3]:
        with pytest.raises(errors.RemoteProtocolError):
            protocol.receive(to_wire(message))
    with pytest.raises(errors.LocalProtocolError):
        protocol.send(ClearAudio())


@pytest.mark.parametrize("provider", PROVIDERS)
@FUZZ_SETTINGS
@given(batch=st.lists(messages, min_size=1, max_size=6))
def test_fuzz_random_messages(provider: str, batch: list[str | bytes]) -> None:
    protocol = protocol_for(provider)
    for message in batch:
        if _feed(protocol, message):
            _assert_stays_failed(protocol, _session_messages(provider))
            return


@FUZZ_SETTINGS
@given(batch=st.lists(messages, min_size=1, max_size=4))
def test_fuzz_detector_random_messages(batch: list[str | bytes]) -> None:
    detector = ProviderDetector()
    failed = False
    for message in batch:
        if failed:
            with pytest.raises(errors.RemoteProtocolError):
                detector.receive(message)
        else:
            failed = _feed(detector, message)


# ------------------------------------------------------------ mutated documented messages

SESSIONS = [(p, load(path)) for p, path in vector_files("session")]


def _session_messages(provider: str) -> list[Any]:
    return next(v["messages"] for p, v in SESSIONS if p == provider)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += _paths(child, (*prefix, index))
    return out


@st.composite
def mutated_sessions(draw: st.DrawFn) -> tuple[str, list[Any]]:
    provider, vector = draw(st.sampled_from(SESSIONS))
    session = copy.deepcopy(vector["messages"])
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(session) - 1))
        paths = _paths(session[index])
        action = draw(st.sampled_from(["replace", "delete", "swap", "stringify", "raw"]))
        if action == "swap" and len(session) > 1:
            other = draw(st.integers(0, len(session) - 1))
            session[index], session[other] = session[other], session[index]
            continue
        if action == "raw":
            text = json.dumps(session[index])
            cut = draw(st.integers(0, len(text)))
            session[index] = text[:cut] + draw(st.text(max_size=3)) + text[cut:]
            continue
        if not paths:
            continue
        path = draw(st.sampled_from(paths))
        parent = session[index]
        for step in path[:-1]:
            parent = parent[step]
        leaf = path[-1]
        if action == "delete":
            del parent[leaf]
        elif action == "stringify":
            value = parent[leaf]
            # "2" <-> 2, "x" -> "xx", anything else -> its JSON text
            if isinstance(value, str):
                parent[leaf] = int(value) if value.isdigit() else value * 2
            else:
                parent[leaf] = str(value) if type(value) is int else json.dumps(value)
        else:
            parent[leaf] = draw(json_values)
    return provider, session


@FUZZ_SETTINGS
@given(case=mutated_sessions())
def test_fuzz_mutated_documented_sessions(case: tuple[str, list[Any]]) -> None:
    provider, session = case
    protocol = protocol_for(provider)
    for message in session:
        if _feed(protocol, to_wire(message)):
            _assert_stays_failed(protocol, _session_messages(provider))
            return
    _exercise_send(protocol)


def _exercise_send(protocol: MediaStreamProtocol) -> None:
    """Commands in whatever state the protocol reached: frames of JSON or a local error."""
    for command in (SendAudio(b"\x00\x11" * 80), SendMark("m"), ClearAudio(), SendDtmf("1")):
        try:
            frames = protocol.send(command)
        except errors.LocalProtocolError:
            continue
        for frame in frames:
            assert isinstance(json.loads(frame), dict)


@FUZZ_SETTINGS
@given(case=mutated_sessions())
def test_fuzz_mutated_sessions_through_detection(case: tuple[str, list[Any]]) -> None:
    _provider, session = case
    detector = ProviderDetector()
    for message in session:
        if _feed(detector, to_wire(message)):
            with pytest.raises(errors.RemoteProtocolError):
                detector.receive(to_wire(session[0]))
            return


# ------------------------------------------------------------------ the JSON fast path


@FUZZ_SETTINGS
@given(
    value=json_values,
    before=st.sampled_from(["", " ", "\n", "\ufeff"]),
    after=st.sampled_from(["", " ", "\r\n", "x", "}"]),
    compact=st.booleans(),
)
def test_property_fast_json_parse_agrees_with_json_loads(
    value: Any, before: str, after: str, compact: bool
) -> None:
    text = before + json.dumps(value, separators=(",", ":") if compact else None) + after
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(errors.InvalidMessageError):
            parse_json(text)
        return
    # Compared as JSON text: NaN is not equal to itself.
    assert json.dumps(parse_json(text)) == json.dumps(expected)


@FUZZ_SETTINGS
@given(text=st.text(max_size=60))
def test_property_fast_json_parse_agrees_on_random_text(text: str) -> None:
    try:
        expected = json.loads(text)
    except (ValueError, RecursionError):
        with pytest.raises(errors.InvalidMessageError):
            parse_json(text)
        return
    assert json.dumps(parse_json(text)) == json.dumps(expected)


# ------------------------------------------------------------------ outbound round trips

#: The documented outbound media shape per provider, payload left out (protocols.md §1.3,
#: §2.3, §3.3).
MEDIA_SHAPES = {
    "twilio": lambda sid: {"event": "media", "streamSid": sid, "media": {}},
    "telnyx": lambda sid: {"event": "media", "media": {}},
    "plivo": lambda sid: {"event": "playAudio", "streamId": sid,
                          "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000}},
}


def _started_with_stream_id(provider: str, stream_id: str) -> MediaStreamProtocol:
    protocol = protocol_for(provider)
    for message in _session_messages(provider):
        message = copy.deepcopy(message)
        for key in ("streamSid", "stream_id", "streamId"):
            if key in message:
                message[key] = stream_id
            if isinstance(message.get("start"), dict) and key in message["start"]:
                message["start"][key] = stream_id
        protocol.receive(json.dumps(message))
        if protocol.state is State.STARTED:
            return protocol
    raise AssertionError("session vector never started")


@pytest.mark.parametrize("provider", PROVIDERS)
@FUZZ_SETTINGS
@given(stream_id=st.text(min_size=1, max_size=40), payload=st.binary(min_size=1, max_size=2000),
       name=st.text(min_size=1, max_size=40))
def test_property_outbound_frames_parse_as_documented(
    provider: str, stream_id: str, payload: bytes, name: str
) -> None:
    protocol = _started_with_stream_id(provider, stream_id)
    [frame] = protocol.send(SendAudio(payload))
    parsed = json.loads(frame)
    encoded = parsed["media"].pop("payload")
    assert parsed == MEDIA_SHAPES[provider](stream_id)
    assert base64.b64decode(encoded, validate=True) == payload
    [mark] = protocol.send(SendMark(name))
    mark_name = json.loads(mark)["name" if provider == "plivo" else "mark"]
    assert (mark_name if provider == "plivo" else mark_name["name"]) == name
