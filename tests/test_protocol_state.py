"""State machine, limits and options of the provider protocols, one body per rule for
all three providers (their documented messages come from the session vectors)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from _util_protocols import PROVIDERS, VECTORS, event_json, load

from mediastream import errors
from mediastream.protocols import (
    AudioReceived,
    ClearAudio,
    MediaFormat,
    MediaStreamProtocol,
    SendAudio,
    SendDtmf,
    SendMark,
    State,
    StreamStarted,
    StreamStopped,
    UnknownEventReceived,
    protocol_for,
)
from mediastream.protocols._params import (
    agent_and_org,
    decode_body,
    header_value,
    parse_extra_headers,
    query_parameters,
)

COMMANDS = [SendAudio(b"\xff" * 160), SendMark("m"), ClearAudio(), SendDtmf("1")]


def _session(provider: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = load(VECTORS / provider / "session.json")["messages"]
    return messages


def _start_messages(provider: str) -> list[dict[str, Any]]:
    messages = _session(provider)
    end = next(i for i, m in enumerate(messages) if m["event"] == "start")
    return messages[: end + 1]


def _media(provider: str) -> dict[str, Any]:
    return next(m for m in _session(provider) if m["event"] == "media")


def _started(provider: str, **options: Any) -> MediaStreamProtocol:
    protocol = protocol_for(provider, **options)
    for message in _start_messages(provider):
        protocol.receive(json.dumps(message))
    assert protocol.state is State.STARTED
    return protocol


def _stop(provider: str) -> dict[str, Any]:
    return next(m for m in _session(provider) if m["event"] == "stop")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_commands_before_start_are_local_errors(provider: str) -> None:
    protocol = protocol_for(provider)
    for cmd in COMMANDS:
        with pytest.raises(errors.LocalProtocolError, match="IDLE"):
            protocol.send(cmd)
    assert protocol.state is State.IDLE  # our misuse does not fail the stream


@pytest.mark.parametrize("provider", PROVIDERS)
def test_after_stop_commands_fail_and_late_frames_are_discarded(provider: str) -> None:
    protocol = _started(provider)
    [stopped] = protocol.receive(json.dumps(_stop(provider)))
    assert isinstance(stopped, StreamStopped) and protocol.state is State.STOPPED
    # Telnyx does not guarantee order: media and a second stop after stop are dropped.
    assert protocol.receive(json.dumps(_media(provider))) == []
    assert protocol.receive(json.dumps(_stop(provider))) == []
    assert protocol.state is State.STOPPED
    for cmd in COMMANDS:
        with pytest.raises(errors.LocalProtocolError, match="STOPPED"):
            protocol.send(cmd)
    with pytest.raises(errors.OutOfOrderError, match="start"):
        protocol.receive(json.dumps(_start_messages(provider)[-1]))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stop_before_start_ends_a_stream_that_never_started(provider: str) -> None:
    protocol = protocol_for(provider)
    [event] = protocol.receive(json.dumps(_stop(provider)))
    assert isinstance(event, StreamStopped)
    assert protocol.state is State.STOPPED and protocol.call is None


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unknown_events_are_reported_in_every_live_state(provider: str) -> None:
    protocol = protocol_for(provider)
    message = {"event": "somethingNew", "detail": {"x": 1}}
    [event] = protocol.receive(json.dumps(message))
    assert event == UnknownEventReceived("somethingNew", message)
    assert protocol.state is State.IDLE
    for start in _start_messages(provider):
        protocol.receive(json.dumps(start))
    [event] = protocol.receive(json.dumps(message))
    assert isinstance(event, UnknownEventReceived) and protocol.state is State.STARTED


@pytest.mark.parametrize("provider", PROVIDERS)
def test_numbers_as_strings_or_numbers_give_the_same_event(provider: str) -> None:
    media = _media(provider)
    seq_key = "sequence_number" if provider == "telnyx" else "sequenceNumber"
    as_strings = {**media, seq_key: "17", "media": {**media["media"], "chunk": "4",
                                                    "timestamp": "80"}}
    as_numbers = {**media, seq_key: 17, "media": {**media["media"], "chunk": 4,
                                                  "timestamp": 80}}
    protocol = _started(provider)
    [a] = protocol.receive(json.dumps(as_strings))
    [b] = protocol.receive(json.dumps(as_numbers))
    assert a == b
    assert isinstance(a, AudioReceived)
    assert (a.sequence, a.chunk, a.timestamp_raw) == (17, 4, 80)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_payload_bound_is_configurable(provider: str) -> None:
    media = _media(provider)

    def with_payload(size: int) -> str:
        payload = base64.b64encode(b"\x55" * size).decode()
        return json.dumps({**media, "media": {**media["media"], "payload": payload}})

    protocol = _started(provider, max_payload_ms=20)  # 160 bytes of G.711
    [event] = protocol.receive(with_payload(160))
    assert isinstance(event, AudioReceived) and len(event.payload) == 160
    with pytest.raises(errors.MessageTooBigError, match=r"media\.payload"):
        protocol.receive(with_payload(200))
    assert protocol.state is State.FAILED


@pytest.mark.parametrize("provider", PROVIDERS)
def test_message_bound_is_configurable(provider: str) -> None:
    protocol = protocol_for(provider, max_message_chars=64)
    with pytest.raises(errors.MessageTooBigError, match="exceeds 64"):
        protocol.receive(json.dumps({"event": "x", "pad": "y" * 64}))


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("message", [None, 42, bytearray(b"{}"), memoryview(b"{}")])
def test_anything_but_text_is_unsupported_data(provider: str, message: Any) -> None:
    protocol = protocol_for(provider)
    with pytest.raises(errors.UnsupportedDataError):
        protocol.receive(message)
    assert protocol.state is State.FAILED


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stray_exception_becomes_invalid_message(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The boundary holds even if a handler has a bug (here: a KeyError)."""
    protocol = _started(provider)

    def broken(self: Any, data: dict[str, Any]) -> list[Any]:
        raise KeyError("boom")

    monkeypatch.setitem(protocol._handlers, "dtmf", (protocol._handlers["dtmf"][0], broken))
    with pytest.raises(errors.InvalidMessageError, match="KeyError") as info:
        protocol.receive(json.dumps({"event": "dtmf", "dtmf": {"digit": "1"}}))
    assert isinstance(info.value.__cause__, KeyError)
    assert protocol.state is State.FAILED


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dtmf_letters_are_normalised(provider: str) -> None:
    [event] = _started(provider).receive(json.dumps({"event": "dtmf", "dtmf": {"digit": "d"}}))
    assert event_json(event) == {
        "type": "DtmfReceived", "digit": "D", "sequence": None, "occurred_at": None}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_send_accepts_any_bytes_like_payload(provider: str) -> None:
    protocol = _started(provider)
    expected = protocol.send(SendAudio(b"\x01\x02\x03\x04"))
    assert protocol.send(SendAudio(bytearray(b"\x01\x02\x03\x04"))) == expected
    assert protocol.send(SendAudio(memoryview(b"\x01\x02\x03\x04"))) == expected


