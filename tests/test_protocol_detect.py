"""Provider detection on a shared path: the documented sessions of all three providers
are recognised from their first message(s) and lose nothing; garbage is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _util_protocols import event_json, load, new_protocol, options, to_wire, vector_files

from mediastream import errors
from mediastream.protocols import (
    MediaFormat,
    PlivoProtocol,
    ProviderDetector,
    State,
    TelnyxProtocol,
    TwilioProtocol,
    detect,
)

CLASSES = {"twilio": TwilioProtocol, "telnyx": TelnyxProtocol, "plivo": PlivoProtocol}
SESSIONS = vector_files("session")


@pytest.mark.parametrize(("provider", "path"), SESSIONS, ids=lambda p: getattr(p, "stem", p))
def test_each_documented_session_is_detected_without_losing_events(
    provider: str, path: Path
) -> None:
    vector = load(path)
    opts = options(vector)
    if "outbound_format" in opts:
        opts["outbound_formats"] = {provider: opts.pop("outbound_format")}
    detector = ProviderDetector(**opts)
    seen = []
    for index, message in enumerate(vector["messages"]):
        events = detector.receive(to_wire(message))
        if detector.protocol is None:
            assert events == [] and index == 0 and message["event"] == "connected"
        seen.extend(events)
    assert type(detector.protocol) is CLASSES[provider]
    assert detector.provider == provider

    direct = new_protocol(provider, vector)
    expected = [e for m in vector["messages"] for e in direct.receive(to_wire(m))]
    assert [event_json(e) for e in seen] == [event_json(e) for e in expected]
    assert detector.protocol.state is direct.state


@pytest.mark.parametrize(("provider", "path"), SESSIONS, ids=lambda p: getattr(p, "stem", p))
def test_detect_function_needs_the_start(provider: str, path: Path) -> None:
    messages = [to_wire(m) for m in load(path)["messages"]]
    first_start = next(i for i, m in enumerate(load(path)["messages"]) if m["event"] == "start")
    if first_start == 1:  # connected first: not decidable yet
        assert detect(messages[:1]) is None
    found = detect(messages[: first_start + 1])
    assert found is not None
    protocol, events = found
    assert protocol.provider == provider and protocol.state is State.STARTED
    assert type(events[-1]).__name__ == "StreamStarted"


def test_detector_passes_query_and_headers_to_the_protocol() -> None:
    vector = load(Path(__file__).parent / "vectors" / "telnyx" / "session_l16.json")
    found = detect([to_wire(m) for m in vector["messages"][:2]], **options(vector))
    assert found is not None
    protocol, _ = found
    assert protocol.stream_auth_token == "hdr-token"
    assert protocol.call is not None and protocol.call.agent == "support-bot"


GARBAGE = [
    (b'{"event": "start"}', errors.UnsupportedDataError),
    ("not json", errors.InvalidMessageError),
    ("[1, 2]", errors.InvalidMessageError),
    ("[" * 50000 + "]" * 50000, errors.InvalidMessageError),
    ('{"event": "media", "media": {"payload": ""}}', errors.UnsupportedDataError),
    ('{"event": "start", "start": {"stream_sid": "s", "call_sid": "c", "account_sid": "a"}}',
     errors.UnsupportedDataError),  # Exotel's dialect: not one we speak
    ('{"event": "start", "start": "x"}', errors.UnsupportedDataError),
    ('{"type": "client-message"}', errors.UnsupportedDataError),
    ("x" * 300_000, errors.UnsupportedDataError),
]


@pytest.mark.parametrize(("message", "error"), GARBAGE, ids=lambda v: repr(v)[:30])
def test_garbage_is_refused_and_stays_refused(
    message: str | bytes, error: type[errors.RemoteProtocolError]
) -> None:
    detector = ProviderDetector()
    with pytest.raises(error):
        detector.receive(message)
    assert detector.protocol is None
    twilio_start = load(Path(__file__).parent / "vectors" / "twilio" / "session.json")
    with pytest.raises(error):
        detector.receive(json.dumps(twilio_start["messages"][1]))


def test_two_connected_frames_are_not_a_stream() -> None:
    detector = ProviderDetector()
    assert detector.receive('{"event": "connected", "version": "1.0.0"}') == []
    with pytest.raises(errors.UnsupportedDataError, match="start"):
        detector.receive('{"event": "connected", "version": "1.0.0"}')


def test_a_detected_start_with_bad_fields_fails_the_protocol() -> None:
    detector = ProviderDetector()
    bad = {"event": "start", "start": {"streamSid": "MZ1", "callSid": 7}}
    with pytest.raises(errors.InvalidMessageError, match=r"start\.callSid"):
        detector.receive(json.dumps(bad))
    assert detector.protocol is not None and detector.protocol.state is State.FAILED
    with pytest.raises(errors.InvalidMessageError):
        detector.receive('{"event": "stop"}')


def test_outbound_formats_are_per_provider_and_checked_up_front() -> None:
    with pytest.raises(ValueError, match="twilio"):
        ProviderDetector(outbound_formats={"twilio": MediaFormat("l16", 16000)})
    with pytest.raises(TypeError, match="outbound_formats"):
        ProviderDetector(outbound_format=MediaFormat("pcmu", 8000))
    vector = load(Path(__file__).parent / "vectors" / "telnyx" / "session.json")
    detector = ProviderDetector(outbound_formats={"telnyx": MediaFormat("l16", 16000),
                                                  "plivo": MediaFormat("l16", 8000)})
    for message in vector["messages"][:2]:
        detector.receive(to_wire(message))
    assert detector.protocol is not None and detector.protocol.call is not None
    assert detector.protocol.call.outbound_format == MediaFormat("l16", 16000, 1, "big")
    assert detector.protocol.call.inbound_format == MediaFormat("pcmu", 8000)
