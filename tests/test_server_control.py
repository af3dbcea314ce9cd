"""The server with the control plane: REST hang-ups and authenticated streams end to end.

Providers' REST APIs are the faithful local fakes of tests/fakes/providers.py; the
media side is a real websockets client playing the provider (tests/_util_server.py).
"""

from __future__ import annotations

import re

import aiohttp
import pytest
import websockets
from _util_server import FakeProvider, RecordingBot, running_server, scaled, ulaw_payload
from fakes.providers import FakeTelnyx, FakeTwilio
from websockets.asyncio.client import connect

from mediastream.call import Call
from mediastream.config import ProviderCredentials
from mediastream.control.signatures import twilio_signature
from mediastream.echo import echo_bot

ACCOUNT = "AC" + "0" * 32
TOKEN = "twilio_test_token"


class Goodbye:
    async def __call__(self, call: Call) -> None:
        call.send_audio(b"\x20\x00" * 1600, 8000)
        call.end_utterance()


class Crasher:
    async def __call__(self, call: Call) -> None:
        raise RuntimeError("boom")


@pytest.mark.asyncio
async def test_bot_finishing_hangs_up_through_twilio_rest() -> None:
    async with FakeTwilio(ACCOUNT, TOKEN) as api:
        creds = ProviderCredentials(
            twilio_account_sid=ACCOUNT, twilio_auth_token=TOKEN, twilio_api_base_url=api.base_url
        )
        async with running_server(Goodbye(), credentials=creds, require_auth=False) as server:
            fake = FakeProvider("twilio", call_id=api.live_call())
            async with fake.connect(server):
                await fake.open()
                fake.start_pump()
                code, _ = await fake.closed()
    assert code == 1000
    assert len(fake.audio) == 1600
    hangups = [r for r in api.requests if r.path.endswith(f"/Calls/{fake.call_id}.json")]
    assert len(hangups) == 1
    assert ("Status", "completed") in hangups[0].form
    assert api.calls[fake.call_id]["status"] == "completed"


@pytest.mark.asyncio
async def test_a_crashing_bot_hangs_up_its_telnyx_call() -> None:
    async with FakeTelnyx("KEY123", "conn-1") as api:
        creds = ProviderCredentials(telnyx_api_key="KEY123", telnyx_api_base_url=api.base_url)
        async with running_server(Crasher(), credentials=creds, require_auth=False) as server:
            fake = FakeProvider("telnyx", call_id=api.live_call())
            async with fake.connect(server):
                await fake.open()
                code, reason = await fake.closed()
    assert (code, reason) == (1011, "bot error")
    assert [a for a, _ in api.calls[fake.call_id]["commands"]] == ["hangup"]
    assert api.calls[fake.call_id]["alive"] is False


@pytest.mark.asyncio
async def test_provider_stop_needs_no_hangup() -> None:
    async with FakeTwilio(ACCOUNT, TOKEN) as api:
        creds = ProviderCredentials(
            twilio_account_sid=ACCOUNT, twilio_auth_token=TOKEN, twilio_api_base_url=api.base_url
        )
        async with running_server(echo_bot, credentials=creds, require_auth=False) as server:
            fake = FakeProvider("twilio", call_id=api.live_call())
            async with fake.connect(server):
                await fake.open()
                await fake.send(fake.stop())
                assert (await fake.closed())[0] == 1000
    assert api.requests == []


def _signed_headers(url: str, params: list[tuple[str, str]] | None = None) -> dict[str, str]:
    return {"X-Twilio-Signature": twilio_signature(url, params or [], TOKEN)}


@pytest.mark.asyncio
async def test_authenticated_twilio_call_end_to_end() -> None:
    bot = RecordingBot()
    creds = ProviderCredentials(twilio_account_sid=ACCOUNT, twilio_auth_token=TOKEN)
    async with running_server(bot, credentials=creds) as server:
        base = f"http://127.0.0.1:{server.port}"
        fake = FakeProvider("twilio")
        form = [("CallSid", fake.call_id), ("AccountSid", ACCOUNT), ("From", "+15551230001"),
                ("To", "+15559870002"), ("CallStatus", "ringing"), ("Direction", "inbound")]
        async with aiohttp.ClientSession() as http:
            # Unsigned webhook: refused.
            async with http.post(f"{base}/twilio", data=form) as r:
                assert r.status == 403
            async with http.post(f"{base}/twilio", data=form,
                                 headers=_signed_headers(f"{base}/twilio", form)) as r:
                assert r.status == 200
                twiml = await r.text()
        stream_url = re.search(r'<Stream url="([^"]+)"', twiml)
        token = re.search(r'<Parameter name="_token" value="([^"]+)"', twiml)
        assert stream_url is not None and token is not None
        ws_url = stream_url.group(1)
        assert ws_url == f"ws://127.0.0.1:{server.port}/ws/twilio"
        # An unsigned upgrade is refused before it happens.
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(ws_url, open_timeout=scaled(5)):
                pass
        assert refused.value.response.status_code == 403
        # Signed upgrade, but a start without our token: 1008.
        intruder = FakeProvider("twilio")
        async with connect(ws_url, additional_headers=_signed_headers(ws_url)) as ws:
            intruder.ws = ws
            await intruder.open()
            assert (await intruder.closed())[0] == 1008
        # The real stream: signed upgrade, token in the parameters.
        fake.params = {"_token": token.group(1)}
        async with connect(ws_url, additional_headers=_signed_headers(ws_url)) as ws:
            fake.ws = ws
            await fake.open()
            fake.start_pump()
            sent = ulaw_payload(2)
            for i in range(2):
                await fake.send(fake.media(sent[i * 160 : (i + 1) * 160]))
            assert await fake.wait_audio(len(sent)) == sent
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000
        # The token is single use.
        replay = FakeProvider("twilio", call_id=fake.call_id, params=dict(fake.params))
        async with connect(ws_url, additional_headers=_signed_headers(ws_url)) as ws:
            replay.ws = ws
            await replay.open()
            assert (await replay.closed())[0] == 1008
    assert len(bot.calls) == 1
    # The bot never sees our stream token.
    assert "_token" not in bot.calls[0].info.custom_parameters


@pytest.mark.asyncio
async def test_metrics_count_rejections_by_status() -> None:
    creds = ProviderCredentials(twilio_account_sid=ACCOUNT, twilio_auth_token=TOKEN)
    async with running_server(echo_bot, credentials=creds) as server:
        url = f"ws://127.0.0.1:{server.port}/ws/twilio"
        with pytest.raises(websockets.InvalidStatus):
            async with connect(url, open_timeout=scaled(5)):
                pass
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{server.port}/metrics") as r,
        ):
            text = await r.text()
    assert 'mediastream_upgrades_rejected_total{status="403"} 1.0' in text