@pytest.mark.parametrize("provider", PROVIDERS)
def test_marks_need_a_name(provider: str) -> None:
    with pytest.raises(errors.LocalProtocolError, match="SendMark"):
        _started(provider).send(SendMark(""))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_query_parameters_yield_to_the_message(provider: str) -> None:
    protocol = _started(provider, query={"tenant": "from-url", "agent": "a1", "organization": "o"})
    call = protocol.call
    assert call is not None
    assert call.agent == "a1" and call.organization == "o"
    message_params = {
        "twilio": {"tenant": "acme"},
        "telnyx": {"customer_id": "customer_123"},
        "plivo": {"userId": "12345"},
    }[provider]
    for key, value in message_params.items():
        assert call.custom_parameters[key] == value
    if provider == "twilio":
        assert call.custom_parameters["tenant"] == "acme"  # the message won
    else:
        assert call.custom_parameters["tenant"] == "from-url"


@pytest.mark.parametrize("provider", ["twilio", "plivo"])  # Telnyx has one place for it
def test_a_stream_id_in_start_must_agree_with_itself(provider: str) -> None:
    start = _start_messages(provider)[-1]
    key = "streamSid" if provider == "twilio" else "streamId"
    protocol = protocol_for(provider)
    for message in _start_messages(provider)[:-1]:
        protocol.receive(json.dumps(message))
    with pytest.raises(errors.InvalidMessageError, match=key):
        protocol.receive(json.dumps({**start, key: "another-stream"}))


def test_outbound_format_must_be_playable_by_the_provider() -> None:
    with pytest.raises(ValueError, match="twilio"):
        protocol_for("twilio", outbound_format=MediaFormat("l16", 8000))
    with pytest.raises(ValueError, match="plivo"):
        protocol_for("plivo", outbound_format=MediaFormat("pcma", 8000))
    with pytest.raises(ValueError, match="telnyx"):
        protocol_for("telnyx", outbound_format=MediaFormat("pcmu", 16000))
    with pytest.raises(ValueError, match="unknown provider"):
        protocol_for("vonage")
    with pytest.raises(ValueError, match="positive"):
        protocol_for("twilio", max_payload_ms=0)


def test_telnyx_l16_is_big_endian_both_ways_and_plivo_little() -> None:
    telnyx = _started("telnyx", outbound_format=MediaFormat("l16", 24000, byteorder="little"))
    assert telnyx.call is not None
    assert telnyx.call.outbound_format == MediaFormat("l16", 24000, 1, "big")
    plivo = _started("plivo", outbound_format=MediaFormat("l16", 16000, byteorder="big"))
    assert plivo.call is not None
    assert plivo.call.outbound_format == MediaFormat("l16", 16000, 1, "little")
    [frame] = plivo.send(SendAudio(b"\x00\x01"))
    assert json.loads(frame)["media"]["contentType"] == "audio/x-l16"
    assert json.loads(frame)["media"]["sampleRate"] == 16000


