"""Messages people outside this project published (provider documentation, the
providers' SDK tests, captures) that the protocol layer once ended calls on or threw
away (issue 14). Each test names where its message comes from."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from mediastream.protocols import (
    AudioCleared,
    AudioReceived,
    DtmfReceived,
    MarkPlayed,
    State,
    StreamStarted,
    StreamStopped,
    protocol_for,
)
from mediastream.protocols._params import RAW_EXTRA_HEADERS_KEY, parse_extra_headers
from mediastream.protocols.base import DTMF_HOLD_MESSAGES
from mediastream.protocols.telnyx import decode_client_state

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
    ignored = [r for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 1 and ignored[0].levelno == logging.WARNING  # once per call
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


# ------------------------------------------------------------------- Telnyx DTMF order

TELNYX_STREAM = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"
# Telnyx's documented start (media streaming AsyncAPI reference, protocols.md §2.2).
TELNYX_START = {
    "event": "start", "sequence_number": "1", "stream_id": TELNYX_STREAM,
    "start": {
        "user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
        "call_control_id": "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ",
        "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
        "from": "+13122010094", "to": "+13122123456", "tags": ["TAG1", "TAG2"],
        "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
        "custom_parameters": {"customer_id": "customer_123"},
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
    },
}


def _telnyx_media(n: int) -> str:
    return json.dumps({
        "event": "media", "sequence_number": str(n + 2), "stream_id": TELNYX_STREAM,
        "media": {"track": "inbound", "chunk": str(n + 1), "timestamp": str(20 * n),
                  "payload": "//////////8="},
    }, separators=(",", ":"))


def _telnyx_dtmf(digit: str, occurred_at: str | None, seq: int) -> str:
    message: dict[str, Any] = {"event": "dtmf", "stream_id": TELNYX_STREAM,
                               "sequence_number": str(seq), "dtmf": {"digit": digit}}
    if occurred_at is not None:
        message["occurred_at"] = occurred_at
    return json.dumps(message)


def test_telnyx_digits_are_delivered_in_the_order_pressed() -> None:
    # Telnyx's media streaming docs: DTMF may arrive out of order, occurred_at says when
    # each key was pressed (issue 14). Pressed 1, 2, 3; delivered to us 2, 1, 3.
    protocol = protocol_for("telnyx")
    protocol.receive(json.dumps(TELNYX_START))
    for n in range(3):
        protocol.receive(_telnyx_media(n))
    assert protocol._template is not None  # the fast path is on
    got: list[Any] = []
    got += protocol.receive(_telnyx_dtmf("2", "2024-09-10T10:00:00.400Z", 100))
    got += protocol.receive(_telnyx_media(3))
    got += protocol.receive(_telnyx_dtmf("1", "2024-09-10T10:00:00.150Z", 101))
    got += protocol.receive(_telnyx_dtmf("3", "2024-09-10T10:00:00.650000+00:00", 102))
    # Held: an earlier key may still be on its way.
    assert [type(e) for e in got] == [AudioReceived]
    assert protocol._template is None  # every media message now counts down
    for n in range(4, 4 + DTMF_HOLD_MESSAGES - 1):
        assert [type(e) for e in protocol.receive(_telnyx_media(n))] == [AudioReceived]
    released = protocol.receive(_telnyx_media(50))
    assert [(type(e).__name__, getattr(e, "digit", None)) for e in released] == [
        ("DtmfReceived", "1"), ("DtmfReceived", "2"), ("DtmfReceived", "3"),
        ("AudioReceived", None)]
    first = released[0]
    assert isinstance(first, DtmfReceived)
    assert first.occurred_at == "2024-09-10T10:00:00.150Z" and first.sequence == 101
    assert protocol._template is not None  # fast path back on


def test_telnyx_stop_releases_held_digits_first() -> None:
    protocol = protocol_for("telnyx")
    protocol.receive(json.dumps(TELNYX_START))
    protocol.receive(_telnyx_dtmf("9", "2024-09-10T10:00:01Z", 5))
    protocol.receive(_telnyx_dtmf("8", "2024-09-10T10:00:00Z", 6))
    events = protocol.receive(json.dumps(
        {"event": "stop", "sequence_number": "7", "stream_id": TELNYX_STREAM}))
    assert [getattr(e, "digit", type(e).__name__) for e in events] == ["8", "9", "StreamStopped"]


def test_telnyx_digits_without_a_time_are_not_delayed() -> None:
    # protocols.md §2.2's dtmf example carries no occurred_at: nothing to order by.
    protocol = protocol_for("telnyx")
    protocol.receive(json.dumps(TELNYX_START))
    assert protocol.receive(_telnyx_dtmf("1", None, 7)) == [DtmfReceived("1", 7)]
    assert protocol.receive(_telnyx_dtmf("2", "not a time", 8)) == [
        DtmfReceived("2", 8, "not a time")]


def test_twilio_digits_are_never_held() -> None:
    protocol = protocol_for("twilio")
    protocol.receive(json.dumps(TWILIO_START))
    # protocols.md §1.2 dtmf, with a field Twilio does not send: no effect there.
    assert protocol.receive(json.dumps({
        "event": "dtmf", "streamSid": "MZ0123", "sequenceNumber": "5",
        "occurred_at": "2024-01-01T00:00:00Z", "dtmf": {"track": "inbound_track", "digit": "1"},
    })) == [DtmfReceived("1", 5)]


# --------------------------------------------------------------- timestamps normalised

TWILIO_START = {
    "event": "start", "sequenceNumber": "1", "streamSid": "MZ0123",
    "start": {"accountSid": "AC0123", "streamSid": "MZ0123", "callSid": "CA0123",
              "tracks": ["inbound"], "customParameters": {},
              "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
}


def test_plivo_epoch_timestamps_become_ms_since_the_first_frame() -> None:
    # Plivo's media example (protocols.md §3.2): timestamp "1705312200000", epoch ms.
    protocol = protocol_for("plivo")
    protocol.receive(json.dumps(_plivo_start()))
    seen = []
    for n in range(12):  # enough for the fast path to take over
        [event] = protocol.receive(json.dumps({
            "event": "media", "sequenceNumber": n + 1, "streamId": PLIVO_STREAM,
            "media": {"track": "inbound", "timestamp": str(1705312200000 + 20 * n),
                      "chunk": 41 + n, "payload": "//8="},
        }, separators=(",", ":")))
        assert isinstance(event, AudioReceived)
        seen.append((event.timestamp_ms, event.timestamp_raw))
    assert protocol._template is not None
    assert seen == [(20 * n, 1705312200000 + 20 * n) for n in range(12)]


def test_twilio_timestamps_are_already_ms_since_start() -> None:
    # protocols.md §1.2 media: "timestamp":"52", ms since the stream started.
    protocol = protocol_for("twilio")
    protocol.receive(json.dumps(TWILIO_START))
    [event] = protocol.receive(json.dumps({
        "event": "media", "sequenceNumber": "3", "streamSid": "MZ0123",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "52", "payload": "//8="}}))
    assert isinstance(event, AudioReceived)
    assert (event.timestamp_ms, event.timestamp_raw) == (52, 52)


# ------------------------------------------------------- stop payloads, client_state


def test_stop_payloads_are_kept() -> None:
    # Twilio's documented stop (protocols.md §1.2) and Telnyx's (§2.2).
    twilio = protocol_for("twilio")
    twilio.receive(json.dumps(TWILIO_START))
    [stopped] = twilio.receive(json.dumps({
        "event": "stop", "sequenceNumber": "5", "streamSid": "MZ0123",
        "stop": {"accountSid": "AC0123", "callSid": "CA0123"}}))
    assert isinstance(stopped, StreamStopped)
    assert dict(stopped.details) == {"accountSid": "AC0123", "callSid": "CA0123"}
    telnyx = protocol_for("telnyx")
    telnyx.receive(json.dumps(TELNYX_START))
    [stopped] = telnyx.receive(json.dumps({
        "event": "stop", "sequence_number": "512", "stream_id": TELNYX_STREAM,
        "stop": {"user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
                 "call_control_id": "v2:T02llQx", "reason": "hangup", "n": 3}}))
    assert isinstance(stopped, StreamStopped) and stopped.reason == "hangup"
    assert dict(stopped.details) == {"user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
                                     "call_control_id": "v2:T02llQx", "reason": "hangup"}


def test_telnyx_client_state_is_decoded_when_it_is_text() -> None:
    # The documented start's client_state "aGF2ZSBhIG5pY2UgZGF5ID1d" (protocols.md §2.2).
    [started] = protocol_for("telnyx").receive(json.dumps(TELNYX_START))
    assert isinstance(started, StreamStarted)
    assert started.call.extra["client_state"] == "aGF2ZSBhIG5pY2UgZGF5ID1d"
    assert started.call.extra["client_state_text"] == "have a nice day =]"
    assert decode_client_state(base64.b64encode(b"\x00\xff\x10").decode()) is None
    assert decode_client_state("not base64!") is None
    assert decode_client_state(base64.b64encode(b'{"lead": 7}').decode()) == '{"lead": 7}'
