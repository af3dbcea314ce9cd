"""Hostile peers against a running server: the corpus, and ``python -m bench hostile``.

Each :class:`Case` plays one kind of bad peer and reports the answer it got: an HTTP
status (``HTTP 400``), a WebSocket close code (``close 1007``), ``dropped`` (the server
cut the TCP connection without an answer) or ``-`` (the peer left first and expects
nothing). The expected answer is the documented one (docs/design.md §3, README "Limits and
close codes"): 400 garbage or TLS on a plain port, 408 slow head or body, 431 huge head,
413 huge body, 404 unknown media path, 426 media path without upgrade, 403 forged
signature or token, 1002 out of order, 1003 binary or unsupported codec, 1007 bad JSON,
base64 or field, 1008 no/spent token or no start/media in time, 1009 too big. Cases the
server must *survive* without ending the call (absurd sequence numbers, floods of marks,
DTMF or unknown events, large custom parameters) end with the peer's own ``stop`` and
expect ``close 1000``.

The server under test authenticates every provider request (the production posture:
every provider's signing credential configured, :func:`hostile_credentials`), so a media
case first fetches a signed answer document and streams with the token it carries: the
hostile bytes come from a peer that passed authentication, the hardest place for them.

``python -m bench hostile`` starts ``mediastream serve --bot echo`` in its own process
with short timeouts, then per repetition: good calls alone (quiet), and good calls while
the corpus runs one case at a time and then all cases at once (storm). It prints one row
per case (expected, got, time, survived) and the good calls' latency and loss, quiet vs
under attack. ``tests/test_hostile.py`` runs the same corpus in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
import websockets
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from bench.harness import LOST_FRAME_MS
from mediastream.caller import ProbeConfig, RunReport, run_calls
from mediastream.caller.answer import StreamTarget, fetch_answer, webhook_form
from mediastream.caller.dialects import CallerDialect, dialect_for, new_identity
from mediastream.caller.signing import sign_webhook, twilio_signature
from mediastream.caller.simcall import default_formats
from mediastream.config import Config, ProviderCredentials
from mediastream.protocols.events import MediaFormat, ProviderName

__all__ = [
    "CASES",
    "PROVIDERS",
    "Case",
    "Result",
    "Target",
    "check_good_calls",
    "good_calls",
    "hostile_config",
    "hostile_credentials",
    "main",
    "run_case",
    "run_corpus",
    "secret_for",
]

PROVIDERS: tuple[ProviderName, ...] = ("twilio", "telnyx", "plivo")

# ------------------------------------------------------------------ the server under test

TWILIO_ACCOUNT = "AC" + "5" * 32
TWILIO_TOKEN = "hostile-bench-twilio-auth-token"
PLIVO_ID = "MAHOSTILEBENCH000000"
PLIVO_TOKEN = "hostile-bench-plivo-auth-token"
#: Base64 of a fixed Ed25519 seed: the caller signs Telnyx webhooks with it.
TELNYX_SEED = base64.b64encode(bytes(range(1, 33))).decode()

#: Short limits so slow cases end fast; the good calls stream continuously, unaffected.
LIMITS: dict[str, float] = {
    "head_timeout": 0.5,
    "handshake_timeout": 1.0,
    "first_message_timeout": 0.5,
    "idle_media_timeout": 1.0,
    "send_timeout": 1.0,
}
MAX_HEAD = 16 * 1024
MAX_MESSAGE = 64 * 1024


def _telnyx_public_key() -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(TELNYX_SEED))
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def hostile_credentials(twilio_api: str, plivo_api: str) -> ProviderCredentials:
    """Every provider's signing credential: webhooks and streams must authenticate.

    With REST credentials configured the server hangs up through the provider's API
    when a stream fails (the call may still be up): ``twilio_api``/``plivo_api`` must
    be local fakes of those APIs, never the real ones.
    """
    return ProviderCredentials(
        twilio_account_sid=TWILIO_ACCOUNT,
        twilio_auth_token=TWILIO_TOKEN,
        twilio_api_base_url=twilio_api,
        telnyx_public_key=_telnyx_public_key(),
        plivo_auth_id=PLIVO_ID,
        plivo_auth_token=PLIVO_TOKEN,
        plivo_api_base_url=plivo_api,
    )


def secret_for(provider: str) -> str:
    """What the simulated provider signs with (auth token, or the Telnyx seed)."""
    return {"twilio": TWILIO_TOKEN, "telnyx": TELNYX_SEED, "plivo": PLIVO_TOKEN}[provider]


def hostile_config(twilio_api: str, plivo_api: str, **changes: Any) -> Config:
    """The embedded server's config for the corpus (tests): auth on, short limits."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "bot": "echo",
        "credentials": hostile_credentials(twilio_api, plivo_api),
        "max_head_size": MAX_HEAD,
        "max_message_size": MAX_MESSAGE,
        "drain_timeout": 2.0,
        **LIMITS,
    }
    values.update(changes)
    return Config(**values)


