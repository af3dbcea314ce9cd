"""The simulated caller against mediastream's own server, for all three providers:
direct streams, the signed dial-in path (webhook → answer document → stream token), marks
and checkpoints, clear and DTMF through a real bot."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from _util_caller import check_echo_call, scaled

from mediastream.call import Call, DtmfPressed, PlayoutStopped
from mediastream.caller import CallReport, run_calls
from mediastream.config import Config, ProviderCredentials
from mediastream.echo import echo_bot
from mediastream.server import MediaStreamServer

PROVIDERS = ("twilio", "telnyx", "plivo")


@asynccontextmanager
async def _server(bot: Any, config: Config | None = None) -> AsyncIterator[MediaStreamServer]:
    async with MediaStreamServer(config or Config(host="127.0.0.1", port=0), bot=bot) as server:
        yield server


async def _each_provider(url: str, **kwargs: Any) -> dict[str, CallReport]:
    reports = await asyncio.wait_for(asyncio.gather(*(
        run_calls(url.format(p=p), provider=p, **kwargs) for p in PROVIDERS)), scaled(15))
    return {p: r.calls[0] for p, r in zip(PROVIDERS, reports, strict=True)}


@pytest.mark.asyncio
async def test_echo_bot_over_direct_streams() -> None:
    async with _server(echo_bot) as server:
        calls = await _each_provider(f"ws://127.0.0.1:{server.port}/ws/{{p}}", seconds=2.0)
    for provider, call in calls.items():
        check_echo_call(call)
        assert call.frames_received >= 90, provider


@pytest.mark.asyncio
async def test_signed_dial_in_through_the_answer_document() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    seed = bytes(range(32))
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)
    config = Config(host="127.0.0.1", port=0, credentials=ProviderCredentials(
        twilio_account_sid="AC" + "0" * 32, twilio_auth_token="twilio-token",
        telnyx_public_key=base64.b64encode(public).decode(), plivo_auth_token="plivo-token"))
    secrets = {"twilio": "twilio-token", "telnyx": base64.b64encode(seed).decode(),
               "plivo": "plivo-token"}
    async with _server(echo_bot, config) as server:
        base = f"http://127.0.0.1:{server.port}"
        signed = await asyncio.wait_for(asyncio.gather(*(
            run_calls(f"{base}/{p}", provider=p, seconds=1.5, secret=secrets[p])  # type: ignore[arg-type]
            for p in PROVIDERS)), scaled(15))
        unsigned, direct = await asyncio.wait_for(asyncio.gather(
            run_calls(f"{base}/twilio", provider="twilio", seconds=1.0),
            run_calls(f"ws://127.0.0.1:{server.port}/ws/plivo", provider="plivo", seconds=1.0),
        ), scaled(15))
    for report in signed:
        call = report.calls[0]
        check_echo_call(call)
        assert call.stream_url.startswith(f"ws://127.0.0.1:{server.port}/ws/")
    # Secure by default: no signature, no answer; no stream token, no stream.
    assert unsigned.handshake_failures == 1 and "HTTP 403" in (unsigned.calls[0].failure or "")
    refused = direct.calls[0]
    assert refused.handshake_failed or refused.close_code == 1008, refused


@pytest.mark.asyncio
async def test_clear_and_dtmf_through_a_bot() -> None:
    seen: dict[str, list[Any]] = {}

    async def speaker(call: Call) -> None:
        # One second of 440 Hz; a "5" interrupts it; a "9" plays digits back (Plivo).
        events: list[Any] = seen.setdefault(call.info.provider, [])
        t = np.arange(16000) / 16000
        call.send_audio((8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes(), 16000)
        call.end_utterance()
        async for event in call:
            if isinstance(event, DtmfPressed):
                events.append(event.digit)
                if event.digit == "5":
                    call.clear()
                elif event.digit == "9" and call.info.provider == "plivo":
                    call.send_dtmf("123")
            elif isinstance(event, PlayoutStopped):
                events.append(event)

    async with _server(speaker) as server:
        calls = await _each_provider(f"ws://127.0.0.1:{server.port}/ws/{{p}}",
                                     seconds=1.5, dtmf="5@0.4,9@0.6")
    for provider, call in calls.items():
        assert call.protocol_errors == 0, call.protocol_error_samples
        assert call.dtmf_sent == "59"
        digits = [e for e in seen[provider] if isinstance(e, str)]
        assert digits == ["5", "9"], provider
        assert call.clears == 1, provider
        # The caller went quiet as soon as the clear arrived.
        (ctos,) = call.clear_to_silence_ms
        assert ctos <= 25, provider
        # The server's ledger agrees the utterance was cut after ~0.4 s of playout.
        (stopped,) = [e for e in seen[provider] if isinstance(e, PlayoutStopped)]
        assert stopped.cut and 0.2 <= stopped.played_s <= 0.6, (provider, stopped)
        assert call.dtmf_received == ("123" if provider == "plivo" else "")
