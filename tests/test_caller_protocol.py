"""The simulator behaves like the provider: opening messages, pacing, marks/checkpoints
acknowledged after playout, clear, DTMF, stop, and what it flags in a server's messages."""

from __future__ import annotations

import asyncio
import base64
import ssl
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _util_caller import Connection, EchoServer, scaled
from _util_server import self_signed

from mediastream.caller import CallReport, run_calls

PROVIDERS = ("twilio", "telnyx", "plivo")
LOUD = b"\x00" * 160  # 20 ms of full-scale μ-law


@pytest.mark.asyncio
async def test_opening_messages_counters_pacing_and_stop() -> None:
    async with EchoServer(0.0) as srv:
        reports = await asyncio.wait_for(asyncio.gather(*(
            run_calls(srv.url(p), provider=p, seconds=2.0, params={"tenant": "acme"})
            for p in PROVIDERS)), scaled(10))
        conns = {c.provider: c for c in srv.connections}
    assert all(r.calls[0].end == "completed" for r in reports)
    tw, tx, pl = conns["twilio"], conns["telnyx"], conns["plivo"]
    assert [m["event"] for m in tw.received[:2]] == ["connected", "start"]
    assert [m["event"] for m in tx.received[:2]] == ["connected", "start"]
    assert pl.received[0]["event"] == "start"  # Plivo has no "connected" (§3.1)
    assert tw.received[1]["start"]["customParameters"] == {"tenant": "acme"}
    assert tx.received[1]["start"]["custom_parameters"] == {"tenant": "acme"}
    assert pl.received[0]["extra_headers"] == "tenant=acme"
    # Counters as each provider writes them: Twilio/Telnyx strings, Plivo numbers.
    tw_media, pl_media = tw.events("media"), pl.events("media")
    assert [m["sequenceNumber"] for m in tw_media] == [str(n) for n in range(2, 102)]
    assert [m["media"]["chunk"] for m in tw_media] == [str(n) for n in range(1, 101)]
    assert [m["media"]["timestamp"] for m in tw_media[:3]] == ["0", "20", "40"]
    assert [m["sequence_number"] for m in tx.events("media")][:2] == ["2", "3"]
    assert [m["sequenceNumber"] for m in pl_media] == list(range(2, 102))
    assert [m["media"]["chunk"] for m in pl_media] == list(range(1, 101))
    # Twilio and Telnyx say stop; Plivo just closes (its protocol has no stop).
    assert tw.received[-1]["event"] == "stop" and tx.received[-1]["event"] == "stop"
    assert tw.received[-1]["sequenceNumber"] == "102"
    assert pl.received[-1]["event"] == "media"
    assert {c.close_code for c in conns.values()} == {1000}
    # 20 ms frames on an absolute schedule: no drift over the call (a least-squares
    # slope of 20.000 ms per frame) even when single frames leave late.
    for conn in conns.values():
        arrivals = np.array(conn.media_arrivals) * 1000
        slope = np.polyfit(np.arange(len(arrivals)), arrivals, 1)[0]
        assert slope == pytest.approx(20.0, abs=0.05)
        assert arrivals[-1] - arrivals[0] == pytest.approx(99 * 20, abs=scaled(8))


def _audio(conn: Connection, frames: int) -> dict[str, object]:
    return conn.media(LOUD * frames)


async def _all_providers(srv: EchoServer, seconds: float, **kwargs: Any) -> dict[str, CallReport]:
    """Run one call per provider at once; returns {provider: CallReport}."""
    reports = await asyncio.wait_for(asyncio.gather(*(
        run_calls(srv.url(p), provider=p, seconds=seconds, **kwargs)
        for p in PROVIDERS)), scaled(10))
    return {p: r.calls[0] for p, r in zip(PROVIDERS, reports, strict=True)}


