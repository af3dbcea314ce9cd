"""The live-call API on one process: GET /calls and POST /calls/{id}/<action>.

A real server, real websockets clients playing the providers' media side
(tests/_util_server.py), the providers' REST APIs played by the faithful fakes of
tests/fakes/providers.py. The cross-process parts (workers, Redis) are in
tests/test_cluster.py.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest
from _util_server import FakeProvider, RecordingBot, running_server, ulaw_payload
from fakes.providers import FakePlivo, FakeTelnyx, FakeTwilio

from mediastream.call import BotMessage, Call
from mediastream.config import ProviderCredentials
from mediastream.server import MediaStreamServer

API = "api-secret"
AUTH = {"Authorization": f"Bearer {API}"}
ACCOUNT = "AC" + "0" * 32


async def api(
    server: MediaStreamServer, method: str, path: str, body: Any = None,
    headers: dict[str, str] | None = None, raw: bytes | None = None,
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(
        method, f"http://127.0.0.1:{server.port}{path}",
        json=body if raw is None else None, data=raw,
        headers=AUTH if headers is None else headers,
    ) as response:
        text = await response.text()
    try:
        return response.status, json.loads(text)
    except ValueError:  # the access rule answers in plain text
        return response.status, text


@pytest.mark.asyncio
async def test_commands_follow_the_access_rule_of_get_calls() -> None:
    # Loopback, no credentials, no token: open (local development); unknown call 404.
    async with running_server(require_auth=False) as server:
        assert (await api(server, "POST", "/calls/x/hangup", {}, headers={}))[0] == 404
    # Provider credentials but no API token: off.
    creds = ProviderCredentials(twilio_account_sid=ACCOUNT, twilio_auth_token="tok")
    async with running_server(require_auth=False, credentials=creds) as server:
        assert (await api(server, "POST", "/calls/x/hangup", {}, headers={}))[0] == 403
    # A token: 401 without it, 403 with a wrong one, for listing and commands alike.
    async with running_server(require_auth=False, api_token=API) as server:
        assert (await api(server, "GET", "/calls", headers={}))[0] == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await api(server, "GET", "/calls", headers=wrong))[0] == 403
        assert (await api(server, "POST", "/calls/x/hangup", {}, headers=wrong))[0] == 403
        assert (await api(server, "POST", "/calls/x/hangup", {}, headers={}))[0] == 401
        status, body = await api(server, "GET", "/calls")
        assert status == 200 and body["calls"] == [] and len(body["instances"]) == 1
        assert (await api(server, "POST", "/calls/x/hangup", {}))[0] == 404


@pytest.mark.asyncio
async def test_list_message_clear_and_hangup_on_a_live_call() -> None:
    bot = RecordingBot(echo=True)
    async with running_server(bot, require_auth=False, api_token=API) as server:
        fake = FakeProvider("twilio")
        async with fake.connect(server):
            await fake.open()
            fake.start_pump()
            await bot.started.wait()
            status, body = await api(server, "GET", "/calls")
            assert status == 200
            [row] = body["calls"]
            assert row["call_id"] == fake.call_id and row["provider"] == "twilio"
            assert row["stream_id"] == fake.stream_id and row["started_at"] > 0

            path = f"/calls/{fake.call_id}"
            news = {"event": "order_shipped", "order": {"id": 42, "eta": "tomorrow"}}
            assert (await api(server, "POST", path + "/message", news))[0] == 200
            [message] = await bot.wait_for(BotMessage)
            assert message.data == news

            # Bad bodies: 400, nothing delivered.
            assert (await api(server, "POST", path + "/message", [1, 2]))[0] == 400
            assert (await api(server, "POST", path + "/message", raw=b"{nope"))[0] == 400
            big = {"x": "a" * 70_000}
            assert (await api(server, "POST", path + "/message", big))[0] == 400
            assert len(bot.of(BotMessage)) == 1

            assert (await api(server, "POST", "/calls/CAnope/message", {}))[0] == 404
            assert (await api(server, "POST", path + "/explode", {}))[0] == 404

            for _ in range(25):  # half a second the bot echoes: something to clear
                await fake.send(fake.media(ulaw_payload(1)))
            await fake.wait_audio(160)
            assert (await api(server, "POST", path + "/clear", {}))[0] == 200
            await fake.wait_until(lambda f: "clear" in f.kinds())

            # Twilio has no DTMF into a <Connect><Stream> call: 409, and bad digits 400.
            assert (await api(server, "POST", path + "/dtmf", {"digits": "1"}))[0] == 409
            assert (await api(server, "POST", path + "/dtmf", {"digits": "x"}))[0] == 400
            # Transfer without REST credentials: 409; a bad target: 400.
            assert (await api(server, "POST", path + "/transfer", {"to": "+15551230000"}))[0] \
                == 409
            assert (await api(server, "POST", path + "/transfer", {"to": "<x>"}))[0] == 400

            status, body = await api(server, "POST", path + "/hangup")
            assert status == 200 and body["result"] == "hung up"
            code, _ = await fake.closed()
    assert code == 1000


@pytest.mark.asyncio
async def test_plivo_dtmf_goes_over_the_media_stream() -> None:
    bot = RecordingBot(echo=False)
    async with running_server(bot, require_auth=False, api_token=API) as server:
        fake = FakeProvider("plivo")
        async with fake.connect(server):
            await fake.open()
            fake.start_pump()
            await bot.started.wait()
            status, body = await api(server, "POST", f"/calls/{fake.call_id}/dtmf",
                                     {"digits": "12#"})
            assert (status, body["via"]) == (200, "stream")
            await fake.wait_until(lambda f: "dtmf" in f.kinds())
            sent = [m for m in fake.received if m.get("event") == "sendDTMF"]
            assert sent[0]["dtmf"] == "12#"


@pytest.mark.asyncio
async def test_telnyx_dtmf_and_transfer_go_through_call_control_rest() -> None:
    bot = RecordingBot(echo=False)
    async with FakeTelnyx("KEY123", "conn-1") as rest:
        creds = ProviderCredentials(telnyx_api_key="KEY123", telnyx_api_base_url=rest.base_url)
        async with running_server(bot, require_auth=False, api_token=API,
                                  credentials=creds) as server:
            fake = FakeProvider("telnyx", call_id=rest.live_call())
            async with fake.connect(server):
                await fake.open()
                fake.start_pump()
                await bot.started.wait()
                path = f"/calls/{fake.call_id}"
                status, body = await api(server, "POST", path + "/dtmf", {"digits": "9*"})
                assert status == 200, body
                to = "sip:agent@example.com"
                status, body = await api(server, "POST", path + "/transfer", {"to": to})
                assert status == 200, body
    commands = rest.calls[fake.call_id]["commands"]
    assert ("send_dtmf", "9*") in [(a, b.get("digits")) for a, b in commands]
    assert ("transfer", to) in [(a, b.get("to")) for a, b in commands]


@pytest.mark.asyncio
async def test_twilio_transfer_updates_the_call_with_a_dial() -> None:
    bot = RecordingBot(echo=False)
    async with FakeTwilio(ACCOUNT, "tok") as rest:
        creds = ProviderCredentials(twilio_account_sid=ACCOUNT, twilio_auth_token="tok",
                                    twilio_api_base_url=rest.base_url)
        async with running_server(bot, require_auth=False, api_token=API,
                                  credentials=creds) as server:
            fake = FakeProvider("twilio", call_id=rest.live_call())
            async with fake.connect(server):
                await fake.open()
                fake.start_pump()
                await bot.started.wait()
                status, body = await api(server, "POST", f"/calls/{fake.call_id}/transfer",
                                         {"to": "+15551230000"})
                assert status == 200, body
    twiml = rest.calls[fake.call_id]["twiml"]
    assert re.search(r"<Dial>\+15551230000</Dial>", twiml), twiml


@pytest.mark.asyncio
async def test_plivo_transfer_points_the_a_leg_at_a_signed_dial_document() -> None:
    bot = RecordingBot(echo=False)
    async with FakePlivo("MAID", "tok") as rest:
        creds = ProviderCredentials(plivo_auth_id="MAID", plivo_auth_token="tok",
                                    plivo_api_base_url=rest.base_url)
        async with running_server(bot, require_auth=False, api_token=API, credentials=creds,
                                  public_url="http://127.0.0.1:1") as server:
            fake = FakeProvider("plivo", call_id=rest.live_call())
            async with fake.connect(server):
                await fake.open()
                fake.start_pump()
                await bot.started.wait()
                status, body = await api(server, "POST", f"/calls/{fake.call_id}/transfer",
                                         {"to": "+15551230000"})
                assert status == 200, body
            [(action, request)] = rest.calls[fake.call_id]["actions"]
            assert action == "transfer" and request["legs"] == "aleg"
            # What Plivo then fetches from us: the <Dial>, and nothing for a forged URL.
            url = request["aleg_url"].replace("http://127.0.0.1:1", "")
            async with aiohttp.ClientSession() as http:
                base = f"http://127.0.0.1:{server.port}"
                async with http.post(base + url) as response:
                    assert response.status == 200
                    document = await response.text()
                async with http.post(base + url[:-3] + "abc") as response:
                    assert response.status == 403
    assert "<Dial><Number>15551230000</Number></Dial>" in document


@pytest.mark.asyncio
async def test_two_streams_of_one_call_the_newest_takes_commands_then_the_other() -> None:
    """A call may have two streams (a listen-only fork beside the talking one): commands
    go to the newest, and to the other once the newest ended."""
    got: list[tuple[str, Any]] = []

    async def bot(call: Call) -> None:
        async for event in call:
            if isinstance(event, BotMessage):
                got.append((call.info.stream_id, event.data))

    async with running_server(bot, require_auth=False, api_token=API) as server:
        first = FakeProvider("twilio")
        second = FakeProvider("twilio", call_id=first.call_id)
        path = f"/calls/{first.call_id}/message"
        async with first.connect(server):
            await first.open()
            first.start_pump()
            await _until(lambda: len(server.calls) == 1)
            async with second.connect(server):
                await second.open()
                second.start_pump()
                await _until(lambda: len(server.calls) == 2)
                assert (await api(server, "POST", path, {"to": "newest"}))[0] == 200
                await second.send(second.stop())
                assert (await second.closed())[0] == 1000
            assert (await api(server, "POST", path, {"to": "first"}))[0] == 200
            await _until(lambda: len(got) == 2)
    assert got == [(second.stream_id, {"to": "newest"}), (first.stream_id, {"to": "first"})]


async def _until(predicate: Any) -> None:
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.01)
