"""The softphone's and the dashboard's files, ``/phone/config`` and ``POST /phone/token``.

Real servers on 127.0.0.1 and aiohttp clients: what is served, with which headers, under
each mode of the access rule (server/access.py), and a stream token the phone obtains
opening a call on a server that requires stream tokens. The pages in a browser:
tests/test_e2e_browser.py.
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _util_server import FakeProvider, running_server, ulaw_payload
from multidict import CIMultiDict

from mediastream.config import ProviderCredentials
from mediastream.echo import echo_bot
from mediastream.server.pages import STATIC_FILES, static_file

TOKEN = "page-api-token"
ROOT = Path(__file__).resolve().parent.parent


async def _request(port: int, method: str, path: str, **kwargs: Any,
                   ) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as http, \
            http.request(method, f"http://127.0.0.1:{port}{path}", **kwargs) as r:
        return r.status, CIMultiDict(r.headers), await r.read()


def test_the_files_ship_in_the_package() -> None:
    """Found through importlib.resources (as from a wheel), and declared package data so
    a non-editable install carries them."""
    web = resources.files("mediastream").joinpath("web")
    for name in STATIC_FILES:
        assert web.joinpath(name).is_file(), name
    shipped = {p.name for p in (ROOT / "mediastream" / "web").iterdir()}
    assert shipped == set(STATIC_FILES), "every file in mediastream/web is served, no other"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "web/*" in pyproject["tool"]["setuptools"]["package-data"]["mediastream"]


@pytest.mark.asyncio
async def test_files_are_served_unmodified_with_their_types_and_validators() -> None:
    async with running_server(echo_bot) as server:
        paths = {"/phone": "phone.html", "/dashboard": "dashboard.html",
                 **{f"/phone/{n}": n for n in STATIC_FILES if not n.endswith(".html")}}
        for path, name in paths.items():
            status, headers, body = await _request(server.port, "GET", path)
            on_disk = (ROOT / "mediastream" / "web" / name).read_bytes()
            assert status == 200 and body == on_disk, path
            assert headers["Content-Type"] == STATIC_FILES[name]
            assert headers["Cache-Control"] == "no-cache"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["ETag"] == static_file(name)[1]
            if name.endswith(".html"):
                assert "default-src 'self'" in headers["Content-Security-Policy"]
            status, _, body = await _request(server.port, "GET", path,
                                             headers={"If-None-Match": headers["ETag"]})
            assert status == 304 and body == b""
        assert "text/javascript" in STATIC_FILES["worklet.js"]
        for path in ("/phone/phone.html", "/phone/nope.js", "/phone/..%2Fcalls.py",
                     "/phone/%2e%2e%2fserver%2fcalls.py"):
            status, _, _ = await _request(server.port, "GET", path)
            assert status == 404, path


@pytest.mark.asyncio
async def test_config_and_token_when_open() -> None:
    async with running_server(echo_bot) as server:
        status, _, body = await _request(server.port, "GET", "/phone/config")
        assert status == 200 and b'"access": "open"' in body and b'"stream_tokens": false' in body
        status, _, body = await _request(server.port, "POST", "/phone/token",
                                         json={"provider": "telnyx", "call_id": "v3:abc"})
        assert status == 200 and b'"token": "1x' in body


@pytest.mark.asyncio
@pytest.mark.parametrize("changes", [
    {"host": "0.0.0.0"},
    {"credentials": ProviderCredentials(telnyx_api_key="KEY")},
    {"require_auth": True},
], ids=["public-bind", "credentials", "require-auth"])
async def test_everything_is_off_without_a_token(changes: dict[str, Any]) -> None:
    async with running_server(echo_bot, **changes) as server:
        for method, path in (("GET", "/phone"), ("GET", "/dashboard"),
                             ("GET", "/phone/worklet.js"), ("GET", "/phone/config"),
                             ("GET", "/calls"), ("POST", "/phone/token")):
            status, _, body = await _request(server.port, method, path)
            assert status == 403, (method, path)
            assert b"MEDIASTREAM_API_TOKEN" in body


@pytest.mark.asyncio
async def test_token_mode_refusals() -> None:
    async with running_server(echo_bot, host="0.0.0.0", api_token=TOKEN) as server:
        port = server.port
        # The pages' code is served (it holds nothing); what they ask for needs the token.
        for path in ("/phone", "/dashboard", "/phone/phone.js"):
            assert (await _request(port, "GET", path))[0] == 200
        status, _, body = await _request(port, "GET", "/phone/config")
        assert status == 200 and b'"access": "token"' in body
        good = {"provider": "plivo", "call_id": "c-1"}
        status, headers, _ = await _request(port, "POST", "/phone/token", json=good)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        status, _, _ = await _request(port, "POST", "/phone/token", json=good,
                                      headers={"Authorization": "Bearer wrong"})
        assert status == 403
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for bad in (b"not json", b"[]", b'{"provider": "skype", "call_id": "x"}',
                    b'{"provider": "plivo"}', b'{"provider": "plivo", "call_id": ""}',
                    b'{"provider": "plivo", "call_id": "' + b"x" * 129 + b'"}'):
            status, _, body = await _request(port, "POST", "/phone/token", data=bad,
                                             headers=auth)
            assert status == 400, (bad, body)
        status, _, body = await _request(port, "POST", "/phone/token", json=good, headers=auth)
        assert status == 200 and b'"token": "1p' in body


@pytest.mark.asyncio
async def test_the_phone_s_stream_token_opens_a_call_that_needs_one() -> None:
    """With MEDIASTREAM_API_TOKEN and stream authentication on, the token the page gets
    from POST /phone/token (bound to its call id) starts the call; none is refused."""
    async with running_server(echo_bot, api_token=TOKEN, require_auth=True) as server:
        fake = FakeProvider("telnyx")
        status, _, body = await _request(
            server.port, "POST", "/phone/token", json={"provider": "telnyx",
                                                       "call_id": fake.call_id},
            headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        token = json.loads(body)["token"]
        async with fake.connect(server, path=f"/ws/telnyx?token={token}"):
            await fake.open()
            fake.start_pump()
            sent = ulaw_payload(10)
            for i in range(10):
                await fake.send(fake.media(sent[i * 160:(i + 1) * 160]))
            assert await fake.wait_audio(1600) == sent
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000
        refused = FakeProvider("telnyx")
        async with refused.connect(server):
            await refused.open()
            assert (await refused.closed())[0] == 1008