@pytest.mark.asyncio
async def test_marks_are_acknowledged_when_their_audio_has_played() -> None:
    sent: dict[tuple[str, str], float] = {}

    async def script(conn: Connection) -> None:
        await asyncio.sleep(0.1)
        sent[conn.provider, "m1"] = conn.loop.time()
        conn.send(_audio(conn, 15))  # 300 ms at once: the provider queues it
        conn.send(conn.mark("m1"))
        await asyncio.sleep(0.5)
        sent[conn.provider, "idle"] = conn.loop.time()
        conn.send(conn.mark("idle"))  # nothing queued: acknowledged at once

    async with EchoServer(echo=False, script=script) as srv:
        calls = await _all_providers(srv, 1.2)
        conns = {c.provider: c for c in srv.connections}
    for provider, conn in conns.items():
        ack_event = "playedStream" if provider == "plivo" else "mark"
        acks = conn.events(ack_event)
        names = [a["name"] if provider == "plivo" else a["mark"]["name"] for a in acks]
        assert names == ["m1", "idle"], provider
        times = [conn.arrivals[conn.received.index(a)] for a in acks]
        # 300 ms of audio, acknowledged on the 20 ms playout tick after it ended.
        assert 0.300 <= times[0] - sent[provider, "m1"] <= 0.300 + scaled(0.030), provider
        assert times[1] - sent[provider, "idle"] <= scaled(0.010), provider
        if provider == "twilio":
            assert acks[0]["streamSid"] == conn.stream_id
            assert acks[0]["sequenceNumber"].isdigit()
        call = calls[provider]
        assert call.marks_received == 2 and call.marks_acknowledged == 2
        assert call.protocol_errors == 0, call.protocol_error_samples


@pytest.mark.asyncio
async def test_clear_drops_queued_audio_and_settles_pending_marks() -> None:
    times: dict[str, float] = {}

    async def script(conn: Connection) -> None:
        await asyncio.sleep(0.1)
        conn.send(_audio(conn, 50))  # one second queued
        conn.send(conn.mark("pending"))
        await asyncio.sleep(0.2)
        times[conn.provider] = conn.loop.time()
        conn.send(conn.clear())

    async with EchoServer(echo=False, script=script) as srv:
        calls = await _all_providers(srv, 1.6)
        conns = {c.provider: c for c in srv.connections}
    for provider, conn in conns.items():
        call = calls[provider]
        assert call.clears == 1
        if provider == "plivo":
            # clearedAudio acknowledges the clear; the dropped checkpoint never plays (§3.3).
            (cleared,) = conn.events("clearedAudio")
            assert cleared == {"sequenceNumber": 0, "event": "clearedAudio",
                               "streamId": conn.stream_id}
            assert conn.events("playedStream") == []
            acked_at = conn.arrivals[conn.received.index(cleared)]
        else:
            # Twilio/Telnyx echo every pending mark at once on clear (§5.2).
            (mark,) = conn.events("mark")
            assert mark["mark"]["name"] == "pending"
            acked_at = conn.arrivals[conn.received.index(mark)]
        assert acked_at - times[provider] <= scaled(0.010)
        # The caller heard ~200 ms of the second, then silence right after the clear.
        (ctos,) = call.clear_to_silence_ms
        assert ctos <= 1.0


@pytest.mark.asyncio
async def test_audio_sent_after_a_clear_shows_in_clear_to_silence() -> None:
    async def script(conn: Connection) -> None:
        await asyncio.sleep(0.1)
        conn.send(_audio(conn, 25))
        await asyncio.sleep(0.1)
        conn.send(conn.clear())
        conn.send(_audio(conn, 5))  # a server that keeps talking for 100 ms after clearing

    async with EchoServer(echo=False, script=script) as srv:
        report = await asyncio.wait_for(
            run_calls(srv.url("twilio"), provider="twilio", seconds=1.0), scaled(10))
    (ctos,) = report.calls[0].clear_to_silence_ms
    # (It plays from the next 20 ms playout tick on.)
    assert 100 <= ctos <= 121