def _server_env(rest_base_url: str) -> dict[str, str]:
    creds = hostile_credentials(rest_base_url, rest_base_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIASTREAM_", "TWILIO_",
                                                                     "TELNYX_", "PLIVO_"))}
    env.update({
        "TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_API_BASE_URL": rest_base_url,
        "TELNYX_PUBLIC_KEY": creds.telnyx_public_key or "",
        "PLIVO_AUTH_ID": PLIVO_ID,
        "PLIVO_AUTH_TOKEN": PLIVO_TOKEN,
        "PLIVO_API_BASE_URL": rest_base_url,
        "PYTHONUNBUFFERED": "1",
    })
    return env


class RestStub:
    """A stand-in for the providers' REST APIs for the bench: answers every hang-up.

    Not under test here (tests use the faithful fakes of tests/fakes/providers.py); it
    keeps the server's hang-ups after failed streams on this machine and counts them.
    """

    def __init__(self) -> None:
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def __aenter__(self) -> RestStub:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.Response:
        self.requests += 1
        await request.read()
        if request.method == "DELETE":
            return web.Response(status=204)
        return web.json_response({"status": "completed"})


# ------------------------------------------------------------------ peers


@dataclass
class Target:
    """Where the corpus attacks, and the HTTP session it fetches answer documents with."""

    host: str
    port: int
    http: aiohttp.ClientSession
    limits: dict[str, float] = field(default_factory=lambda: dict(LIMITS))

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def deadline(self) -> float:
        """Longest any case may take: the slowest server timeout plus slack."""
        return max(self.limits.values()) + 3.0


@dataclass
class Stream:
    """An authenticated media WebSocket, opened the way the provider would open it."""

    ws: ClientConnection
    dialect: CallerDialect
    url: str
    headers: dict[str, str]
    parameters: dict[str, str]

    async def send(self, *messages: bytes | str) -> None:
        """Send text frames; stops quietly once the server has closed."""
        with contextlib.suppress(websockets.ConnectionClosed):
            for message in messages:
                await self.ws.send(message.decode() if isinstance(message, bytes) else message)

    async def open(self) -> None:
        """``connected`` (where the dialect has one) and ``start``."""
        await self.send(*self.dialect.opening(int(time.time() * 1000)))

    def media(self, payload: bytes, n: int = 1) -> list[bytes]:
        """``n`` media messages carrying ``payload`` each."""
        b64 = base64.b64encode(payload)
        return [self.dialect.media(b64, 20 * i) for i in range(n)]

    def silence(self, n: int = 1) -> list[bytes]:
        """``n`` 20 ms frames of silence in the stream's inbound format."""
        fmt = self.dialect.inbound
        size = fmt.sample_rate // 50 * (2 if fmt.encoding == "l16" else 1)
        fill = b"\x00" if fmt.encoding == "l16" else b"\xff" if fmt.encoding == "pcmu" else b"\xd5"
        return self.media(fill * size, n)


async def answered(
    target: Target, provider: ProviderName, *, call_id: str | None = None
) -> tuple[StreamTarget, Any]:
    """A signed incoming-call webhook's answer: the stream URL, parameters and headers."""
    identity = new_identity(provider, call_id=call_id)
    answer = await fetch_answer(
        target.http, f"{target.base}/{provider}", provider, identity,
        secret=secret_for(provider), timeout=target.deadline(),
    )
    return answer, identity


async def open_stream(
    target: Target,
    provider: ProviderName,
    *,
    answer: tuple[StreamTarget, Any] | None = None,
    parameters: dict[str, str] | None = None,
    inbound: MediaFormat | None = None,
) -> Stream:
    """Fetch a signed answer document and open its stream (nothing sent yet)."""
    stream_target, identity = answer or await answered(target, provider)
    default_in, default_out = default_formats(provider, "pcmu", 8000)
    fmt_in = inbound or stream_target.inbound or default_in
    fmt_out = stream_target.outbound or default_out
    params = dict(stream_target.parameters) if parameters is None else parameters
    dialect = dialect_for(provider)(identity, fmt_in, fmt_out, params)
    headers = dict(stream_target.headers)
    ws = await connect(
        stream_target.url, additional_headers=headers, max_size=None, compression=None,
        # A queue so deep it never fills: the peer reads everything (max_queue=None is
        # refused by the oldest websockets the project supports).
        open_timeout=target.deadline(), close_timeout=target.deadline(), max_queue=1 << 20,
    )
    return Stream(ws, dialect, stream_target.url, headers, params)


async def ws_answer(ws: ClientConnection, timeout: float) -> str:
    """Read until the server closes; ``close <code>``, or ``dropped`` without a close."""
    with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    # ws.protocol: the connection object itself has state/close_code only from
    # websockets 15 on; the sans-I/O protocol has them in every supported release.
    if ws.protocol.state is not State.CLOSED:
        await ws.close()
        return "open"
    code = ws.protocol.close_code  # 1006 (never sent on the wire): no close frame came
    return f"close {code}" if code != 1006 else "dropped"


async def upgrade_status(url: str, headers: dict[str, str], timeout: float) -> str:
    """``HTTP <status>`` of a refused upgrade, or the close code if it was accepted."""
    try:
        ws = await connect(url, additional_headers=headers, open_timeout=timeout)
    except websockets.InvalidStatus as exc:
        return f"HTTP {exc.response.status_code}"
    return await ws_answer(ws, timeout)


