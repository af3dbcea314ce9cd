"""Answer and status webhooks through a real aiohttp server on 127.0.0.1.

Requests are signed the way the providers sign them, with the official SDKs (Twilio
``RequestValidator``, Plivo ``signature_v3``) and PyNaCl for Telnyx, over the public URL
(``config.public_url``) rather than the loopback URL the test actually connects to.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest
import pytest_asyncio
from _util_control import control_server
from fakes.providers import FakeTelnyx
from nacl.signing import SigningKey
from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3
from twilio.request_validator import RequestValidator

from mediastream.config import Config, ProviderCredentials
from mediastream.control import (
    check_media_upgrade,
    check_stream_start,
)
from mediastream.control.webhooks import operator_query
from mediastream.errors import AuthenticationError
from mediastream.protocols.events import CallInfo, MediaFormat

PUBLIC = "https://voice.example.com"
TWILIO_SID = "AC" + "2" * 32
TWILIO_TOKEN = "twilio-auth-token"
SIGNING = SigningKey(bytes(range(32)))
TELNYX_PUBLIC = base64.b64encode(bytes(SIGNING.verify_key)).decode()
TELNYX_KEY = "KEYtelnyx"
TELNYX_APP = "texml-app-1"
PLIVO_ID = "MA" + "2" * 18
PLIVO_TOKEN = "plivo-auth-token"
CALL_SID = "CA" + "a" * 32
PLIVO_UUID = "b1c2d3e4-0000-1111-2222-333344445555"


@dataclass
class Server:
    base: str
    http: aiohttp.ClientSession
    config: Config
    telnyx: FakeTelnyx


def _config(**changes: Any) -> Config:
    values: dict[str, Any] = {
        "public_url": PUBLIC,
        "credentials": ProviderCredentials(
            twilio_account_sid=TWILIO_SID,
            twilio_auth_token=TWILIO_TOKEN,
            telnyx_public_key=TELNYX_PUBLIC,
            telnyx_api_key=TELNYX_KEY,
            telnyx_connection_id=TELNYX_APP,
            plivo_auth_id=PLIVO_ID,
            plivo_auth_token=PLIVO_TOKEN,
        ),
    }
    values.update(changes)
    return Config(**values)


@contextlib.asynccontextmanager
async def running(**changes: Any) -> AsyncIterator[Server]:
    """The control routes on a real aiohttp server, with a fake Telnyx REST API behind."""
    telnyx = FakeTelnyx(TELNYX_KEY, TELNYX_APP)
    telnyx_url = await telnyx.start()
    config = _config(**changes)
    config = replace(
        config, credentials=replace(config.credentials, telnyx_api_base_url=telnyx_url)
    )
    try:
        async with control_server(config, {"sales", "support"}) as (base, http):
            yield Server(base, http, config, telnyx)
    finally:
        await telnyx.close()


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    async with running() as started:
        yield started


def _twilio_form(**extra: str) -> dict[str, str]:
    return {
        "AccountSid": TWILIO_SID,
        "CallSid": CALL_SID,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": "+15551230001",
        "To": "+15559870002",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def _twilio_headers(path_qs: str, form: Mapping[str, str]) -> dict[str, str]:
    return {
        "X-Twilio-Signature": RequestValidator(TWILIO_TOKEN).compute_signature(
            PUBLIC + path_qs, dict(form)
        )
    }


async def _post(
    server: Server, path_qs: str, form: Mapping[str, str], headers: Mapping[str, str]
) -> tuple[int, str]:
    async with server.http.post(
        server.base + path_qs, data=dict(form), headers=dict(headers)
    ) as resp:
        return resp.status, await resp.text()


def _stream(doc: str, path: str = "Connect/Stream") -> ET.Element:
    stream = ET.fromstring(doc.encode("utf-8")).find(path)
    assert stream is not None, doc
    return stream


def _parameters(stream: ET.Element) -> dict[str, str]:
    return {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}


def _info(provider: Any, call_id: str, params: Mapping[str, str]) -> CallInfo:
    fmt = MediaFormat("pcmu", 8000)
    return CallInfo(provider, call_id, "s", fmt, fmt, custom_parameters=dict(params))


# ---------------------------------------------------------------------------- Twilio


@pytest.mark.asyncio
async def test_twilio_answer_document(server: Server) -> None:
    path = "/twilio?agent=sales&tenant=ac%22me&note=%3Cb%3E+%26+%C3%BC"
    form = _twilio_form()
    async with server.http.post(
        server.base + path, data=form, headers=_twilio_headers(path, form)
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/xml; charset=utf-8"
        doc = await resp.text()
    stream = _stream(doc)
    assert stream.attrib["url"] == "wss://voice.example.com/ws/twilio/sales"
    assert stream.attrib["statusCallback"] == "https://voice.example.com/twilio/stream-status"
    params = _parameters(stream)
    token = params.pop("_token")
    assert params == {
        "from": "+15551230001",
        "to": "+15559870002",
        "tenant": 'ac"me',
        "note": "<b> & ü",
    }
    # The token in the document lets exactly this call's stream start, once.
    call = _info("twilio", CALL_SID, {**params, "_token": token})
    check_stream_start(server.config, call)
    with pytest.raises(AuthenticationError):
        check_stream_start(server.config, call)


@pytest.mark.asyncio
async def test_twilio_get_webhook(server: Server) -> None:
    query = urlencode(_twilio_form()) + "&agent=support"
    path = "/twilio?" + query
    headers = {
        "X-Twilio-Signature": RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC + path, {})
    }
    async with server.http.get(server.base + path, headers=headers) as resp:
        assert resp.status == 200
        stream = _stream(await resp.text())
    assert stream.attrib["url"] == "wss://voice.example.com/ws/twilio/support"
    params = _parameters(stream)
    # Twilio's own fields are not echoed back as custom parameters.
    assert set(params) == {"from", "to", "_token"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "mutate",
    ["no-signature", "tampered-form", "other-url", "wrong-token"],
)
async def test_twilio_refuses_unsigned_or_tampered(
    server: Server, mutate: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = "/twilio"
    form = _twilio_form()
    headers = _twilio_headers(path, form)
    if mutate == "no-signature":
        headers = {}
    elif mutate == "tampered-form":
        form = {**form, "From": "+15550000000"}
    elif mutate == "other-url":
        headers = _twilio_headers("/twilio?agent=sales", form)
    else:
        headers = {
            "X-Twilio-Signature": RequestValidator("other").compute_signature(PUBLIC + path, form)
        }
    status, text = await _post(server, path, form, headers)
    assert status == 403 and "authentication failed" in text
    assert any(CALL_SID in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_unknown_or_malformed_agent(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    for path, status, message in (
        ("/twilio?agent=nobody", 404, "unknown agent 'nobody'"),
        ("/twilio?agent=bad%20name", 400, "agent names"),
        ("/twilio?serviceHost=nobody.acme", 404, "unknown agent"),
    ):
        form = _twilio_form()
        got, text = await _post(server, path, form, _twilio_headers(path, form))
        assert (got, message in text) == (status, True), (path, text)
        assert f"call={CALL_SID} refused" in caplog.records[-1].getMessage()


@pytest.mark.asyncio
async def test_service_host_form_routes_to_the_agent(server: Server) -> None:
    path = "/twilio?serviceHost=sales.acme"
    form = _twilio_form()
    status, doc = await _post(server, path, form, _twilio_headers(path, form))
    assert status == 200
    stream = _stream(doc)
    assert stream.attrib["url"].endswith("/ws/twilio/sales")
    assert _parameters(stream)["serviceHost"] == "sales.acme"


@pytest.mark.asyncio
async def test_without_auth_or_public_url() -> None:
    async with running(require_auth=False, public_url=None) as server:
        async with server.http.post(server.base + "/twilio", data=_twilio_form()) as resp:
            assert resp.status == 200
            stream = _stream(await resp.text())
        host = urlsplit(server.base).netloc
    # Loopback Host header: plain ws for local tests; the Host header names the server.
    assert stream.attrib["url"] == f"ws://{host}/ws/twilio"


# ---------------------------------------------------------------------------- Telnyx


def _telnyx_headers(body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SIGNING.sign(ts.encode() + b"|" + body).signature
    return {
        "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
        "telnyx-timestamp": ts,
    }


async def _post_telnyx_event(server: Server, path: str, event: dict[str, Any]) -> int:
    """POST a signed Call Control webhook ``event`` to ``path``; the response status."""
    body = json.dumps(event).encode()
    headers = {**_telnyx_headers(body), "Content-Type": "application/json"}
    async with server.http.post(server.base + path, data=body, headers=headers) as resp:
        return resp.status


def _telnyx_form() -> dict[str, str]:
    return {
        "AccountSid": "acc-uuid",
        "CallSid": "v3:texml-call",
        "From": "+15551230001",
        "To": "+15559870002",
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ConnectionId": TELNYX_APP,
    }


@pytest.mark.asyncio
async def test_telnyx_texml_answer(server: Server) -> None:
    body = urlencode(_telnyx_form()).encode()
    headers = {**_telnyx_headers(body), "Content-Type": "application/x-www-form-urlencoded"}
    async with server.http.post(
        server.base + "/telnyx?agent=sales&tenant=acme", data=body, headers=headers
    ) as resp:
        assert resp.status == 200
        doc = await resp.text()
    stream = _stream(doc)
    url = urlsplit(stream.attrib["url"])
    assert (url.scheme, url.netloc, url.path) == ("wss", "voice.example.com", "/ws/telnyx/sales")
    query_token = dict(parse_qsl(url.query))["token"]
    assert stream.attrib["bidirectionalMode"] == "rtp"
    assert stream.attrib["bidirectionalCodec"] == stream.attrib["codec"] == "PCMU"
    params = _parameters(stream)
    assert params["_token"] == query_token
    assert {k: v for k, v in params.items() if k != "_token"} == {
        "from": "+15551230001",
        "to": "+15559870002",
        "tenant": "acme",
    }
    # Before the upgrade the query token is visible and checked; at start it is bound.
    check_media_upgrade(
        server.config, path=url.path, query={"token": query_token}, headers={}, public_url=None
    )
    check_stream_start(server.config, _info("telnyx", "v3:texml-call", params))


@pytest.mark.asyncio
@pytest.mark.parametrize("case", ["stale", "tampered", "missing"])
async def test_telnyx_refuses(server: Server, case: str) -> None:
    body = urlencode(_telnyx_form()).encode()
    headers = _telnyx_headers(body, int(time.time()) - 301 if case == "stale" else None)
    if case == "tampered":
        body = body.replace(b"ringing", b"RINGING")
    if case == "missing":
        headers = {}
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    async with server.http.post(server.base + "/telnyx", data=body, headers=headers) as resp:
        assert resp.status == 403


@pytest.mark.asyncio
async def test_telnyx_call_control_webhook_answers_with_streaming(server: Server) -> None:
    call_id = server.telnyx.live_call(state="parked")
    event = {
        "data": {
            "event_type": "call.initiated",
            "id": "evt-1",
            "payload": {
                "call_control_id": call_id,
                "direction": "incoming",
                "from": "+15551230001",
                "to": "+15559870002",
                "state": "parked",
            },
            "record_type": "event",
        }
    }
    assert await _post_telnyx_event(server, "/telnyx?agent=support", event) == 200
    ((action, sent),) = server.telnyx.calls[call_id]["commands"]
    assert action == "answer"
    assert sent["stream_codec"] == sent["stream_bidirectional_codec"] == "L16"
    assert sent["stream_bidirectional_sampling_rate"] == 16000
    url = urlsplit(sent["stream_url"])
    assert url.path == "/ws/telnyx/support"
    query = dict(parse_qsl(url.query))
    assert query["from"] == "+15551230001"
    check_stream_start(server.config, _info("telnyx", call_id, {}), query=query)
    # Other events are acknowledged without action.
    other = json.dumps(
        {"data": {"event_type": "call.hangup", "payload": {"call_control_id": call_id}}}
    ).encode()
    async with server.http.post(
        server.base + "/telnyx",
        data=other,
        headers={**_telnyx_headers(other), "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 200
    assert len(server.telnyx.calls[call_id]["commands"]) == 1


# ----------------------------------------------------------------------------- Plivo


def _plivo_form() -> dict[str, str]:
    return {
        "CallUUID": PLIVO_UUID,
        "From": "15551230001",
        "To": "15559870002",
        "CallStatus": "ringing",
        "Direction": "inbound",
    }


def _plivo_headers(method: str, path_qs: str, form: Mapping[str, str]) -> dict[str, str]:
    nonce = "98765432109876543210"
    url = PUBLIC + path_qs
    base = construct_get_url(url, {}) if method == "GET" else construct_post_url(url, dict(form))
    signature = get_signature_v3(PLIVO_TOKEN.encode(), base.decode(), nonce.encode()).decode()
    return {"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": nonce}


@pytest.mark.asyncio
async def test_plivo_answer_document(server: Server) -> None:
    path = "/plivo?agent=sales&tenant=acme&ref=a-b_c"
    form = _plivo_form()
    async with server.http.post(
        server.base + path, data=form, headers=_plivo_headers("POST", path, form)
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/xml; charset=utf-8"
        doc = await resp.text()
    stream = _stream(doc, "Stream")
    assert stream.attrib["bidirectional"] == "true" and stream.attrib["keepCallAlive"] == "true"
    assert stream.attrib["contentType"] == "audio/x-l16;rate=16000"
    url = urlsplit(stream.text or "")
    assert (url.scheme, url.netloc, url.path) == ("wss", "voice.example.com", "/ws/plivo/sales")
    query = dict(parse_qsl(url.query))
    extra = dict(pair.split("=", 1) for pair in stream.attrib["extraHeaders"].split(","))
    assert extra["token"] == query["token"]
    assert extra == {
        "token": query["token"],
        "from": "15551230001",
        "to": "15559870002",
        "tenant": "acme",
    }
    assert query["ref"] == "a-b_c"  # not alphanumeric: travels in the query only
    assert len(stream.attrib["extraHeaders"]) <= 512
    check_stream_start(server.config, _info("plivo", PLIVO_UUID, extra))


@pytest.mark.asyncio
async def test_plivo_get_and_refusals(server: Server) -> None:
    path = "/plivo?" + urlencode(_plivo_form())
    async with server.http.get(server.base + path, headers=_plivo_headers("GET", path, {})) as resp:
        assert resp.status == 200
    form = _plivo_form()
    headers = _plivo_headers("POST", "/plivo", form)
    form["To"] = "15550000000"
    status, _ = await _post(server, "/plivo", form, headers)
    assert status == 403
    status, _ = await _post(server, "/plivo", _plivo_form(), {})
    assert status == 403


@pytest.mark.asyncio
async def test_plivo_get_forwards_only_what_the_operator_put_on_the_answer_url(
    server: Server,
) -> None:
    # A GET answer request as captured from Plivo in 2024 (issue 14): Plivo appends its
    # fields to the answer URL, including ones no list of ours names (CountryCode,
    # ParentAuthID, RouteType). Only tenant/agent, written by the operator, may travel.
    provider_fields = {
        **_plivo_form(),
        "BillRate": "0.0085",
        "CallerName": "+15551230001",
        "CountryCode": "US",
        "ParentAuthID": "MA" + "9" * 18,
        "RouteType": "PSTN",
        "SessionStart": "2024-05-02 10:11:12.345678",
        "STIRAttestation": "Not Applicable",
    }
    path = "/plivo?agent=sales&tenant=acme&" + urlencode(provider_fields)
    async with server.http.get(server.base + path, headers=_plivo_headers("GET", path, {})) as resp:
        assert resp.status == 200
        doc = await resp.text()
    stream = _stream(doc, "Stream")
    url = urlsplit(stream.text or "")
    assert url.path == "/ws/plivo/sales"
    query = dict(parse_qsl(url.query))
    extra = dict(pair.split("=", 1) for pair in stream.attrib["extraHeaders"].split(","))
    # from/to come from Plivo's From/To, as for POST; nothing else of Plivo's.
    assert extra == {
        "token": query["token"], "from": "15551230001", "to": "15559870002", "tenant": "acme",
    }
    assert set(query) == {"token", "from", "to", "tenant"}


def test_operator_query_ends_where_the_provider_fields_begin() -> None:
    pairs = [("tenant", "acme"), ("Lead", "x"), ("CallUUID", "u"), ("RouteType", "PSTN"),
             ("X-PH-Custom", "1"), ("agent", "sales")]
    # "Lead" precedes Plivo's part: the operator's. "agent" after it is lower-case:
    # provider names are PascalCase, so it is the operator's too.
    assert operator_query(pairs) == [("tenant", "acme"), ("Lead", "x"), ("agent", "sales")]
    assert operator_query([("tenant", "acme")]) == [("tenant", "acme")]


# ---------------------------------------------------------------------- status hooks


@pytest.mark.asyncio
async def test_stream_status_callbacks_are_verified_and_logged(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    path = "/twilio/stream-status"
    form = {
        "AccountSid": TWILIO_SID,
        "CallSid": CALL_SID,
        "StreamSid": "MZ1",
        "StreamEvent": "stream-error",
        "StreamError": "31920",
        "Timestamp": "now",
    }
    status, _ = await _post(server, path, form, _twilio_headers(path, form))
    assert status == 204
    assert any(
        "stream-error" in r.getMessage() and CALL_SID in r.getMessage() for r in caplog.records
    )
    status, _ = await _post(server, path, form, {})
    assert status == 403


@pytest.mark.asyncio
async def test_oversized_webhook_body_is_refused(server: Server) -> None:
    async with server.http.post(
        server.base + "/twilio",
        data=b"a=" + b"x" * 70_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as resp:
        assert resp.status == 413


@pytest.mark.asyncio
async def test_body_arriving_in_pieces_is_read_whole(server: Server) -> None:
    form = _twilio_form(Extra="x" * 3000)
    headers = {
        **_twilio_headers("/twilio", form),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    raw = urlencode(form).encode()

    async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i : i + size]
            await asyncio.sleep(0.001)  # separate TCP segments, chunked encoding

    async with server.http.post(
        server.base + "/twilio", data=pieces(raw, 500), headers=headers
    ) as resp:
        assert resp.status == 200
    big = b"a=" + b"x" * 70_000
    async with server.http.post(
        server.base + "/twilio",
        data=pieces(big, 8192),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as resp:
        assert resp.status == 413


@pytest.mark.asyncio
async def test_telnyx_call_control_for_an_unknown_agent_hangs_up(server: Server) -> None:
    call_id = server.telnyx.live_call(state="parked")
    payload = {"call_control_id": call_id, "direction": "incoming", "from": "+1", "to": "+2"}
    event = {"data": {"event_type": "call.initiated", "payload": payload}}
    assert await _post_telnyx_event(server, "/telnyx?agent=nobody", event) == 404
    assert not server.telnyx.calls[call_id]["alive"]
    assert [a for a, _ in server.telnyx.calls[call_id]["commands"]] == ["hangup"]


# ------------------------------------------------------------------- listen-only agents


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("target", "shape"),
    [("+15550001111", "Dial/Number"), ("sip:desk@pbx.example.com", "Dial/Sip"),
     ("https://app.example.com/next.xml", "Redirect")],
)
async def test_listen_only_answers_fork_both_tracks_and_go_on(target: str, shape: str) -> None:
    # Twilio <Start><Stream track="both_tracks"> (protocols.md §1.4): a fork, the TwiML
    # goes on at once with the continuation.
    async with running(listen_only_agents="support", listen_continue=target) as server:
        path = "/twilio?agent=support"
        form = _twilio_form()
        status, doc = await _post(server, path, form, _twilio_headers(path, form))
        assert status == 200
        root = ET.fromstring(doc.encode("utf-8"))
        assert [child.tag for child in root] == ["Start", shape.split("/")[0]]
        stream = _stream(doc, "Start/Stream")
        assert stream.attrib["track"] == "both_tracks"
        assert urlsplit(stream.attrib["url"]).path == "/ws/twilio/support"
        assert "_token" in _parameters(stream)
        assert root.findtext(shape) == target
        # A talking agent on the same server still gets <Connect><Stream>.
        path = "/twilio?agent=sales"
        status, doc = await _post(server, path, form, _twilio_headers(path, form))
        assert _stream(doc).attrib["url"].endswith("/ws/twilio/sales")


@pytest.mark.asyncio
async def test_listen_only_texml_and_plivo_answers() -> None:
    async with running(listen_only_agents="support", listen_continue="+15550001111") as server:
        body = urlencode(_telnyx_form()).encode()
        headers = {**_telnyx_headers(body), "Content-Type": "application/x-www-form-urlencoded"}
        async with server.http.post(
            server.base + "/telnyx?agent=support", data=body, headers=headers
        ) as resp:
            doc = await resp.text()
        stream = _stream(doc, "Start/Stream")  # TeXML <Start><Stream> (protocols.md §2.4)
        assert stream.attrib["track"] == "both_tracks"
        assert not any(k.startswith("bidirectional") for k in stream.attrib)
        assert ET.fromstring(doc.encode()).findtext("Dial/Number") == "+15550001111"

        path = "/plivo?agent=support"
        form = _plivo_form()
        async with server.http.post(
            server.base + path, data=form, headers=_plivo_headers("POST", path, form)
        ) as resp:
            doc = await resp.text()
        # Plivo <Stream bidirectional="false" audioTrack="both"> (protocols.md §3.4):
        # keepCallAlive false, so the <Dial> after it runs while the stream forks.
        stream = _stream(doc, "Stream")
        assert stream.attrib["bidirectional"] == "false"
        assert stream.attrib["audioTrack"] == "both"
        assert stream.attrib["keepCallAlive"] == "false"
        assert urlsplit(stream.text or "").path == "/ws/plivo/support"
        assert ET.fromstring(doc.encode()).findtext("Dial/Number") == "15550001111"


@pytest.mark.asyncio
async def test_listen_only_call_control_answer_streams_both_tracks_then_transfers() -> None:
    async with running(listen_only_agents="support", listen_continue="+15550001111") as server:
        call_id = server.telnyx.live_call(state="parked")
        event = {"data": {"event_type": "call.initiated", "id": "evt-2", "payload": {
            "call_control_id": call_id, "direction": "incoming", "from": "+15551230001",
            "to": "+15559870002", "state": "parked"}, "record_type": "event"}}
        assert await _post_telnyx_event(server, "/telnyx?agent=support", event) == 200
        (answer, sent), (transfer, moved) = server.telnyx.calls[call_id]["commands"]
        assert (answer, transfer) == ("answer", "transfer")
        assert sent["stream_track"] == "both_tracks"
        assert not any(k.startswith("stream_bidirectional") for k in sent)
        assert moved["to"] == "+15550001111"