@pytest.mark.asyncio
async def test_dtmf_is_sent_in_the_providers_shape() -> None:
    async def script(conn: Connection) -> None:
        if conn.provider == "plivo":
            await asyncio.sleep(0.1)
            conn.send({"event": "sendDTMF", "dtmf": "12#"})

    async with EchoServer(script=script) as srv:
        calls = await _all_providers(srv, 1.0, dtmf="1@0.2,#@0.4")
        conns = {c.provider: c for c in srv.connections}
    for provider, conn in conns.items():
        dtmf = conn.events("dtmf")
        assert [d["dtmf"]["digit"] for d in dtmf] == ["1", "#"]
        if provider == "twilio":
            assert dtmf[0]["dtmf"]["track"] == "inbound_track"
            assert dtmf[0]["streamSid"] == conn.stream_id
        elif provider == "telnyx":
            assert dtmf[0]["stream_id"] == conn.stream_id
            assert dtmf[0]["sequence_number"].isdigit()
        else:
            assert isinstance(dtmf[0]["sequenceNumber"], int)
        # Pressed after the 10th and 20th frame, in order with the audio.
        index = conn.received.index(dtmf[0])
        assert sum(1 for m in conn.received[:index] if m["event"] == "media") == 11
        call = calls[provider]
        assert call.dtmf_sent == "1#"
        assert call.dtmf_received == ("12#" if provider == "plivo" else "")


@pytest.mark.asyncio
async def test_protocol_violations_and_an_early_server_hang_up_are_reported() -> None:
    async def script(conn: Connection) -> None:
        await asyncio.sleep(0.05)
        conn.send({"event": "media", "streamSid": "MZwrong",
                   "media": {"payload": base64.b64encode(LOUD).decode()}})
        conn.send({"event": "playAudio", "media": {}})
        assert conn.transport is not None
        conn.ws.send_binary(b"\x01\x02")
        conn._flush()
        await asyncio.sleep(0.2)
        conn.close(1000, "bot ended the call")

    async with EchoServer(echo=False, script=script) as srv:
        report = await asyncio.wait_for(
            run_calls(srv.url("twilio"), provider="twilio", seconds=3.0), scaled(10))
    call = report.calls[0]
    assert call.end == "server_closed" and call.close_code == 1000
    assert call.close_reason == "bot ended the call"
    assert call.frames_sent < 30
    assert call.protocol_errors == 3
    assert any(s.startswith("31951") and "streamSid" in s for s in call.protocol_error_samples)
    assert any("unknown event 'playAudio'" in s for s in call.protocol_error_samples)
    assert any(s.startswith("31950") for s in call.protocol_error_samples)


@pytest.mark.asyncio
async def test_handshake_failures_are_counted_not_raised() -> None:
    async with EchoServer(reject=403) as srv:
        url = srv.url("twilio")
        rejected = await asyncio.wait_for(
            run_calls(url, provider="twilio", calls=2, seconds=1.0), scaled(10))
    refused = await asyncio.wait_for(  # the server is gone: connection refused
        run_calls(url, provider="twilio", seconds=1.0), scaled(10))
    assert rejected.handshake_failures == 2 and rejected.connected == 0
    assert "HTTP 403" in (rejected.calls[0].failure or "")
    assert refused.handshake_failures == 1
    assert refused.to_dict()["latency_ms"]["count"] == 0


@pytest.mark.asyncio
async def test_wss_streams_verify_the_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with EchoServer(0.0, ssl=server_ctx) as srv:
        ok, untrusted = await asyncio.wait_for(asyncio.gather(
            run_calls(srv.url("twilio"), provider="twilio", seconds=1.0, ssl_context=trusting,
                      secret="tok"),
            run_calls(srv.url("twilio"), provider="twilio", seconds=1.0),
        ), scaled(10))
        headers = srv.connections[0].request_headers
    call = ok.calls[0]
    assert srv.url("twilio").startswith("wss://")
    assert call.end == "completed" and call.probes_returned == call.probes > 0
    # The upgrade carries Twilio's signature over the wss:// URL (§1.7).
    from twilio.request_validator import RequestValidator

    assert RequestValidator("tok").validate(srv.url("twilio"), {}, headers["x-twilio-signature"])
    # A certificate nobody vouches for is a handshake failure, not a crash.
    assert untrusted.handshake_failures == 1
    assert "CERTIFICATE_VERIFY_FAILED" in (untrusted.calls[0].failure or "")
