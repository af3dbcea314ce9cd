"""Messages people outside this project published (provider documentation, the
providers' SDK tests, captures) that the protocol layer once ended calls on or threw
away (issue 14). Each test names where its message comes from."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from mediastream.protocols import (
    AudioCleared,
    MarkPlayed,
    State,
    StreamStarted,
    protocol_for,
)
from mediastream.protocols._params import RAW_EXTRA_HEADERS_KEY, parse_extra_headers

PLIVO_STREAM = "20170ada-f610-433b-8758-c02a2aab3662"


def _plivo_start(**start: Any) -> dict[str, Any]:
    return {
        "event": "start",
        "sequenceNumber": 0,
        "start": {
            "callId": "b1c2d3e4-0000-1111-2222-333344445555",
            "streamId": PLIVO_STREAM,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
            **start,
        },
    }


# ------------------------------------------------------------------ Plivo extraHeaders


def test_plivo_python_sdk_renders_extra_headers_as_a_python_dict() -> None:
    # plivo-python tests/xml/test_streamElement.py: StreamElement(extraHeaders={'ab': 'cd'})
    # renders as extraHeaders="{'ab': 'cd'}", which is what reaches the socket.
    protocol = protocol_for("plivo")
    [started] = protocol.receive(json.dumps(_plivo_start(extra_headers="{'ab': 'cd'}")))
    assert isinstance(started, StreamStarted)
    assert dict(started.call.custom_parameters) == {"ab": "cd"}
    assert protocol.state is State.STARTED


@pytest.mark.parametrize(
    "value",
    [
        "{'ab': 'cd'",  # a brace that opens no dict
        "justsometext",  # no k=v at all
        "a=1;b",  # a part without '='
        "{'a': __import__('os')}",  # literal_eval refuses calls
    ],
)
def test_unreadable_extra_headers_are_kept_raw_and_logged_once(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Custom data must degrade, never end a call (issue 14): the value stays available
    # under one key, and the call goes on.
    protocol = protocol_for("plivo")
    with caplog.at_level(logging.WARNING, "mediastream.protocols"):
        [started] = protocol.receive(json.dumps(_plivo_start(extra_headers=value)))
    assert isinstance(started, StreamStarted)
    assert dict(started.call.custom_parameters) == {RAW_EXTRA_HEADERS_KEY: value}
    assert protocol.state is State.STARTED
    warnings = [r for r in caplog.records if "kept raw" in r.getMessage()]
    assert len(warnings) == 1 and started.call.call_id in warnings[0].getMessage()


def test_extra_headers_that_are_not_a_string_are_kept_raw() -> None:
    result = parse_extra_headers(12, "extra_headers")
    assert result.parameters == {RAW_EXTRA_HEADERS_KEY: "12"} and result.problem


def test_a_huge_dict_literal_is_not_evaluated() -> None:
    text = "{" + ",".join(f"'k{i}': 'v'" for i in range(2000)) + "}"
    assert parse_extra_headers(text, "x").parameters == {RAW_EXTRA_HEADERS_KEY: text}


def test_documented_plivo_extra_headers_forms_still_parse() -> None:
    # Plivo audio-streaming reference ("userId=12345;sessionId=abc-xyz") and the <Stream>
    # XML reference ("tenant=acme,callRef=abc123"), protocols.md §3.2/§3.4.
    assert parse_extra_headers("userId=12345;sessionId=abc-xyz", "x") == (
        {"userId": "12345", "sessionId": "abc-xyz"}, None)
    assert parse_extra_headers("tenant=acme,callRef=abc123", "x") == (
        {"tenant": "acme", "callRef": "abc123"}, None)


# ------------------------------------------------------- Plivo acknowledgements' streamId


def test_plivo_cleared_audio_for_another_stream_is_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Plivo support, "Can I interrupt and clear buffered audio?": the clearAudio request
    # names streamId b77e037d-… and the clearedAudio response 20170ada-…. Here the call's
    # stream is b77e…, so the acknowledgement names another stream.
    protocol = protocol_for("plivo")
    start = _plivo_start()
    start["start"]["streamId"] = "b77e037d-4119-44b5-902d-25826b654539"
    protocol.receive(json.dumps(start))
    with caplog.at_level(logging.WARNING, "mediastream.protocols"):
        events = protocol.receive(json.dumps(
            {"sequenceNumber": 0, "event": "clearedAudio", "streamId": PLIVO_STREAM}))
        played = protocol.receive(json.dumps(
            {"event": "playedStream", "streamId": PLIVO_STREAM, "name": "m1"}))
    assert events == [] and played == []
    assert protocol.state is State.STARTED
    assert sum("ignored" in r.getMessage() for r in caplog.records) == 2
    # Its own acknowledgements still count.
    assert protocol.receive(json.dumps(
        {"event": "clearedAudio", "streamId": "b77e037d-4119-44b5-902d-25826b654539",
         "sequenceNumber": 3})) == [AudioCleared(3)]
    assert protocol.receive(json.dumps({"event": "played", "name": "m2"})) == [
        MarkPlayed("m2", None)]


def test_plivo_media_for_another_stream_is_still_an_error() -> None:
    from mediastream.errors import InvalidMessageError

    protocol = protocol_for("plivo")
    protocol.receive(json.dumps(_plivo_start()))
    with pytest.raises(InvalidMessageError, match="streamId"):
        protocol.receive(json.dumps({
            "event": "media", "streamId": "other", "sequenceNumber": 1,
            "media": {"track": "inbound", "timestamp": "1705312200000", "chunk": 1,
                      "payload": "//8="},
        }))


# ------------------------------------------------------------------ empty account ids


@pytest.mark.parametrize(
    ("provider", "start"),
    [
        # Twilio's documented start (protocols.md §1.2) as a Twilio-compatible bridge
        # sends it: accountSid present but empty.
        ("twilio", {"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
                    "start": {"accountSid": "", "streamSid": "MZ1", "callSid": "CA1",
                              "tracks": ["inbound"], "customParameters": {},
                              "mediaFormat": {"encoding": "audio/x-mulaw",
                                              "sampleRate": 8000, "channels": 1}}}),
        ("telnyx", {"event": "start", "sequence_number": "1", "stream_id": "S1",
                    "start": {"user_id": "", "call_control_id": "v3:x"}}),
        ("plivo", _plivo_start(accountId="")),
    ],
)
def test_an_empty_account_id_reads_as_absent(provider: str, start: dict[str, Any]) -> None:
    [started] = protocol_for(provider).receive(json.dumps(start))
    assert isinstance(started, StreamStarted)
    assert started.call.account_id is None
