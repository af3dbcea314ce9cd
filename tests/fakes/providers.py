"""Local aiohttp servers that play Twilio's, Telnyx's and Plivo's REST APIs.

Each fake checks what the real API checks, as protocols.md §1.6, §2.6 and §3.6 (and the
providers' references cited there) document it: method and exact path (Plivo's trailing
slash included), the authentication scheme, the body encoding (Twilio form, Telnyx and
Plivo JSON), the required fields and their enumerations. It keeps the state of the calls
it knows and answers with the documented bodies, including the "already ended" errors
(Twilio 404/20404 and 400/21220, Telnyx 422/"90018", Plivo 404).

``script(status, body, headers, times)`` makes the next requests fail as given (5xx,
429 with ``Retry-After``) before normal handling, for the retry tests. Every request is
recorded in ``requests`` (including scripted ones).

Assumptions where the providers' docs are silent (protocols.md marks them UNCONFIRMED):
updating a finished Twilio call answers 400/21220; a Telnyx command on an unknown call id
answers 404/"10005".
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    form: list[tuple[str, str]] = field(default_factory=list)
    json: Any = None


class _Refused(Exception):
    """A check failed: the fake answers ``response`` (the provider's error body)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass
class _Scripted:
    status: int
    body: Any
    headers: dict[str, str]
    delay: float = 0.0


class FakeAPI:
    """Common plumbing: a server on 127.0.0.1:0, request log, scripted failures."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._scripted: list[_Scripted] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def script(
        self,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``times`` requests with ``status``/``body`` (JSON) instead,
        after ``delay`` seconds (to exercise client timeouts)."""
        self._scripted.extend(
            _Scripted(status, body, dict(headers or {}), delay) for _ in range(times)
        )

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        record = Recorded(request.method, request.raw_path, dict(request.headers), body)
        if request.content_type == "application/x-www-form-urlencoded":
            record.form = parse_qsl(body.decode(), keep_blank_values=True)
        elif request.content_type == "application/json" and body:
            try:
                record.json = json.loads(body)
            except ValueError:
                record.json = None
        self.requests.append(record)
        if self._scripted:
            scripted = self._scripted.pop(0)
            if scripted.delay:
                await asyncio.sleep(scripted.delay)
            if scripted.body is None:
                return web.Response(status=scripted.status, headers=scripted.headers)
            return web.json_response(
                scripted.body, status=scripted.status, headers=scripted.headers
            )
        try:
            return await handler(request)
        except _Refused as refused:
            return refused.response

    def last(self) -> Recorded:
        return self.requests[-1]


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(login, password)`` of an ``Authorization: Basic`` header (RFC 7617), else None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        login, sep, password = (
            base64.b64decode(value.strip(), validate=True).decode().partition(":")
        )
    except (ValueError, UnicodeDecodeError):
        return None
    return (login, password) if sep else None


def _basic_auth(request: web.Request) -> tuple[str, str] | None:
    return basic_credentials(request.headers.get("Authorization"))


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    """The body as a JSON object (an empty body is ``{}``); None if it is not one."""
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _well_formed_xml(text: str) -> bool:
    try:
        ET.fromstring(text)
    except ET.ParseError:
        return False
    return True


# ---------------------------------------------------------------------------- Twilio

_TWILIO_LIVE = ("queued", "ringing", "in-progress")


class FakeTwilio(FakeAPI):
    """Twilio's ``/2010-04-01`` Calls and Recordings resources (form bodies, Basic auth)."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        #: call SID -> {"status", "twiml", "url", "to", "from", "recordings": {sid: status}}
        self.calls: dict[str, dict[str, Any]] = {}

    def live_call(self, status: str = "in-progress") -> str:
        return self._new_call(status)

    def _new_call(self, status: str, **fields: Any) -> str:
        sid = "CA" + uuid.uuid4().hex
        self.calls[sid] = {"status": status, **fields, "recordings": {}}
        return sid

    def routes(self, app: web.Application) -> None:
        prefix = "/2010-04-01/Accounts/{account}"
        app.router.add_post(prefix + "/Calls.json", self._create)
        app.router.add_post(prefix + "/Calls/{call}.json", self._update)
        app.router.add_post(prefix + "/Calls/{call}/Recordings.json", self._record)
        app.router.add_post(prefix + "/Calls/{call}/Recordings/{rec}.json", self._update_recording)

    @staticmethod
    def _error(status: int, code: int, message: str) -> web.Response:
        return web.json_response(
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status=status,
        )

    async def _check(self, request: web.Request) -> dict[str, list[str]]:
        """Auth, account and form encoding; the form's values by name."""
        if _basic_auth(request) != (self.account_sid, self.auth_token):
            raise _Refused(self._error(401, 20003, "Authenticate"))
        if request.match_info["account"] != self.account_sid:
            raise _Refused(self._error(404, 20404, "The requested resource was not found"))
        if request.content_type != "application/x-www-form-urlencoded":
            raise _Refused(self._error(400, 20001, "Bodies must be form-encoded"))
        form: dict[str, list[str]] = {}
        for name, value in parse_qsl((await request.read()).decode(), keep_blank_values=True):
            form.setdefault(name, []).append(value)
        return form

    def _call_json(self, sid: str) -> dict[str, Any]:
        call = self.calls[sid]
        return {
            "sid": sid,
            "account_sid": self.account_sid,
            "status": call["status"],
            "to": call.get("to"),
            "from": call.get("from"),
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json",
        }

    async def _create(self, request: web.Request) -> web.Response:
        form = await self._check(request)
        if not form.get("To"):
            return self._error(400, 21201, "No 'To' number is specified")
        if not form.get("From"):
            return self._error(400, 21603, "A 'From' phone number is required")
        sources = [k for k in ("Url", "Twiml", "ApplicationSid") if k in form]
        if len(sources) != 1:
            return self._error(400, 21205, "Exactly one of Url, Twiml, ApplicationSid is required")
        twiml = form.get("Twiml", [None])[0]
        if twiml is not None:
            if len(twiml) > 4000:
                return self._error(400, 32018, "Twiml length exceeds 4000 characters")
            if not _well_formed_xml(twiml):
                return self._error(400, 12100, "Document parse failure")
        for event in form.get("StatusCallbackEvent", []):
            if event not in ("initiated", "ringing", "answered", "completed"):
                return self._error(400, 21626, "Invalid StatusCallbackEvent")
        sid = self._new_call("queued", **{
            "to": form["To"][0],
            "from": form["From"][0],
            "twiml": twiml,
            "url": form.get("Url", [None])[0],
        })
        return web.json_response(self._call_json(sid), status=201)

    async def _update(self, request: web.Request) -> web.Response:
        form = await self._check(request)
        sid = request.match_info["call"]
        call = self.calls.get(sid)
        if call is None:
            return self._error(
                404, 20404, f"The requested resource /Calls/{sid}.json was not found"
            )
        status = form.get("Status", [None])[0]
        if status not in (None, "completed", "canceled"):
            return self._error(400, 21218, "Invalid Status: use completed or canceled")
        if call["status"] not in _TWILIO_LIVE:
            return self._error(400, 21220, "Call is not in-progress. Cannot redirect.")
        if status == "completed":
            call["status"] = "completed"
        elif status == "canceled" and call["status"] in ("queued", "ringing"):
            call["status"] = "canceled"
        if "Twiml" in form:
            if not _well_formed_xml(form["Twiml"][0]):
                return self._error(400, 12100, "Document parse failure")
            call["twiml"] = form["Twiml"][0]
        if "Url" in form:
            call["url"] = form["Url"][0]
        return web.json_response(self._call_json(sid))

    async def _record(self, request: web.Request) -> web.Response:
        form = await self._check(request)
        sid = request.match_info["call"]
        call = self.calls.get(sid)
        if call is None:
            return self._error(404, 20404, "The requested resource was not found")
        if call["status"] != "in-progress":
            return self._error(400, 21220, "Call is not in-progress")
        channels = form.get("RecordingChannels", ["mono"])[0]
        if channels not in ("mono", "dual"):
            return self._error(400, 21219, "Invalid RecordingChannels")
        rec = "RE" + uuid.uuid4().hex
        call["recordings"][rec] = "in-progress"
        return web.json_response(
            {
                "sid": rec,
                "call_sid": sid,
                "status": "in-progress",
                "channels": 2 if channels == "dual" else 1,
            },
            status=201,
        )

    async def _update_recording(self, request: web.Request) -> web.Response:
        form = await self._check(request)
        call = self.calls.get(request.match_info["call"])
        rec = request.match_info["rec"]
        if call is None:
            return self._error(404, 20404, "The requested resource was not found")
        recordings: dict[str, str] = call["recordings"]
        if rec == "Twilio.CURRENT":
            live = [r for r, s in recordings.items() if s != "stopped"]
            if not live:
                return self._error(404, 20404, "No current recording")
            rec = live[-1]
        if rec not in recordings:
            return self._error(404, 20404, "The requested resource was not found")
        status = form.get("Status", [None])[0]
        if status not in ("stopped", "paused", "in-progress"):
            return self._error(400, 21218, "Invalid Status")
        recordings[rec] = status
        return web.json_response({"sid": rec, "status": status})


# ---------------------------------------------------------------------------- Telnyx

_TELNYX_CODECS = ("PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16")
_TELNYX_DTMF = re.compile(r"[0-9A-D*#wW]+")


class FakeTelnyx(FakeAPI):
    """Telnyx ``/v2`` Call Control commands and TeXML calls (JSON bodies, Bearer auth)."""

    def __init__(self, api_key: str, connection_id: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.connection_id = connection_id
        #: call control id -> {"alive": bool, "state", "texml", "stream", "commands": [...]}
        self.calls: dict[str, dict[str, Any]] = {}

    def live_call(self, state: str = "answered") -> str:
        return self._new_call(state)

    def _new_call(self, state: str, **fields: Any) -> str:
        call_id = "v3:" + uuid.uuid4().hex
        self.calls[call_id] = {
            "alive": True, "state": state, **fields, "commands": [], "command_ids": set()
        }
        return call_id

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/calls", self._dial)
        app.router.add_post("/v2/texml/calls/{app}", self._texml_call)
        app.router.add_post("/v2/calls/{call}/actions/{action}", self._action)

    @staticmethod
    def _error(status: int, code: str, title: str, detail: str = "") -> web.Response:
        return web.json_response(
            {"errors": [{"code": code, "title": title, "detail": detail or title}]}, status=status
        )

    async def _check(self, request: web.Request) -> dict[str, Any]:
        """Bearer auth and a JSON object body; the body."""
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            raise _Refused(self._error(401, "10009", "Authentication failed"))
        if request.content_type != "application/json":
            raise _Refused(self._error(415, "10015", "Bodies must be application/json"))
        body = await _json_object(request)
        if body is None:
            raise _Refused(self._error(400, "10015", "Invalid JSON"))
        return body

    def _check_stream(self, body: dict[str, Any]) -> None:
        url = body.get("stream_url")
        if url is None:
            return
        if not isinstance(url, str) or not url.startswith(("wss://", "ws://")):
            raise self._invalid("stream_url must be a WebSocket URL")
        if body.get("stream_track", "inbound_track") not in (
            "inbound_track",
            "outbound_track",
            "both_tracks",
        ):
            raise self._invalid("Invalid stream_track")
        if body.get("stream_bidirectional_mode", "mp3") not in ("mp3", "rtp"):
            raise self._invalid("Invalid stream_bidirectional_mode")
        for key in ("stream_codec", "stream_bidirectional_codec"):
            if key in body and body[key] not in (*_TELNYX_CODECS, "default"):
                raise self._invalid(f"Invalid {key}")
        rate = body.get("stream_bidirectional_sampling_rate", 8000)
        if rate not in (8000, 16000, 22050, 24000, 48000):
            raise self._invalid("Invalid stream_bidirectional_sampling_rate")
        if body.get("stream_bidirectional_target_legs", "opposite") not in (
            "both",
            "self",
            "opposite",
        ):
            raise self._invalid("Invalid stream_bidirectional_target_legs")

    def _invalid(self, title: str) -> _Refused:
        return _Refused(self._error(422, "10015", title))

    async def _dial(self, request: web.Request) -> web.Response:
        body = await self._check(request)
        if body.get("connection_id") != self.connection_id:
            return self._error(422, "10015", "Invalid connection_id")
        for key in ("to", "from"):
            if not isinstance(body.get(key), str) or not body[key]:
                return self._error(422, "10015", f"{key} is required")
        self._check_stream(body)
        call_id = self._new_call("dialing", stream=body)
        return web.json_response(
            {
                "data": {
                    "call_control_id": call_id,
                    "call_leg_id": str(uuid.uuid4()),
                    "call_session_id": str(uuid.uuid4()),
                    "is_alive": False,
                    "record_type": "call",
                }
            }
        )

    async def _texml_call(self, request: web.Request) -> web.Response:
        body = await self._check(request)
        if request.match_info["app"] != self.connection_id:
            return self._error(404, "10005", "Resource not found")
        # Parameter names are case-sensitive (From, To, Texml, Url, Method).
        for key in ("From", "To"):
            if not isinstance(body.get(key), str) or not body[key]:
                return self._error(422, "10015", f"{key} is required")
        texml = body.get("Texml")
        if texml is not None and not _well_formed_xml(texml):
            return self._error(422, "10015", "Texml is not well-formed XML")
        call_id = self._new_call("queued", texml=texml)
        return web.json_response(
            {"call_sid": call_id, "from": body["From"], "to": body["To"], "status": "queued"}
        )

    async def _action(self, request: web.Request) -> web.Response:
        body = await self._check(request)
        call_id, action = request.match_info["call"], request.match_info["action"]
        call = self.calls.get(call_id)
        if call is None:
            return self._error(404, "10005", "Resource not found", "Call not found")
        if not call["alive"]:
            return self._error(
                422,
                "90018",
                "Call has already ended",
                "This call is no longer active and can't receive commands.",
            )
        command_id = body.get("command_id")
        if command_id is not None and command_id in call["command_ids"]:
            return web.json_response({"data": {"result": "ok"}})  # duplicate: ignored
        if action == "hangup":
            call["alive"] = False
        elif action == "answer":
            self._check_stream(body)
            call["state"] = "answered"
            call["stream"] = body
        elif action == "transfer":
            if not body.get("to"):
                return self._error(422, "10015", "to is required")
        elif action == "send_dtmf":
            if not isinstance(body.get("digits"), str) or not _TELNYX_DTMF.fullmatch(
                body["digits"]
            ):
                return self._error(422, "10015", "Invalid digits")
        elif action == "record_start":
            if body.get("format") not in ("wav", "mp3") or body.get("channels") not in (
                "single",
                "dual",
            ):
                return self._error(422, "10015", "format and channels are required")
        elif action != "record_stop":
            return self._error(404, "10005", "Resource not found")
        if command_id is not None:
            call["command_ids"].add(command_id)
        call["commands"].append((action, body))
        return web.json_response({"data": {"result": "ok"}})


# ----------------------------------------------------------------------------- Plivo


class FakePlivo(FakeAPI):
    """Plivo ``/v1/Account/{auth_id}/`` Call resources (JSON, Basic auth, trailing slash)."""

    def __init__(self, auth_id: str, auth_token: str) -> None:
        super().__init__()
        self.auth_id = auth_id
        self.auth_token = auth_token
        #: call uuid -> {"alive", "answer_url", ...}; request uuid -> same for unanswered
        self.calls: dict[str, dict[str, Any]] = {}
        self.requests_pending: dict[str, dict[str, Any]] = {}

    def live_call(self) -> str:
        call_id = str(uuid.uuid4())
        self.calls[call_id] = {"alive": True, "actions": []}
        return call_id

    def routes(self, app: web.Application) -> None:
        prefix = "/v1/Account/{account}"
        app.router.add_post(prefix + "/Call/", self._create)
        app.router.add_delete(prefix + "/Call/{call}/", self._hangup)
        app.router.add_post(prefix + "/Call/{call}/", self._transfer)
        app.router.add_post(prefix + "/Call/{call}/DTMF/", self._dtmf)
        app.router.add_post(prefix + "/Call/{call}/Record/", self._record)
        app.router.add_delete(prefix + "/Call/{call}/Record/", self._record_stop)
        app.router.add_delete(prefix + "/Request/{request}/", self._cancel)

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"api_id": str(uuid.uuid4()), "error": message}, status=status)

    async def _check(self, request: web.Request, *, json_body: bool = True) -> dict[str, Any]:
        """Basic auth, account and (with ``json_body``) a JSON object body; the body."""
        if _basic_auth(request) != (self.auth_id, self.auth_token):
            raise _Refused(self._error(401, "authentication failed"))
        if request.match_info["account"] != self.auth_id:
            raise _Refused(self._error(404, "not found"))
        if not json_body:
            return {}
        if request.content_type != "application/json":
            raise _Refused(self._error(400, "Content-Type must be application/json"))
        body = await _json_object(request)
        if body is None:
            raise _Refused(self._error(400, "invalid JSON"))
        return body

    async def _create(self, request: web.Request) -> web.Response:
        body = await self._check(request)
        for key in ("from", "to", "answer_url"):
            if not isinstance(body.get(key), str) or not body[key]:
                return self._error(400, f"{key} is required")
        if body["from"].startswith("+") or any(d.startswith("+") for d in body["to"].split("<")):
            return self._error(400, "numbers take the country code without '+'")
        if not body["answer_url"].startswith(("http://", "https://")):
            return self._error(400, "answer_url must be an http(s) URL")
        if body.get("answer_method", "POST") not in ("GET", "POST"):
            return self._error(400, "answer_method must be GET or POST")
        request_uuid = str(uuid.uuid4())
        self.requests_pending[request_uuid] = dict(body)
        return web.json_response(
            {"api_id": str(uuid.uuid4()), "message": "call fired", "request_uuid": request_uuid},
            status=201,
        )

    async def _hangup(self, request: web.Request) -> web.Response:
        await self._check(request, json_body=False)
        self._live(request)["alive"] = False
        return web.Response(status=204)

    async def _cancel(self, request: web.Request) -> web.Response:
        await self._check(request, json_body=False)
        if self.requests_pending.pop(request.match_info["request"], None) is None:
            return self._error(404, "not found")
        return web.Response(status=204)

    def _live(self, request: web.Request) -> dict[str, Any]:
        """The live call the path names; 404 for an unknown or ended one."""
        call = self.calls.get(request.match_info["call"])
        if call is None or not call["alive"]:
            raise _Refused(self._error(404, "not found"))
        return call

    async def _transfer(self, request: web.Request) -> web.Response:
        body = await self._check(request)
        call = self._live(request)
        legs = body.get("legs")
        if legs not in ("aleg", "bleg", "both"):
            return self._error(400, "legs must be aleg, bleg or both")
        if legs in ("aleg", "both") and not body.get("aleg_url"):
            return self._error(400, "aleg_url is required")
        call["actions"].append(("transfer", body))
        return web.json_response(
            {"api_id": str(uuid.uuid4()), "message": "call transferred"}, status=202
        )

    async def _dtmf(self, request: web.Request) -> web.Response:
        body = await self._check(request)
        call = self._live(request)
        if not isinstance(body.get("digits"), str) or not re.fullmatch(
            r"[0-9*#wW]+", body["digits"]
        ):
            return self._error(400, "invalid digits")
        if body.get("leg", "aleg") not in ("aleg", "bleg"):
            return self._error(400, "leg must be aleg or bleg")
        call["actions"].append(("dtmf", body))
        return web.json_response(
            {"api_id": str(uuid.uuid4()), "message": "digits sent"}, status=202
        )

    async def _record(self, request: web.Request) -> web.Response:
        body = await self._check(request)
        call = self._live(request)
        recording_id = str(uuid.uuid4())
        call["actions"].append(("record", body))
        return web.json_response(
            {
                "api_id": str(uuid.uuid4()),
                "message": "call recording started",
                "recording_id": recording_id,
                "url": f"https://media.plivo.com/v1/Account/{self.auth_id}/Recording/{recording_id}.mp3",
            },
            status=202,
        )

    async def _record_stop(self, request: web.Request) -> web.Response:
        await self._check(request, json_body=False)
        call = self._live(request)
        call["actions"].append(("record_stop", None))
        return web.Response(status=204)
