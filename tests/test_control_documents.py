"""Answer documents: structure per provider, escaping, Plivo extraHeaders rules."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediastream.control.documents import (
    plivo_extra_headers,
    plivo_stream,
    texml_connect_stream,
    twiml_connect_stream,
    twiml_dial,
    xml_text,
)
from mediastream.control.urls import Origin, public_origin, stream_url

NASTY = "a \"quoted\" <tag> & 'apostrophe' — ünïcødé 🎧\nnew line\ttab"


def _parameters(stream: ET.Element) -> dict[str, str]:
    return {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}


def test_twiml_structure_and_escaping() -> None:
    doc = twiml_connect_stream(
        "wss://x.example/ws/twilio/sales",
        {"from": "+15551230001", "note": NASTY, 'we"ird<name>': "v"},
        status_callback="https://x.example/twilio/stream-status",
    )
    assert doc.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<Response>')
    root = ET.fromstring(doc.encode("utf-8"))
    assert [child.tag for child in root] == ["Connect"]
    stream = root.find("Connect/Stream")
    assert stream is not None
    assert stream.attrib == {
        "url": "wss://x.example/ws/twilio/sales",
        "statusCallback": "https://x.example/twilio/stream-status",
        "statusCallbackMethod": "POST",
    }
    assert _parameters(stream) == {"from": "+15551230001", "note": NASTY, 'we"ird<name>': "v"}


def test_texml_structure() -> None:
    doc = texml_connect_stream("wss://x/ws/telnyx?token=abc&x=1", {"to": "+1"}, codec="PCMA")
    stream = ET.fromstring(doc).find("Connect/Stream")
    assert stream is not None
    assert stream.attrib == {
        "url": "wss://x/ws/telnyx?token=abc&x=1",
        "track": "inbound_track",
        "codec": "PCMA",
        "bidirectionalMode": "rtp",
        "bidirectionalCodec": "PCMA",
        "bidirectionalSamplingRate": "8000",
    }
    assert "&amp;x=1" in doc  # the raw document escapes the query separator
    assert _parameters(stream) == {"to": "+1"}


def test_plivo_structure() -> None:
    doc = plivo_stream(
        "wss://x/ws/plivo?token=t&a=%22b%22",
        content_type="audio/x-l16;rate=16000",
        extra_headers="token=t,from=15551230001",
        status_callback="https://x/plivo/stream-status",
    )
    root = ET.fromstring(doc)
    stream = root.find("Stream")
    assert stream is not None and stream.text == "wss://x/ws/plivo?token=t&a=%22b%22"
    assert stream.attrib == {
        "bidirectional": "true",
        "keepCallAlive": "true",
        "audioTrack": "inbound",
        "contentType": "audio/x-l16;rate=16000",
        "extraHeaders": "token=t,from=15551230001",
        "statusCallbackUrl": "https://x/plivo/stream-status",
        "statusCallbackMethod": "POST",
    }


def test_characters_xml_cannot_carry_are_replaced() -> None:
    doc = twiml_connect_stream("wss://x/ws", {"k\x00": "a\x01b\x1fc\ufffe\ud800"})
    stream = ET.fromstring(doc).find("Connect/Stream")
    assert stream is not None
    assert _parameters(stream) == {"k\ufffd": "a\ufffdb\ufffdc\ufffd\ufffd"}
    assert xml_text("ok\ttab\nline") == "ok\ttab\nline"


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=5))
def test_any_parameters_give_well_formed_documents(params: dict[str, str]) -> None:
    for doc in (
        twiml_connect_stream("wss://x/ws", params),
        texml_connect_stream("wss://x/ws", params),
    ):
        stream = ET.fromstring(doc.encode("utf-8")).find("Connect/Stream")
        assert stream is not None
        assert _parameters(stream) == {xml_text(k): xml_text(v) for k, v in params.items()}


def test_twiml_dial_escapes_the_number() -> None:
    root = ET.fromstring(twiml_dial("sip:a&b@x.example"))
    assert root.findtext("Dial") == "sip:a&b@x.example"


def test_plivo_extra_headers_alphabet_and_limit() -> None:
    value, dropped = plivo_extra_headers(
        {
            "token": "abc123",
            "from": "+15551230001",
            "to": "15559870002",
            "call_ref": "x",
            "tenant": "acme corp",
            "empty": "",
            "ok": "Value9",
        }
    )
    assert value == "token=abc123,from=15551230001,to=15559870002,empty=,ok=Value9"
    assert dropped == ["call_ref", "tenant"]
    value, dropped = plivo_extra_headers({f"k{i}": "v" * 40 for i in range(20)})
    assert len(value.encode()) <= 512 and dropped and len(value.split(",")) == 11


@pytest.mark.parametrize(
    ("public_url", "headers", "trust", "http", "ws"),
    [
        (
            "https://voice.example.com",
            {"Host": "internal:8765"},
            False,
            "https://voice.example.com/twilio",
            "wss://voice.example.com/ws/twilio",
        ),
        (
            "https://voice.example.com/base/",
            {"Host": "internal"},
            False,
            "https://voice.example.com/base/twilio",
            "wss://voice.example.com/base/ws/twilio",
        ),
        (
            "http://127.0.0.1:8765",
            {},
            False,
            "http://127.0.0.1:8765/twilio",
            "ws://127.0.0.1:8765/ws/twilio",
        ),
        (
            None,
            {"Host": "abc.ngrok.app"},
            False,
            "http://abc.ngrok.app/twilio",
            "wss://abc.ngrok.app/ws/twilio",
        ),
        (
            None,
            {"Host": "127.0.0.1:9000"},
            False,
            "http://127.0.0.1:9000/twilio",
            "ws://127.0.0.1:9000/ws/twilio",
        ),
        (
            None,
            {"Host": "in", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "pub.example"},
            True,
            "https://pub.example/twilio",
            "wss://pub.example/ws/twilio",
        ),
        (
            None,
            {"Host": "in", "Forwarded": 'for=1.2.3.4;proto=https;host="pub.example"'},
            True,
            "https://pub.example/twilio",
            "wss://pub.example/ws/twilio",
        ),
        (
            None,
            {"Host": "in", "X-Forwarded-Host": "evil.example"},
            False,
            "http://in/twilio",
            "wss://in/ws/twilio",
        ),
    ],
    ids=[
        "public",
        "prefix",
        "local-http",
        "tunnel",
        "loopback",
        "forwarded",
        "rfc7239",
        "untrusted",
    ],
)
def test_public_origin(
    public_url: str | None, headers: dict[str, str], trust: bool, http: str, ws: str
) -> None:
    origin = public_origin(public_url, trust, scheme="http", headers=headers)
    assert origin is not None
    assert origin.http_url("/twilio") == http
    assert stream_url(origin, "twilio") == ws


def test_stream_url_agent_and_query() -> None:
    origin = Origin("https", "x.example")
    assert stream_url(origin, "plivo", agent="sales", query={"token": "t", "a": "b c&d"}) == (
        "wss://x.example/ws/plivo/sales?token=t&a=b%20c%26d"
    )
    unsure = Origin("https", "x.example", certain=False)
    assert unsure.http_urls("/twilio?a=1") == [
        "https://x.example/twilio?a=1",
        "http://x.example/twilio?a=1",
    ]