async def raw_exchange(
    target: Target,
    chunks: Sequence[bytes],
    *,
    gap: float = 0.0,
    keep_sending: bool = False,
    rcvbuf: int | None = None,
) -> str:
    """Send raw bytes (``gap`` seconds apart; cycled while ``keep_sending``) and read
    the answer: ``HTTP <status>``, ``closed`` (EOF without a byte) or ``reset``."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (target.host, target.port))
        reader, writer = await asyncio.open_connection(sock=sock)
    except OSError:
        sock.close()
        raise
    answer = asyncio.ensure_future(reader.read(4096))
    try:
        async with asyncio.timeout(target.deadline()):
            index = 0
            while not answer.done() and (index < len(chunks) or keep_sending):
                writer.write(chunks[index % len(chunks)])
                index += 1
                try:
                    await writer.drain()
                except OSError:
                    break
                # drain() does not yield while the server keeps reading: without a
                # yield here the answer would never be read.
                await asyncio.wait({answer}, timeout=gap)
            data = await answer
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    except TimeoutError:
        return "no answer"
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not data:
        return "closed"
    status = data.split(b"\r\n", 1)[0].split(b" ")
    return f"HTTP {int(status[1])}" if len(status) > 1 and status[1].isdigit() else "garbage"


def _upgrade_head(path: str, headers: dict[str, str] | None = None, key: bool = True) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Version: 13"]
    if key:
        lines.append("Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode())
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    """One client frame (RFC 6455 §5.2), masked as clients must; payload < 126 bytes."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def _signed_post(provider: ProviderName, url: str, *, forge: bool) -> tuple[bytes, dict[str, str]]:
    identity = new_identity(provider)
    form = webhook_form(provider, identity)
    body = urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    headers.update(sign_webhook(provider, secret_for(provider), url, form, body))
    if forge:
        # Flip one character of every signature header: what a forger without the key has.
        for name, value in list(headers.items()):
            if "signature" in name.lower() and "nonce" not in name.lower():
                headers[name] = ("A" if value[0] != "A" else "B") + value[1:]
    return body, headers


# ------------------------------------------------------------------ the corpus

CaseFn = Callable[[Target], Awaitable[str]]


@dataclass(frozen=True)
class Case:
    """One hostile peer: ``run(target)`` returns the answer it got."""

    name: str
    expect: str
    run: CaseFn
    #: Where the bytes go: ``http`` (before any upgrade) or a provider's media socket.
    layer: str = "http"


CASES: list[Case] = []


def case(name: str, expect: str, layer: str = "http") -> Callable[[CaseFn], CaseFn]:
    """Register a corpus case."""

    def register(fn: CaseFn) -> CaseFn:
        CASES.append(Case(name, expect, fn, layer))
        return fn

    return register


# --- before the upgrade: the demultiplexer and the HTTP side

TLS_CLIENT_HELLO = (
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)) + b"\x00\x00\x20"
    + bytes(range(0xC0, 0xE0)) + b"\x01\x00\x00\x58" + bytes(88)
)


@case("garbage bytes", "HTTP 400")
async def _garbage(t: Target) -> str:
    return await raw_exchange(t, [os.urandom(64).replace(b" ", b"\x00") + b"\r\n\r\n"])


@case("TLS ClientHello on the plain port", "HTTP 400")
async def _tls_hello(t: Target) -> str:
    return await raw_exchange(t, [TLS_CLIENT_HELLO])


