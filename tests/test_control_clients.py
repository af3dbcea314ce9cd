"""Call-control REST clients against the local fake provider APIs (tests/fakes)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from fakes.providers import FakePlivo, FakeTelnyx, FakeTwilio, basic_credentials

from mediastream.config import ProviderCredentials
from mediastream.control import ControlUnavailable, ProviderAPIError, ProviderClients
from mediastream.control.clients import TelnyxStreamOptions
from mediastream.control.rest import RestClient
from mediastream.protocols.events import CallInfo, MediaFormat

TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-secret"
TELNYX_KEY = "KEYtelnyx"
TELNYX_APP = "1234567890"
PLIVO_ID = "MAXXXXXXXXXXXXXXXXXX"
PLIVO_TOKEN = "plivo-secret"


@dataclass
class Env:
    twilio: FakeTwilio
    telnyx: FakeTelnyx
    plivo: FakePlivo
    http: aiohttp.ClientSession
    clients: ProviderClients
    sleeps: list[float]


def _credentials(env_urls: dict[str, str], **changes: Any) -> ProviderCredentials:
    values: dict[str, Any] = {
        "twilio_account_sid": TWILIO_SID,
        "twilio_auth_token": TWILIO_TOKEN,
        "twilio_api_base_url": env_urls["twilio"],
        "telnyx_api_key": TELNYX_KEY,
        "telnyx_connection_id": TELNYX_APP,
        "telnyx_api_base_url": env_urls["telnyx"],
        "plivo_auth_id": PLIVO_ID,
        "plivo_auth_token": PLIVO_TOKEN,
        "plivo_api_base_url": env_urls["plivo"],
    }
    values.update(changes)
    return ProviderCredentials(**values)


@pytest_asyncio.fixture
async def env() -> AsyncIterator[Env]:
    twilio = FakeTwilio(TWILIO_SID, TWILIO_TOKEN)
    telnyx = FakeTelnyx(TELNYX_KEY, TELNYX_APP)
    plivo = FakePlivo(PLIVO_ID, PLIVO_TOKEN)
    urls = {
        "twilio": await twilio.start(),
        "telnyx": await telnyx.start(),
        "plivo": await plivo.start(),
    }
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    http = aiohttp.ClientSession()
    clients = ProviderClients(http, _credentials(urls), timeout=2.0, retries=3, sleep=sleep)
    try:
        yield Env(twilio, telnyx, plivo, http, clients, sleeps)
    finally:
        await http.close()
        for fake in (twilio, telnyx, plivo):
            await fake.close()


def _info(provider: Any, call_id: str) -> CallInfo:
    fmt = MediaFormat("pcmu", 8000)
    return CallInfo(provider, call_id, "stream-1", fmt, fmt)


# ---------------------------------------------------------------------------- Twilio


@pytest.mark.asyncio
async def test_twilio_create_call_sends_the_documented_form(env: Env) -> None:
    twiml = '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Connect><Stream url="wss://x/ws/twilio"/></Connect></Response>'
    sid = await env.clients.require_twilio().create_call(
        "+15551230001", "+15559870002", twiml=twiml
    )
    assert sid.startswith("CA") and env.twilio.calls[sid]["twiml"] == twiml
    request = env.twilio.last()
    assert (request.method, request.path) == (
        "POST",
        f"/2010-04-01/Accounts/{TWILIO_SID}/Calls.json",
    )
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert basic_credentials(request.headers["Authorization"]) == (TWILIO_SID, TWILIO_TOKEN)
    assert request.form == [("To", "+15551230001"), ("From", "+15559870002"), ("Twiml", twiml)]


@pytest.mark.asyncio
async def test_twilio_create_call_with_status_events_repeats_the_parameter(env: Env) -> None:
    await env.clients.require_twilio().create_call(
        "+15551230001",
        "+15559870002",
        url="https://x.example/twilio",
        status_callback="https://x.example/status",
        status_callback_events=("initiated", "completed"),
        timeout=20,
    )
    form = env.twilio.last().form
    assert [v for k, v in form if k == "StatusCallbackEvent"] == ["initiated", "completed"]
    assert ("Url", "https://x.example/twilio") in form and ("Timeout", "20") in form


@pytest.mark.asyncio
async def test_twilio_rejects_oversized_inline_twiml_before_sending(env: Env) -> None:
    with pytest.raises(ValueError, match="4000"):
        await env.clients.require_twilio().create_call(
            "+1555", "+1556", twiml="<Response>" + "x" * 4000
        )
    assert env.twilio.requests == []


@pytest.mark.asyncio
async def test_twilio_hangup_is_idempotent(env: Env) -> None:
    sid = env.twilio.live_call()
    info = _info("twilio", sid)
    await env.clients.hangup(info)
    assert env.twilio.calls[sid]["status"] == "completed"
    assert env.twilio.last().form == [("Status", "completed")]
    await env.clients.hangup(info)  # 400 code 21220: already over
    await env.clients.hangup(_info("twilio", "CA" + "f" * 32))  # 404 code 20404: unknown
    assert [r.path.rsplit("/", 1)[-1] for r in env.twilio.requests] == [
        f"{sid}.json",
        f"{sid}.json",
        "CA" + "f" * 32 + ".json",
    ]


@pytest.mark.asyncio
async def test_twilio_hangup_of_a_ringing_call_uses_completed(env: Env) -> None:
    sid = env.twilio.live_call("ringing")
    await env.clients.hangup(_info("twilio", sid))
    assert env.twilio.calls[sid]["status"] == "completed"


@pytest.mark.asyncio
async def test_retries_5xx_then_succeeds(env: Env) -> None:
    sid = env.twilio.live_call()
    env.twilio.script(500, {"code": 20500, "message": "Internal Server Error"}, times=2)
    await env.clients.hangup(_info("twilio", sid))
    assert len(env.twilio.requests) == 3
    assert env.twilio.calls[sid]["status"] == "completed"
    assert len(env.sleeps) == 2 and env.sleeps[0] < env.sleeps[1] * 2 + 1


@pytest.mark.asyncio
async def test_retry_after_is_honoured(env: Env) -> None:
    sid = env.twilio.live_call()
    env.twilio.script(
        429, {"code": 20429, "message": "Too Many Requests"}, headers={"Retry-After": "2"}
    )
    await env.clients.hangup(_info("twilio", sid))
    assert env.sleeps == [2.0]


@pytest.mark.asyncio
async def test_retry_after_too_long_is_not_waited_for(env: Env) -> None:
    sid = env.twilio.live_call()
    env.twilio.script(
        429, {"code": 20429, "message": "Too Many Requests"}, headers={"Retry-After": "3600"}
    )
    with pytest.raises(ProviderAPIError) as info:
        await env.clients.hangup(_info("twilio", sid))
    assert info.value.status == 429 and env.sleeps == []


@pytest.mark.asyncio
async def test_gives_up_after_bounded_retries_and_logs_the_call(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    sid = env.twilio.live_call()
    env.twilio.script(503, {"code": 20503, "message": "Service Unavailable"}, times=10)
    with (
        caplog.at_level(logging.WARNING, logger="mediastream.control.rest"),
        pytest.raises(ProviderAPIError) as info,
    ):
        await env.clients.hangup(_info("twilio", sid))
    assert info.value.status == 503 and info.value.code == "20503" and info.value.call_id == sid
    assert len(env.twilio.requests) == 4  # 1 + 3 retries
    retry_lines = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retry_lines) == 3 and all(sid in r.getMessage() for r in retry_lines)


@pytest.mark.asyncio
async def test_client_errors_are_not_retried(env: Env) -> None:
    http = env.http
    wrong = ProviderClients(
        http,
        _credentials(
            {"twilio": env.twilio.base_url, "telnyx": "", "plivo": ""}, twilio_auth_token="nope"
        ),
    )
    with pytest.raises(ProviderAPIError) as info:
        await wrong.hangup(_info("twilio", env.twilio.live_call()))
    assert info.value.status == 401 and info.value.code == "20003"
    assert len(env.twilio.requests) == 1


@pytest.mark.asyncio
async def test_create_call_is_not_retried_on_500(env: Env) -> None:
    env.twilio.script(500, {"code": 20500, "message": "Internal Server Error"})
    with pytest.raises(ProviderAPIError):
        await env.clients.require_twilio().create_call(
            "+15551230001", "+15559870002", url="https://x/t"
        )
    assert len(env.twilio.requests) == 1  # a 500 may mean the call was placed


@pytest.mark.asyncio
async def test_create_call_is_retried_on_503_and_429(env: Env) -> None:
    env.twilio.script(503, {"code": 20503, "message": "busy"})
    env.twilio.script(429, {"code": 20429, "message": "slow down"})
    sid = await env.clients.require_twilio().create_call(
        "+15551230001", "+15559870002", url="https://x/t"
    )
    assert sid in env.twilio.calls and len(env.twilio.requests) == 3


@pytest.mark.asyncio
async def test_timeouts_are_retried_then_reported(env: Env) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    rest = RestClient(
        env.http,
        provider="twilio",
        base_url=env.twilio.base_url,
        timeout=0.2,
        retries=1,
        sleep=sleep,
    )
    env.twilio.script(200, {}, delay=1.0, times=2)
    with pytest.raises(ProviderAPIError) as info:
        await rest.request("POST", "/x", operation="hang up", call_id="CA1", form=[("a", "b")])
    assert info.value.status is None and len(sleeps) == 1


@pytest.mark.asyncio
async def test_connection_refused_is_reported(env: Env) -> None:
    await env.twilio.close()  # nothing listens there any more
    with pytest.raises(ProviderAPIError) as info:
        await env.clients.hangup(_info("twilio", "CA1"))
    assert info.value.status is None and len(env.sleeps) == 3


@pytest.mark.asyncio
async def test_twilio_transfer_redirect_and_recording(env: Env) -> None:
    twilio = env.clients.require_twilio()
    sid = env.twilio.live_call()
    await twilio.transfer(sid, "+15550001111")
    root = ET.fromstring(env.twilio.calls[sid]["twiml"])
    assert root.tag == "Response" and root.find("Dial") is not None
    assert root.findtext("Dial") == "+15550001111"
    await twilio.redirect(sid, url="https://x.example/next")
    assert env.twilio.calls[sid]["url"] == "https://x.example/next"
    rec = await twilio.start_recording(sid)
    assert rec.startswith("RE") and env.twilio.last().form == [("RecordingChannels", "dual")]
    await twilio.stop_recording(sid)
    assert env.twilio.last().path.endswith("/Recordings/Twilio.CURRENT.json")
    assert env.twilio.calls[sid]["recordings"][rec] == "stopped"
    await twilio.hangup(sid)
    with pytest.raises(ProviderAPIError) as info:
        await twilio.transfer(sid, "+15550001111")
    assert info.value.code == "21220"


@pytest.mark.asyncio
async def test_twilio_has_no_rest_dtmf(env: Env) -> None:
    with pytest.raises(ControlUnavailable, match="twilio"):
        await env.clients.send_dtmf(_info("twilio", "CA1"), "123")


# ---------------------------------------------------------------------------- Telnyx


@pytest.mark.asyncio
async def test_telnyx_hangup_is_idempotent(env: Env) -> None:
    call_id = env.telnyx.live_call()
    await env.clients.hangup(_info("telnyx", call_id))
    request = env.telnyx.last()
    assert (request.method, request.path) == ("POST", f"/v2/calls/{call_id}/actions/hangup")
    assert request.headers["Authorization"] == f"Bearer {TELNYX_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert set(request.json) == {"command_id"}
    assert not env.telnyx.calls[call_id]["alive"]
    await env.clients.hangup(_info("telnyx", call_id))  # 422 "90018"
    with pytest.raises(ProviderAPIError) as info:
        await env.clients.hangup(_info("telnyx", "v3:unknown"))
    assert info.value.status == 404


@pytest.mark.asyncio
async def test_telnyx_retries_keep_the_command_id(env: Env) -> None:
    call_id = env.telnyx.live_call()
    env.telnyx.script(503, {"errors": [{"code": "10503", "title": "Service unavailable"}]})
    await env.clients.require_telnyx().send_dtmf(call_id, "12#")
    first, second = env.telnyx.requests
    assert first.json == second.json and first.json["digits"] == "12#"
    assert env.telnyx.calls[call_id]["commands"] == [("send_dtmf", second.json)]


@pytest.mark.asyncio
async def test_telnyx_actions(env: Env) -> None:
    telnyx = env.clients.require_telnyx()
    call_id = env.telnyx.live_call()
    await telnyx.transfer(call_id, "+15550001111", from_="+15559870002")
    await telnyx.start_recording(call_id)
    await telnyx.stop_recording(call_id)
    await env.clients.send_dtmf(_info("telnyx", call_id), "1w2")
    actions = [
        (a, {k: v for k, v in b.items() if k != "command_id"})
        for a, b in env.telnyx.calls[call_id]["commands"]
    ]
    assert actions == [
        ("transfer", {"to": "+15550001111", "from": "+15559870002"}),
        ("record_start", {"format": "mp3", "channels": "single"}),
        ("record_stop", {}),
        ("send_dtmf", {"digits": "1w2"}),
    ]
    with pytest.raises(ProviderAPIError) as info:
        await telnyx.send_dtmf(call_id, "not digits")
    assert info.value.status == 422


@pytest.mark.asyncio
async def test_telnyx_dial_and_texml_call(env: Env) -> None:
    telnyx = env.clients.require_telnyx()
    options = TelnyxStreamOptions(
        "wss://x.example/ws/telnyx?token=abc", codec="L16", sample_rate=16000
    )
    call_id = await telnyx.dial("+15551230001", "+15559870002", stream=options)
    body = env.telnyx.last().json
    assert env.telnyx.last().path == "/v2/calls"
    assert body == {
        "connection_id": TELNYX_APP,
        "to": "+15551230001",
        "from": "+15559870002",
        "stream_url": "wss://x.example/ws/telnyx?token=abc",
        "stream_track": "inbound_track",
        "stream_codec": "L16",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": "L16",
        "stream_bidirectional_sampling_rate": 16000,
        "stream_bidirectional_target_legs": "self",
    }
    assert env.telnyx.calls[call_id]["alive"]
    texml = '<Response><Connect><Stream url="wss://x/ws/telnyx"/></Connect></Response>'
    sid = await telnyx.create_texml_call("+15551230001", "+15559870002", texml=texml)
    assert env.telnyx.last().path == f"/v2/texml/calls/{TELNYX_APP}"
    assert env.telnyx.last().json == {"From": "+15559870002", "To": "+15551230001", "Texml": texml}
    assert env.telnyx.calls[sid]["texml"] == texml
    # The TeXML call sid is the call control id: hang-up works on it.
    await env.clients.hangup(_info("telnyx", sid))
    assert not env.telnyx.calls[sid]["alive"]


@pytest.mark.asyncio
async def test_telnyx_without_connection_id(env: Env) -> None:
    clients = ProviderClients(
        env.http,
        _credentials(
            {"twilio": "", "telnyx": env.telnyx.base_url, "plivo": ""}, telnyx_connection_id=None
        ),
    )
    with pytest.raises(ControlUnavailable, match="TELNYX_CONNECTION_ID"):
        await clients.require_telnyx().create_texml_call("+1555", "+1556", texml="<Response/>")


# ----------------------------------------------------------------------------- Plivo


@pytest.mark.asyncio
async def test_plivo_create_call(env: Env) -> None:
    request_uuid = await env.clients.require_plivo().create_call(
        "15551230001", "15559870002", answer_url="https://x.example/plivo?_dialout=abc"
    )
    request = env.plivo.last()
    assert (request.method, request.path) == ("POST", f"/v1/Account/{PLIVO_ID}/Call/")
    assert basic_credentials(request.headers["Authorization"]) == (PLIVO_ID, PLIVO_TOKEN)
    assert request.json == {
        "from": "15559870002",
        "to": "15551230001",
        "answer_url": "https://x.example/plivo?_dialout=abc",
        "answer_method": "POST",
    }
    assert request_uuid in env.plivo.requests_pending
    await env.clients.require_plivo().cancel(request_uuid)
    assert request_uuid not in env.plivo.requests_pending
    await env.clients.require_plivo().cancel(request_uuid)  # 404: already gone


@pytest.mark.asyncio
async def test_plivo_hangup_is_idempotent(env: Env) -> None:
    call_id = env.plivo.live_call()
    await env.clients.hangup(_info("plivo", call_id))
    request = env.plivo.last()
    assert (request.method, request.path, request.body) == (
        "DELETE",
        f"/v1/Account/{PLIVO_ID}/Call/{call_id}/",
        b"",
    )
    assert not env.plivo.calls[call_id]["alive"]
    await env.clients.hangup(_info("plivo", call_id))  # 404


@pytest.mark.asyncio
async def test_plivo_actions(env: Env) -> None:
    plivo = env.clients.require_plivo()
    call_id = env.plivo.live_call()
    await plivo.transfer(call_id, aleg_url="https://x.example/plivo/next")
    await env.clients.send_dtmf(_info("plivo", call_id), "12*#")
    recording = await plivo.start_recording(call_id, time_limit=60)
    await plivo.stop_recording(call_id)
    assert recording
    assert [a for a, _ in env.plivo.calls[call_id]["actions"]] == [
        "transfer",
        "dtmf",
        "record",
        "record_stop",
    ]
    assert env.plivo.calls[call_id]["actions"][0][1] == {
        "legs": "aleg",
        "aleg_url": "https://x.example/plivo/next",
        "aleg_method": "POST",
    }
    assert [r.path for r in env.plivo.requests] == [
        f"/v1/Account/{PLIVO_ID}/Call/{call_id}/",
        f"/v1/Account/{PLIVO_ID}/Call/{call_id}/DTMF/",
        f"/v1/Account/{PLIVO_ID}/Call/{call_id}/Record/",
        f"/v1/Account/{PLIVO_ID}/Call/{call_id}/Record/",
    ]


# ------------------------------------------------------------------------ front door


@pytest.mark.asyncio
async def test_missing_credentials_say_what_to_set() -> None:
    async with aiohttp.ClientSession() as http:
        clients = ProviderClients(http, ProviderCredentials())
        for provider, variable in (
            ("twilio", "TWILIO_AUTH_TOKEN"),
            ("telnyx", "TELNYX_API_KEY"),
            ("plivo", "PLIVO_AUTH_TOKEN"),
        ):
            assert not clients.configured(provider)
            with pytest.raises(ControlUnavailable, match=variable):
                await clients.hangup(_info(provider, "x"))


@pytest.mark.asyncio
async def test_create_call_dispatch(env: Env) -> None:
    doc = "<Response/>"
    sid = await env.clients.create_call("twilio", "+15551230001", "+15559870002", document=doc)
    assert sid in env.twilio.calls
    cid = await env.clients.create_call("telnyx", "+15551230001", "+15559870002", document=doc)
    assert cid in env.telnyx.calls
    rid = await env.clients.create_call(
        "plivo", "15551230001", "15559870002", answer_url="https://x/plivo"
    )
    assert rid in env.plivo.requests_pending
    with pytest.raises(ValueError):
        await env.clients.create_call("plivo", "1", "2", document=doc)
