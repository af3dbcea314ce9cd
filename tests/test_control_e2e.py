"""End to end through the real server: webhook -> answer document -> media stream -> bot.

A call can start a bot only with the document this server answered; a leaked stream URL
without its token, or a replayed one, is refused (403 before the upgrade where the token
is visible, close 1008 after ``start`` otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import time
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import pytest
import websockets
from _util_server import FakeProvider, RecordingBot, running_server, scaled
from nacl.signing import SigningKey
from plivo.utils.signature_v3 import construct_post_url, get_signature_v3
from twilio.request_validator import RequestValidator

from mediastream.config import ProviderCredentials

TWILIO_TOKEN = "e2e-twilio-token"
SIGNING = SigningKey(bytes(range(1, 33)))
PLIVO_TOKEN = "e2e-plivo-token"
CREDENTIALS = ProviderCredentials(
    twilio_account_sid="AC" + "4" * 32,
    twilio_auth_token=TWILIO_TOKEN,
    telnyx_public_key=base64.b64encode(bytes(SIGNING.verify_key)).decode(),
    plivo_auth_id="MA" + "4" * 18,
    plivo_auth_token=PLIVO_TOKEN,
)


async def _answer(port: int, provider: str, call_id: str) -> str:
    """Fetch the answer document as the provider would, signed as it would sign it."""
    base = f"http://127.0.0.1:{port}"
    path = f"/{provider}?tenant=acme"
    url = base + path  # no public URL configured: the Host header is the public host
    if provider == "twilio":
        form = {"CallSid": call_id, "From": "+15551230001", "To": "+15559870002"}
        headers = {
            "X-Twilio-Signature": RequestValidator(TWILIO_TOKEN).compute_signature(url, form)
        }
        body: Any = form
    elif provider == "telnyx":
        form = {"CallSid": call_id, "From": "+15551230001", "To": "+15559870002"}
        body = urlencode(form).encode()
        ts = str(int(time.time()))
        signature = SIGNING.sign(ts.encode() + b"|" + body).signature
        headers = {
            "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
            "telnyx-timestamp": ts,
            "Content-Type": "application/x-www-form-urlencoded",
        }
    else:
        form = {"CallUUID": call_id, "From": "15551230001", "To": "15559870002"}
        nonce = "12345678901234567890"
        signed = construct_post_url(url, dict(form)).decode()
        headers = {
            "X-Plivo-Signature-V3": get_signature_v3(
                PLIVO_TOKEN.encode(), signed, nonce.encode()
            ).decode(),
            "X-Plivo-Signature-V3-Nonce": nonce,
        }
        body = form
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text()


def _stream_of(provider: str, doc: str) -> tuple[str, dict[str, str]]:
    """(stream URL, custom parameters as the provider would deliver them)."""
    root = ET.fromstring(doc)
    if provider == "plivo":
        stream = root.find("Stream")
        assert stream is not None
        pairs = stream.attrib["extraHeaders"].split(",")
        return stream.text or "", dict(pair.split("=", 1) for pair in pairs)
    stream = root.find("Connect/Stream")
    assert stream is not None
    params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    return stream.attrib["url"], params


def _target(url: str) -> str:
    split = urlsplit(url)
    return split.path + ("?" + split.query if split.query else "")


def _twilio_upgrade_headers(url: str) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(TWILIO_TOKEN).compute_signature(url, {})}


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", ["twilio", "telnyx", "plivo"])
async def test_answered_call_reaches_the_bot_once(provider: str) -> None:
    bot = RecordingBot()
    async with running_server(bot=bot, credentials=CREDENTIALS) as server:
        fake = FakeProvider(provider)
        doc = await _answer(server.port, provider, fake.call_id)
        url, params = _stream_of(provider, doc)
        assert url.startswith(f"ws://127.0.0.1:{server.port}/ws/{provider}")
        headers = _twilio_upgrade_headers(url) if provider == "twilio" else {}
        fake.params = params
        async with fake.connect(server, _target(url), additional_headers=headers):
            await fake.open()
            async with asyncio.timeout(scaled(5)):
                await bot.started.wait()
            info = bot.calls[0].info
            assert info.call_id == fake.call_id
            # The bot sees the caller's data and the webhook's query, never our token.
            assert info.custom_parameters.get("tenant") == "acme"
            assert not {"_token", "token"} & set(info.custom_parameters)
            await fake.send(fake.stop())
        # The same document cannot start a second stream.
        replay = FakeProvider(provider, call_id=fake.call_id, params=params)
        if provider == "twilio":
            async with replay.connect(server, _target(url), additional_headers=headers):
                await replay.open()
                code, _reason = await replay.closed()
            assert code == 1008
        else:
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with replay.connect(server, _target(url)):
                    pass
            assert refused.value.response.status_code == 403
        assert len(bot.calls) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", ["twilio", "telnyx", "plivo"])
async def test_leaked_stream_url_cannot_start_a_bot(provider: str) -> None:
    bot = RecordingBot()
    async with running_server(bot=bot, credentials=CREDENTIALS) as server:
        fake = FakeProvider(provider, params={"tenant": "acme"})
        url = f"ws://127.0.0.1:{server.port}/ws/{provider}"
        if provider == "twilio":
            # Unsigned: refused before the upgrade.
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with fake.connect(server):
                    pass
            assert refused.value.response.status_code == 403
            headers = _twilio_upgrade_headers(url)  # even correctly signed, no token: 1008
        else:
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with fake.connect(server, "/ws/" + provider + "?token=" + "1" * 90):
                    pass
            assert refused.value.response.status_code == 403
            headers = {}
        async with fake.connect(server, additional_headers=headers):
            await fake.open()
            code, _reason = await fake.closed()
        assert code == 1008
        assert not bot.calls
