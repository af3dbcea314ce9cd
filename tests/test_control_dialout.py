"""POST /dialout through a real aiohttp server, placing calls on the fake provider APIs."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from _util_control import control_server
from fakes.providers import FakePlivo, FakeTelnyx, FakeTwilio
from plivo.utils.signature_v3 import construct_post_url, get_signature_v3

from mediastream.config import Config, ProviderCredentials
from mediastream.control import check_stream_start
from mediastream.errors import AuthenticationError
from mediastream.protocols.events import CallInfo, MediaFormat

PUBLIC = "https://voice.example.com"
API_TOKEN = "dial-out-token"
TWILIO_SID = "AC" + "3" * 32
TWILIO_TOKEN = "twilio-auth-token"
TELNYX_KEY = "KEYtelnyx"
TELNYX_APP = "texml-app-3"
PLIVO_ID = "MA" + "3" * 18
PLIVO_TOKEN = "plivo-auth-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@dataclass
class Env:
    base: str
    http: aiohttp.ClientSession
    config: Config
    twilio: FakeTwilio
    telnyx: FakeTelnyx
    plivo: FakePlivo

    async def dial(
        self, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        async with self.http.post(
            self.base + "/dialout", json=body, headers=AUTH if headers is None else headers
        ) as resp:
            return resp.status, await resp.json()


@contextlib.asynccontextmanager
async def running(**changes: Any) -> AsyncIterator[Env]:
    twilio = FakeTwilio(TWILIO_SID, TWILIO_TOKEN)
    telnyx = FakeTelnyx(TELNYX_KEY, TELNYX_APP)
    plivo = FakePlivo(PLIVO_ID, PLIVO_TOKEN)
    credentials = ProviderCredentials(
        twilio_account_sid=TWILIO_SID,
        twilio_auth_token=TWILIO_TOKEN,
        twilio_api_base_url=await twilio.start(),
        telnyx_api_key=TELNYX_KEY,
        telnyx_connection_id=TELNYX_APP,
        telnyx_api_base_url=await telnyx.start(),
        plivo_auth_id=PLIVO_ID,
        plivo_auth_token=PLIVO_TOKEN,
        plivo_api_base_url=await plivo.start(),
    )
    values: dict[str, Any] = {
        "public_url": PUBLIC,
        "api_token": API_TOKEN,
        "credentials": credentials,
    }
    values.update(changes)
    config = Config(**values)
    try:
        async with control_server(config, {"sales"}) as (base, http):
            yield Env(base, http, config, twilio, telnyx, plivo)
    finally:
        for fake in (twilio, telnyx, plivo):
            await fake.close()


def _info(provider: Any, call_id: str, params: dict[str, str]) -> CallInfo:
    fmt = MediaFormat("pcmu", 8000)
    return CallInfo(provider, call_id, "s", fmt, fmt, custom_parameters=params)


def _parameters(stream: ET.Element) -> dict[str, str]:
    return {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}


REQUEST = {
    "to": "+15551230001",
    "from": "+15559870002",
    "agent": "sales",
    "params": {"tenant": "acme & co", "priority": 2, "vip": True},
}


@pytest.mark.asyncio
async def test_twilio_dialout_carries_params_to_the_bot() -> None:
    async with running() as env:
        status, body = await env.dial({"provider": "twilio", **REQUEST})
        assert status == 201, body
        sid = body["call_id"]
        assert body == {"provider": "twilio", "call_id": sid, "status": "queued"}
        call = env.twilio.calls[sid]
        assert (call["to"], call["from"]) == ("+15551230001", "+15559870002")
        stream = ET.fromstring(call["twiml"]).find("Connect/Stream")
        assert stream is not None
        assert stream.attrib["url"] == "wss://voice.example.com/ws/twilio/sales"
        params = _parameters(stream)
        assert (
            params["tenant"] == "acme & co"
            and params["priority"] == "2"
            and params["vip"] == "true"
        )
        assert (params["from"], params["to"]) == ("+15559870002", "+15551230001")
        # The token was issued before Twilio assigned the SID: valid for this call, once.
        check_stream_start(env.config, _info("twilio", sid, params))
        with pytest.raises(AuthenticationError):
            check_stream_start(env.config, _info("twilio", sid, params))


@pytest.mark.asyncio
async def test_telnyx_texml_dialout() -> None:
    async with running() as env:
        status, body = await env.dial({"provider": "telnyx", **REQUEST})
        assert status == 201, body
        call = env.telnyx.calls[body["call_id"]]
        request = env.telnyx.last()
        assert request.path == f"/v2/texml/calls/{TELNYX_APP}"
        assert (request.json["From"], request.json["To"]) == ("+15559870002", "+15551230001")
        stream = ET.fromstring(call["texml"]).find("Connect/Stream")
        assert stream is not None
        url = urlsplit(stream.attrib["url"])
        assert url.path == "/ws/telnyx/sales" and stream.attrib["bidirectionalMode"] == "rtp"
        params = _parameters(stream)
        assert dict(parse_qsl(url.query))["token"] == params["_token"]
        assert params["tenant"] == "acme & co"
        check_stream_start(env.config, _info("telnyx", body["call_id"], params))


@pytest.mark.asyncio
async def test_telnyx_call_control_dialout() -> None:
    async with running(telnyx_dialout_api="call_control") as env:
        status, body = await env.dial({"provider": "telnyx", **REQUEST})
        assert status == 201, body
        sent = env.telnyx.last().json
        assert env.telnyx.last().path == "/v2/calls"
        assert sent["connection_id"] == TELNYX_APP and sent["stream_bidirectional_mode"] == "rtp"
        assert (sent["stream_codec"], sent["stream_bidirectional_sampling_rate"]) == ("L16", 16000)
        query = dict(parse_qsl(urlsplit(sent["stream_url"]).query))
        assert query["tenant"] == "acme & co" and query["to"] == "+15551230001"
        check_stream_start(env.config, _info("telnyx", body["call_id"], query))


@pytest.mark.asyncio
async def test_plivo_dialout_serves_the_params_from_its_answer_url() -> None:
    async with running() as env:
        status, body = await env.dial({"provider": "plivo", **REQUEST})
        assert status == 201, body
        assert body["request_uuid"] == body["call_id"]
        created = env.plivo.requests_pending[body["call_id"]]
        assert (created["to"], created["from"]) == ("15551230001", "15559870002")
        answer_url = created["answer_url"]
        assert answer_url.startswith(PUBLIC + "/plivo?_dialout=")
        # Plivo fetches the answer URL once the callee picks up, signing it (V3).
        call_uuid = "c0ffee00-0000-1111-2222-333344445555"
        form = {
            "CallUUID": call_uuid,
            "From": "15559870002",
            "To": "15551230001",
            "Direction": "outbound",
            "ALegRequestUUID": body["call_id"],
            "CallStatus": "in-progress",
        }
        nonce = "11112222333344445555"
        base = construct_post_url(answer_url, dict(form)).decode()
        signature = get_signature_v3(PLIVO_TOKEN.encode(), base, nonce.encode()).decode()
        headers = {"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": nonce}
        local = env.base + answer_url[len(PUBLIC) :]
        async with env.http.post(local, data=form, headers=headers) as resp:
            assert resp.status == 200
            doc = await resp.text()
        stream = ET.fromstring(doc).find("Stream")
        assert stream is not None
        url = urlsplit(stream.text or "")
        assert url.path == "/ws/plivo/sales"
        query = dict(parse_qsl(url.query))
        assert query["tenant"] == "acme & co" and query["priority"] == "2"
        check_stream_start(env.config, _info("plivo", call_uuid, query))
        # A forged blob is refused even with a valid Plivo signature.
        forged_url = answer_url[:-3] + "abc"
        base = construct_post_url(forged_url, dict(form)).decode()
        headers["X-Plivo-Signature-V3"] = get_signature_v3(
            PLIVO_TOKEN.encode(), base, nonce.encode()
        ).decode()
        async with env.http.post(
            env.base + forged_url[len(PUBLIC) :], data=form, headers=headers
        ) as resp:
            assert resp.status == 403


@pytest.mark.asyncio
async def test_dialout_authorization() -> None:
    async with running(api_token=None) as env:
        status, body = await env.dial({"provider": "twilio", **REQUEST})
        assert status == 404 and "dial-out disabled" in body["error"]
    async with running() as env:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {API_TOKEN}"},
        ):
            async with env.http.post(env.base + "/dialout", json={}, headers=headers) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert env.twilio.requests == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"provider": "vonage"}, "provider"),
        ({"to": "not a number"}, "to"),
        ({"to": 15551230001}, "to"),
        ({"from": ""}, "from"),
        ({"agent": "nobody"}, "agent"),
        ({"agent": 3}, "agent"),
        ({"params": ["a"]}, "params"),
        ({"params": {"nested": {"a": 1}}}, "params.nested"),
        ({"params": {"_secret": "x"}}, "params._secret"),
        ({"params": {"big": "x" * 2000}}, "params.big"),
        ({"params": {f"k{i}": "v" for i in range(40)}}, "params"),
        ({"params": {f"k{i}": "v" * 900 for i in range(8)}}, "params"),
    ],
)
async def test_dialout_validation_names_the_field(change: dict[str, Any], field: str) -> None:
    async with running() as env:
        status, body = await env.dial({"provider": "twilio", **REQUEST, **change})
        assert status == 400 and body["field"] == field, body
        assert env.twilio.requests == []


@pytest.mark.asyncio
async def test_dialout_bad_json_and_provider_errors() -> None:
    async with running() as env:
        async with env.http.post(env.base + "/dialout", data=b"{nope", headers=AUTH) as resp:
            assert resp.status == 400 and "JSON" in (await resp.json())["error"]
        env.twilio.script(400, {"code": 21215, "message": "Geo permission"})
        status, body = await env.dial({"provider": "twilio", **REQUEST})
        assert status == 502 and body["provider_code"] == "21215" and body["provider_status"] == 400
    no_plivo = ProviderCredentials(twilio_auth_token="t", twilio_account_sid=TWILIO_SID)
    async with running(credentials=no_plivo) as env:
        status, body = await env.dial({"provider": "plivo", **REQUEST})
        assert status == 503 and "PLIVO_AUTH_ID" in body["error"]