@case("HTTP/2 preface", "HTTP 400")
async def _h2_preface(t: Target) -> str:
    return await raw_exchange(t, [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"])


@case("oversized request head", "HTTP 431")
async def _huge_head(t: Target) -> str:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * MAX_HEAD + b"\r\n\r\n"
    return await raw_exchange(t, [head[i : i + 4096] for i in range(0, len(head), 4096)])


@case("endless header lines", "HTTP 431")
async def _endless_headers(t: Target) -> str:
    return await raw_exchange(t, [b"GET /healthz HTTP/1.1\r\n", b"X-A: b\r\n" * 512],
                              keep_sending=True)


@case("slowloris head", "HTTP 408")
async def _slowloris(t: Target) -> str:
    return await raw_exchange(t, [b"GET /healthz HTTP/1.1\r\n"] + [b"X-A: b\r\n"] * 100, gap=0.05)


@case("client that never sends", "HTTP 408")
async def _never_sends(t: Target) -> str:
    return await raw_exchange(t, [b""])


@case("connect and vanish", "-")
async def _vanish(t: Target) -> str:
    _reader, writer = await asyncio.open_connection(t.host, t.port)
    writer.transport.abort()
    return "-"


@case("vanish halfway through a head", "-")
async def _vanish_head(t: Target) -> str:
    _reader, writer = await asyncio.open_connection(t.host, t.port)
    writer.write(b"GET /ws/twilio HTTP/1.1\r\nHost: x\r\nUpgr")
    await writer.drain()
    writer.transport.abort()
    return "-"


@case("upgrade without Sec-WebSocket-Key", "HTTP 400")
async def _no_key(t: Target) -> str:
    answer, _ = await answered(t, "telnyx")  # authenticated: the handshake itself is bad
    parts = urlsplit(answer.url)
    return await raw_exchange(t, [_upgrade_head(parts.path + "?" + parts.query, key=False)])


@case("upgrade to an unknown media path", "HTTP 404")
async def _unknown_path(t: Target) -> str:
    return await upgrade_status(f"ws://{t.host}:{t.port}/ws/skype", {}, t.deadline())


@case("media path without an upgrade", "HTTP 426")
async def _no_upgrade(t: Target) -> str:
    return await raw_exchange(t, [b"GET /ws/twilio HTTP/1.1\r\nHost: x\r\n\r\n"])


@case("slow webhook body", "HTTP 408")
async def _slow_body(t: Target) -> str:
    head = (b"POST /twilio HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
            b"x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\n")
    return await raw_exchange(t, [head] + [b"a=b&"] * 200, gap=0.05)


@case("huge webhook body", "HTTP 413")
async def _huge_body(t: Target) -> str:
    head = (b"POST /plivo HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
            b"x-www-form-urlencoded\r\nContent-Length: 100000000\r\n\r\n")
    return await raw_exchange(t, [head, b"a" * 65536], keep_sending=True)


def _forged_webhook(provider: ProviderName) -> CaseFn:
    async def run(t: Target) -> str:
        url = f"{t.base}/{provider}"
        body, headers = _signed_post(provider, url, forge=True)
        async with t.http.post(url, data=body, headers=headers) as response:
            await response.read()
            return f"HTTP {response.status}"

    return run


for _provider in PROVIDERS:
    case(f"forged {_provider} webhook signature", "HTTP 403")(_forged_webhook(_provider))


def _raw_signature_webhook(provider: ProviderName, header: bytes) -> CaseFn:
    async def run(t: Target) -> str:
        body = urlencode(webhook_form(provider, new_identity(provider))).encode()
        head = (f"POST /{provider} HTTP/1.1\r\nHost: {t.host}:{t.port}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(body)}\r\nX-Plivo-Signature-V3-Nonce: 1\r\n").encode()
        # Bytes that are not UTF-8 in the signature header.
        return await raw_exchange(t, [head + header + b": ab\xff\xfe\xc3cd\r\n\r\n" + body])

    return run


case("Twilio webhook signature not UTF-8", "HTTP 403")(
    _raw_signature_webhook("twilio", b"X-Twilio-Signature"))
case("Plivo webhook signature not UTF-8", "HTTP 403")(
    _raw_signature_webhook("plivo", b"X-Plivo-Signature-V3"))


@case("unsigned Twilio upgrade", "HTTP 403")
async def _unsigned_upgrade(t: Target) -> str:
    return await upgrade_status(f"ws://{t.host}:{t.port}/ws/twilio", {}, t.deadline())


@case("forged Twilio upgrade signature", "HTTP 403")
async def _forged_upgrade(t: Target) -> str:
    url = f"ws://{t.host}:{t.port}/ws/twilio"
    headers = {"X-Twilio-Signature": twilio_signature("not-the-auth-token", url)}
    return await upgrade_status(url, headers, t.deadline())


def _forge_token(url: str, position: int) -> str:
    """``url`` with one hex digit of its ``token`` changed (mediastream.control.tokens:
    MAC-A, checked before the upgrade, is at 26..57; MAC-B, bound to the call, after)."""
    parts = urlsplit(url)
    token = dict(p.split("=", 1) for p in parts.query.split("&"))["token"]
    position %= len(token)
    digit = "0" if token[position] != "0" else "1"
    forged = token[:position] + digit + token[position + 1 :]
    return urlunsplit(parts._replace(query=parts.query.replace(token, forged)))


@case("forged stream token", "HTTP 403")
async def _forged_token(t: Target) -> str:
    answer, _ = await answered(t, "telnyx")
    return await upgrade_status(_forge_token(answer.url, 30), {}, t.deadline())


@case("stream token with a non-ASCII character", "HTTP 403")
async def _unicode_token(t: Target) -> str:
    answer, _ = await answered(t, "telnyx")
    parts = urlsplit(answer.url)
    token = dict(p.split("=", 1) for p in parts.query.split("&"))["token"]
    forged = token[0] + "%C3%A9" + token[2:]  # the provider letter, as UTF-8 in the URL
    url = urlunsplit(parts._replace(query=parts.query.replace(token, forged)))
    return await upgrade_status(url, {}, t.deadline())


@case("stream token with a forged call binding", "close 1008", "telnyx")
async def _forged_binding(t: Target) -> str:
    answer, identity = await answered(t, "telnyx")
    url = _forge_token(answer.url, -1)
    token = dict(p.split("=", 1) for p in urlsplit(url).query.split("&"))["token"]
    # The answer document repeats the token as a stream parameter: forge it there too.
    params = {k: token if k in ("token", "_token") else v for k, v in answer.parameters.items()}
    forged = StreamTarget(url, params, answer.inbound, answer.outbound, answer.bidirectional)
    stream = await open_stream(t, "telnyx", answer=(forged, identity))
    await stream.open()
    return await ws_answer(stream.ws, t.deadline())


@case("replayed stream token (upgrade)", "HTTP 403")
async def _replayed_token(t: Target) -> str:
    first = await open_stream(t, "telnyx")
    await first.open()
    await first.send(*first.silence(2), first.dialect.stop() or b"")
    got = await ws_answer(first.ws, t.deadline())
    if got != "close 1000":
        return f"first use: {got}"
    return await upgrade_status(first.url, first.headers, t.deadline())


@case("replayed stream token (start)", "close 1008", "twilio")
async def _replayed_start(t: Target) -> str:
    answer = await answered(t, "twilio")
    first = await open_stream(t, "twilio", answer=answer)
    await first.open()
    await first.send(first.dialect.stop() or b"")
    got = await ws_answer(first.ws, t.deadline())
    if got != "close 1000":
        return f"first use: {got}"
    again = await open_stream(t, "twilio", answer=answer)
    await again.open()
    return await ws_answer(again.ws, t.deadline())


@case("start without a stream token", "close 1008", "twilio")
async def _no_token(t: Target) -> str:
    stream = await open_stream(t, "twilio", parameters={})
    await stream.open()
    return await ws_answer(stream.ws, t.deadline())


@case("token issued for another call", "close 1008", "telnyx")
async def _other_call(t: Target) -> str:
    answer, _ = await answered(t, "telnyx")
    stranger = new_identity("telnyx")
    stream = await open_stream(t, "telnyx", answer=(answer, stranger))
    await stream.open()
    return await ws_answer(stream.ws, t.deadline())


# --- after the upgrade: the provider protocols, with a valid token


Script = Callable[[Stream], Sequence[bytes | str]]


def _media_case(
    name: str, expect: str, provider: ProviderName, script: Script,
    *, inbound: MediaFormat | None = None, opening: bool = True,
) -> None:
    async def run(t: Target) -> str:
        stream = await open_stream(t, provider, inbound=inbound)
        if opening:
            await stream.open()
        await stream.send(*script(stream))
        return await ws_answer(stream.ws, t.deadline())

    CASES.append(Case(name, expect, run, provider))


def _with(message: bytes, change: Callable[[dict[str, Any]], None]) -> str:
    data = json.loads(message)
    change(data)
    return json.dumps(data)


def _stop(s: Stream) -> list[bytes | str]:
    stop = s.dialect.stop()
    return [stop] if stop is not None else []


def _set_media(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        for key, value in fields.items():
            if key in ("chunk", "payload", "timestamp"):
                data["media"][key] = value
            else:
                data[key] = value

    return change


_media_case("invalid JSON", "close 1007", "twilio", lambda s: ['{"event": "media", "media": {'])
_media_case("JSON that is not an object", "close 1007", "telnyx", lambda s: ["[1, 2, 3]"])
_media_case("media before start", "close 1002", "telnyx",
            lambda s: [s.dialect.opening(0)[0], *s.silence(1)], opening=False)
_media_case("a second start", "close 1002", "twilio", lambda s: [s.dialect.opening(0)[1]])
_media_case("bad base64", "close 1007", "telnyx",
            lambda s: [_with(s.silence(1)[0], _set_media(payload="not base64!"))])
_media_case("odd-length L16 payload", "close 1007", "plivo",
            lambda s: s.media(b"\x01\x02\x03"), inbound=MediaFormat("l16", 16000))
_media_case("wrong stream id", "close 1007", "twilio",
            lambda s: [_with(s.silence(1)[0], _set_media(streamSid="MZ" + "f" * 32))])
_media_case("absurd sequence numbers", "close 1000", "twilio",
            lambda s: [_with(s.silence(1)[0], _set_media(sequenceNumber="9" * 19,
                                                          chunk="9" * 19)),
                       *s.silence(5), _with(s.silence(1)[0], _set_media(chunk="0")),
                       *s.silence(5), *_stop(s)])
_media_case("sequence number beyond 64 bits", "close 1007", "telnyx",
            lambda s: [_with(s.silence(1)[0], _set_media(sequence_number="9" * 40))])
_media_case("negative chunk", "close 1007", "plivo",
            lambda s: [_with(s.silence(1)[0], _set_media(chunk=-5))])
_media_case("flood of 5000 mark echoes", "close 1000", "twilio",
            lambda s: [*(s.dialect.mark_played(f"m{i}") for i in range(5000)), *_stop(s)])
_media_case("flood of 5000 DTMF keys", "close 1000", "telnyx",
            lambda s: [*(s.dialect.dtmf("5") for _ in range(5000)), *_stop(s)])
_media_case("1000 unknown events", "close 1000", "twilio",
            lambda s: [*(json.dumps({"event": f"x-{i}", "data": i}) for i in range(1000)),
                       *_stop(s)])
_media_case("invalid DTMF digit", "close 1007", "twilio",
            lambda s: [_with(s.dialect.dtmf("1"), lambda d: d["dtmf"].update(digit="Z"))])
_media_case("oversized message", "close 1009", "telnyx",
            lambda s: [json.dumps({"event": "media", "pad": "x" * (MAX_MESSAGE + 1)})])
_media_case("silent after the upgrade", "close 1008", "twilio", lambda s: [], opening=False)
_media_case("silent after start", "close 1008", "telnyx", lambda s: [])


@case("binary frame", "close 1003", "twilio")
async def _binary(t: Target) -> str:
    stream = await open_stream(t, "twilio")
    await stream.open()
    with contextlib.suppress(websockets.ConnectionClosed):
        await stream.ws.send(b"\x00\x01binary\xff")
    return await ws_answer(stream.ws, t.deadline())


def _huge_parameters(total: int, expect: str) -> None:
    async def run(t: Target) -> str:
        answer, identity = await answered(t, "twilio")
        params = dict(answer.parameters)
        params.update({f"p{i}": "v" * 1000 for i in range(total // 1000)})
        stream = await open_stream(t, "twilio", answer=(answer, identity), parameters=params)
        await stream.open()
        await stream.send(*stream.silence(2), *_stop(stream))
        return await ws_answer(stream.ws, t.deadline())

    CASES.append(Case(f"custom parameters of {total // 1000} kB", expect, run, "twilio"))


_huge_parameters(48_000, "close 1000")
_huge_parameters(200_000, "close 1009")


@case("unsupported codec in start", "close 1003", "telnyx")
async def _codec(t: Target) -> str:
    stream = await open_stream(t, "telnyx")
    opening = [json.loads(m) for m in stream.dialect.opening(0)]
    opening[-1]["start"]["media_format"]["encoding"] = "OPUS"
    await stream.send(*(json.dumps(m) for m in opening))
    return await ws_answer(stream.ws, t.deadline())


@case("ping flood, reading nothing", "dropped", "telnyx")
async def _ping_flood(t: Target) -> str:
    answer, _ = await answered(t, "telnyx")
    parts = urlsplit(answer.url)
    path = parts.path + ("?" + parts.query if parts.query else "")
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small receive buffer: the pongs we never read back up into the server at once.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    with sock:
        await loop.sock_connect(sock, (t.host, t.port))
        await loop.sock_sendall(sock, _upgrade_head(path))
        head = await loop.sock_recv(sock, 1024)
        if not head.startswith(b"HTTP/1.1 101"):
            return "upgrade refused"
        pings = _masked_frame(0x9, b"p" * 125) * 256
        try:
            while True:  # bounded by run_case's deadline
                await loop.sock_sendall(sock, pings)
        except (ConnectionResetError, BrokenPipeError):
            return "dropped"


@case("upgrade, then half-close at once", "HTTP 101", "telnyx")
async def _half_close(t: Target) -> str:
    answer, _ = await answered(t, "telnyx")
    parts = urlsplit(answer.url)
    reader, writer = await asyncio.open_connection(t.host, t.port)
    try:
        writer.write(_upgrade_head(parts.path + "?" + parts.query))
        writer.write_eof()  # nothing more from us, before the server even answered
        data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return data.split(b"\r\n", 1)[0].decode(errors="replace").replace("HTTP/1.1", "HTTP")[:8]


@case("vanish in the middle of a call", "-", "plivo")
async def _vanish_call(t: Target) -> str:
    stream = await open_stream(t, "plivo")
    await stream.open()
    await stream.send(*stream.silence(5))
    stream.ws.transport.abort()
    return "-"


# ------------------------------------------------------------------ running it


@dataclass
class Result:
    """What one case got, how long it took, and whether the server still answered."""

    case: Case
    got: str
    seconds: float
    survived: bool = True
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.got == self.case.expect and self.survived


async def healthy(target: Target) -> bool:
    """The server answers ``/healthz`` promptly (it is alive and its loop is not stuck)."""
    try:
        async with target.http.get(
            f"{target.base}/healthz", timeout=aiohttp.ClientTimeout(total=2.0)
        ) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def run_case(target: Target, item: Case, *, check: bool = True) -> Result:
    """Run one case within the target's deadline; ``check``: then probe ``/healthz``."""
    started = time.perf_counter()
    error = None
    try:
        async with asyncio.timeout(target.deadline()):
            got = await item.run(target)
    except TimeoutError:
        got = "no answer"
    except Exception as exc:  # a peer-side failure is this case's result, not the run's
        got, error = f"error: {type(exc).__name__}", repr(exc)
    seconds = time.perf_counter() - started
    survived = await healthy(target) if check else True
    return Result(item, got, seconds, survived, error)


async def run_corpus(
    target: Target, cases: Sequence[Case] | None = None, *, together: bool = False
) -> list[Result]:
    """Every case one after the other, or all at once (``together``)."""
    chosen = list(CASES if cases is None else cases)
    if together:
        results = await asyncio.gather(*(run_case(target, c, check=False) for c in chosen))
        alive = await healthy(target)
        for r in results:
            r.survived = alive
        return list(results)
    return [await run_case(target, c) for c in chosen]


#: Short probes so a few seconds of call yield several latency samples, and a 1 s tail
#: so that late is not taken for lost: when the one process running server and callers
#: (the tests) is starved of CPU, its stalls add to the echo's latency (the pacer plays
#: a burst in real time and drops nothing), and a last probe still queued at hang-up
#: would count as not returned. 1 s stays inside the match window (4 × 300 - 100 ms).
GOOD_PROBE = ProbeConfig(tone_ms=100, period_ms=300, lead_ms=100, tail_ms=1000)


async def good_calls(
    base: str, seconds: float, *, calls: int = 1, ramp: float = 0.0
) -> dict[str, RunReport]:
    """Signed dial-in calls through the answer documents, for every provider at once."""
    reports = await asyncio.gather(*(
        run_calls(f"{base}/{p}", provider=p, calls=calls, seconds=seconds, ramp=ramp,
                  secret=secret_for(p), probe=GOOD_PROBE)
        for p in PROVIDERS
    ))
    return dict(zip(PROVIDERS, reports, strict=True))


def check_good_calls(reports: dict[str, RunReport]) -> list[str]:
    """What went wrong with the good calls (empty: every call complete, no frame lost).

    A tone short by less than :data:`bench.harness.LOST_FRAME_MS` is no lost frame (see
    there), the same rule the soak applies.
    """
    return _problems({
        provider: [c.to_dict() for c in report.calls] for provider, report in reports.items()
    })


def _problems(calls: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The one judgement of good calls, in-process reports and JSON ones alike."""
    problems: list[str] = []
    for provider, per_call in calls.items():
        for c in per_call:
            where = f"{provider} call {c['index']} ({c['call_id']})"
            if c["end"] != "completed":
                problems.append(f"{where}: ended {c['end']} {c['close_code']} {c['failure']}")
            elif not c["probes"] or c["probes_returned"] != c["probes"]:
                problems.append(f"{where}: {c['probes_returned']}/{c['probes']} probes returned")
            elif (c["lost_ms"] or 0) >= LOST_FRAME_MS:
                problems.append(f"{where}: lost {c['lost_ms']} ms")
            if c["protocol_errors"]:
                problems.append(f"{where}: {c['protocol_error_samples']}")
    return problems


# ------------------------------------------------------------------ the bench


def _table(results: list[Result]) -> str:
    width = max(len(r.case.name) for r in results)
    lines = [f"{'case':<{width}}  {'layer':<7} {'expected':<11} {'got':<11} "
             f"{'time s':>7}  survived"]
    for r in results:
        mark = "" if r.got == r.case.expect else "   <-- MISMATCH"
        lines.append(f"{r.case.name:<{width}}  {r.case.layer:<7} {r.case.expect:<11} "
                     f"{r.got:<11} {r.seconds:7.3f}  {'yes' if r.survived else 'NO'}{mark}")
    return "\n".join(lines)


def _latency(reports: dict[str, RunReport]) -> tuple[list[float], float]:
    values = [v for r in reports.values() for v in r.latencies_ms]
    lost = sum((c.lost_ms or 0.0) for r in reports.values() for c in r.calls)
    return values, lost


@contextlib.asynccontextmanager
async def _server_process(
    log_path: Path, rest_base_url: str
) -> AsyncIterator[tuple[subprocess.Popen[bytes], int]]:
    """``mediastream serve --bot echo`` with the corpus's limits, logging to ``log_path``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    args = [sys.executable, "-m", "mediastream", "serve", "--bot", "echo", "--host",
            "127.0.0.1", "--port", str(port), "--max-head-size", str(MAX_HEAD),
            "--max-message-size", str(MAX_MESSAGE), "--drain-timeout", "2"]
    for name, value in LIMITS.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    root = Path(__file__).resolve().parent.parent
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(args, cwd=root, env=_server_env(rest_base_url),
                                   stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while b"listening on" not in log_path.read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start:\n" + log_path.read_text())
                await asyncio.sleep(0.05)
            yield process, port
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


async def _good_calls_elsewhere(base: str, seconds: float) -> dict[str, dict[str, Any]]:
    """Good calls from their own processes (``mediastream call --json``), 2 per provider:
    the corpus must not slow their load generator, only (if anything) the server."""
    root = Path(__file__).resolve().parent.parent

    async def one(provider: str) -> dict[str, Any]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mediastream", "call", f"{base}/{provider}",
            "--provider", provider, "--calls", "2", "--ramp", "0.5", "--seconds", str(seconds),
            "--probe", f"{GOOD_PROBE.tone_ms}/{GOOD_PROBE.period_ms}",
            "--secret", secret_for(provider), "--json", "--quiet",
            cwd=root, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await process.communicate()
        result: dict[str, Any] = json.loads(out)
        return result

    runs = await asyncio.gather(*(one(p) for p in PROVIDERS))
    return dict(zip(PROVIDERS, runs, strict=True))


def _json_problems(runs: dict[str, dict[str, Any]]) -> list[str]:
    return _problems({provider: run["per_call"] for provider, run in runs.items()})


@dataclass
class _Figures:
    """Good-call figures of one condition (quiet or under attack), over repetitions."""

    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    lost_ms: float = 0.0
    calls: int = 0
    lag_p99: list[float] = field(default_factory=list)

    def add(self, runs: dict[str, dict[str, Any]]) -> None:
        for run in runs.values():
            self.p50.append(run["latency_ms"]["p50"] or 0.0)
            self.p99.append(run["latency_ms"]["p99"] or 0.0)
            self.lost_ms += sum(c["lost_ms"] or 0.0 for c in run["per_call"])
            self.calls += run["calls"]
            self.lag_p99.append(run["send_lag_ms"]["p99"] or 0.0)

    def row(self, label: str) -> str:
        if not self.p50:
            return f"  {label:<13} -"
        return (f"  {label:<13} p50 {statistics.median(self.p50):6.2f} ms  p99 "
                f"{statistics.median(self.p99):6.2f} ms (worst {max(self.p99):6.2f})  lost "
                f"{self.lost_ms:.0f} ms in {self.calls} calls  generator lag p99 "
                f"{statistics.median(self.lag_p99):.2f} ms")


async def _bench(
    port: int, reps: int, call_seconds: float
) -> tuple[list[Result], list[str], list[str]]:
    rows: list[str] = []
    all_results: list[Result] = []
    problems: list[str] = []
    quiet, attacked = _Figures(), _Figures()
    async with aiohttp.ClientSession() as http:
        target = Target("127.0.0.1", port, http)
        base = target.base
        for rep in range(reps):
            # Alternate the order so a drift of the machine's load hits both alike.
            for condition in (("quiet", "attack") if rep % 2 == 0 else ("attack", "quiet")):
                print(f"[rep {rep + 1}/{reps}] good calls, {condition} ...", file=sys.stderr,
                      flush=True)
                calls = asyncio.ensure_future(_good_calls_elsewhere(base, call_seconds))
                if condition == "quiet":
                    runs = await calls
                    quiet.add(runs)
                    problems += [f"quiet rep {rep + 1}: {p}" for p in _json_problems(runs)]
                    continue
                await asyncio.sleep(1.5)  # the good calls are streaming
                sequential = await run_corpus(target)
                storm = await run_corpus(target, CASES, together=True)
                runs = await calls
                attacked.add(runs)
                problems += [f"attacked rep {rep + 1}: {p}" for p in _json_problems(runs)]
                all_results += sequential
                bad_storm = [r for r in storm if not r.ok]
                if rep == 0:
                    rows.append(_table(sequential))
                rows.append(f"storm rep {rep + 1}: {len(storm)} hostile peers at once, "
                            f"{len(storm) - len(bad_storm)} got the documented answer, server "
                            f"{'alive' if all(r.survived for r in storm) else 'DEAD'}")
                problems += [f"storm: {r.case.name}: expected {r.case.expect}, got {r.got}"
                             for r in bad_storm]

    rows.append("")
    rows.append("good calls (2 per provider per run, signed dial-in, echo bot, from their own "
                "processes; medians over providers and repetitions):")
    rows.append(quiet.row("quiet"))
    rows.append(attacked.row("under attack"))
    if quiet.p50 and attacked.p50:
        ratio = statistics.median(attacked.p50) / max(1e-9, statistics.median(quiet.p50))
        rows.append(f"  median latency under attack / quiet: {ratio:.2f}")
    return all_results, rows, problems


async def _run(args: argparse.Namespace, log_path: Path) -> tuple[
    list[Result], list[str], list[str], bool, int | None
]:
    async with RestStub() as rest, _server_process(log_path, rest.base_url) as (process, port):
        results, rows, problems = await _bench(port, args.reps, args.seconds)
        alive = process.poll() is None
        # SIGTERM: the drain must end the server cleanly (exit 0).
        process.terminate()
        loop = asyncio.get_running_loop()
        code = await loop.run_in_executor(None, process.wait, 30)
        rows.append(f"server REST hang-ups after failed streams: {rest.requests}")
    return results, rows, problems, alive, code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench hostile [--reps N] [--seconds S]``."""
    parser = argparse.ArgumentParser(prog="python -m bench hostile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=2, help="quiet/attack repetitions")
    parser.add_argument("--seconds", type=float, default=14.0,
                        help="good-call length: long enough to span the corpus")
    args = parser.parse_args(list(argv or []))
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        results, rows, problems, alive, code = asyncio.run(_run(args, log_path))
        log = log_path.read_text(errors="replace")
    tracebacks = log.count("Traceback")
    errors = [line for line in log.splitlines() if " ERROR " in line]
    mismatched = [r for r in results if not r.ok]
    print("\n".join(rows))
    if problems:
        print("\nproblems:\n  " + "\n  ".join(problems))
    print(f"\nserver process {'alive' if alive else 'DIED'} through the run, exit code "
          f"{code} after SIGTERM; log: {len(errors)} ERROR lines, {tracebacks} tracebacks")
    for line in errors[:10]:
        print("  " + line)
    cases = len({r.case.name for r in results})
    print(f"{cases} cases x {args.reps} reps: {len(results) - len(mismatched)}/{len(results)} "
          f"got the documented answer; wall {time.monotonic() - started:.0f} s")
    ok = alive and code == 0 and not mismatched and not problems and not tracebacks and not errors
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