def test_twilio_stream_sid_is_escaped_in_the_media_template() -> None:
    """The template is built by string concatenation: hostile ids must stay data."""
    start = _start_messages("twilio")[-1]
    hostile = 'MZ"},"event":"clear'
    start = {**start, "streamSid": hostile, "start": {**start["start"], "streamSid": hostile}}
    protocol = protocol_for("twilio")
    protocol.receive(json.dumps(start))
    [frame] = protocol.send(SendAudio(b"\x7f"))
    assert json.loads(frame) == {"event": "media", "streamSid": hostile,
                                 "media": {"payload": "fw=="}}


def test_plivo_without_media_format_is_ulaw_8k_and_extra_headers_merge() -> None:
    protocol = protocol_for("plivo")
    [event] = protocol.receive(json.dumps({
        "event": "start",
        "start": {"callId": "c", "streamId": "s", "extra_headers": "a=1,b=2"},
        "extra_headers": '{"b": "3", "n": 4}',
    }))
    assert isinstance(event, StreamStarted)
    assert event.call.inbound_format == MediaFormat("pcmu", 8000)
    assert dict(event.call.custom_parameters) == {"a": "1", "b": "3", "n": "4"}


def test_telnyx_token_in_a_top_level_field_and_null_numbers() -> None:
    protocol = protocol_for("telnyx")
    [connected] = protocol.receive(json.dumps(
        {"event": "connected", "version": "1.0.0", "x-telnyx-streaming-auth-token": "t"}))
    assert event_json(connected)["auth_token"] == "t" and protocol.stream_auth_token == "t"
    [started] = protocol.receive(json.dumps({
        "event": "start", "stream_id": "s",
        "start": {"call_control_id": "v3:x", "from": None, "to": None,
                  "custom_parameters": [{"name": "k", "value": "v"}]},
    }))
    assert isinstance(started, StreamStarted)
    call = started.call
    assert (call.from_number, call.to_number) == (None, None)
    assert dict(call.custom_parameters) == {"k": "v"}
    assert call.inbound_format == MediaFormat("pcmu", 8000)


# --------------------------------------------------------------- parameter helpers


@pytest.mark.parametrize(
    "raw",
    [
        base64.b64encode(b'{"a": "x+y", "n": 1}').decode(),
        base64.urlsafe_b64encode(b'{"a": "x+y", "n": 1}').decode().rstrip("="),
    ],
)
def test_pipecat_cloud_body_is_expanded(raw: str) -> None:
    assert decode_body(raw) == {"a": "x+y", "n": "1"}
    assert query_parameters({"body": raw, "k": "v"}) == {"a": "x+y", "n": "1", "k": "v"}


def test_a_body_whose_plus_became_a_space_still_decodes() -> None:
    raw = base64.b64encode(b'{"k": ">>>?"}').decode()
    assert "+" in raw
    assert decode_body(raw.replace("+", " ")) == {"k": ">>>?"}


@pytest.mark.parametrize("raw", ["not base64!", base64.b64encode(b"[1, 2]").decode(), ""])
def test_an_undecodable_body_is_kept_verbatim(raw: str) -> None:
    assert decode_body(raw) is None
    assert query_parameters({"body": raw}) == {"body": raw}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("userId=12345;sessionId=abc-xyz", {"userId": "12345", "sessionId": "abc-xyz"}),
        ("tenant=acme,callRef=abc123", {"tenant": "acme", "callRef": "abc123"}),
        (' {"tenant": "acme"} ', {"tenant": "acme"}),
        ("a=1;;b=x=y, c=", {"a": "1", "b": "x=y", "c": ""}),
        ({"k": 1}, {"k": "1"}),
        (None, {}),
        ("", {}),
    ],
)
def test_plivo_extra_headers_forms(value: Any, expected: dict[str, str]) -> None:
    assert parse_extra_headers(value, "extra_headers") == (expected, None)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"_pipecatCloudServiceHost": "bot.org"}, ("bot", "org")),
        ({"serviceHost": "bot.my.org"}, ("bot", "my.org")),
        ({"serviceHost": "bot"}, ("bot", None)),
        ({"agent": "a", "org": "o"}, ("a", "o")),
        ({"agent": "a"}, ("a", None)),
        ({}, (None, None)),
    ],
)
def test_agent_and_organization(params: dict[str, str], expected: tuple[str, str]) -> None:
    assert agent_and_org(params) == expected


def test_header_lookup_is_case_insensitive() -> None:
    headers = {"X-Telnyx-Streaming-Auth-Token": "t"}
    assert header_value(headers, "x-telnyx-streaming-auth-token") == "t"
    assert header_value(None, "x") is None
    assert header_value({"a": "b"}, "x") is None


def test_the_fast_audio_event_is_an_ordinary_frozen_audio_received() -> None:
    import dataclasses

    from mediastream.protocols.base import _audio_received

    args = (b"\x01\x02", MediaFormat("pcma", 8000), "inbound", 7, None, 140, 140)
    fast, normal = _audio_received(*args), AudioReceived(*args)
    assert type(fast) is AudioReceived
    assert fast == normal and hash(fast) == hash(normal) and repr(fast) == repr(normal)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.track = "outbound"  # type: ignore[misc]
