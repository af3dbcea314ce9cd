"""What ``mediastream call`` gates on and says: audible latency by default, both shown,
how each call closed; a TLS failure names the URL dialled."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from _util_caller import EchoServer
from _util_server import self_signed

from mediastream.caller import run_calls
from mediastream.caller.cli import format_comparison, format_report, merge_reports
from mediastream.caller.report import CallReport, RunReport


def _run(gate: str = "audible", **limits: float) -> RunReport:
    # A server that sends ahead of real time: a short round trip, a longer wait in the
    # provider's playout buffer -- the caller hears round trip + queue.
    calls = [
        CallReport(index=i, provider="twilio", end="completed", close_code=1000,
                   close_reason="bot finished", latencies_ms=[4.0] * 10,
                   queue_ms=[56.0] * 10, latency_times_s=[0.5 * k for k in range(10)])
        for i in range(2)
    ]
    calls.append(CallReport(index=2, provider="twilio", end="server_closed",
                            close_code=1011, close_reason="bot error"))
    return RunReport("ws://x/ws/twilio", "twilio", 5.0, calls, limits=dict(limits), gate=gate)


def test_the_gate_is_the_audible_latency_unless_asked_otherwise() -> None:
    assert _run(max_p99_ms=30).violations() == ["audible latency p99 60.0 ms > 30 ms"]
    assert _run("round-trip", max_p99_ms=30).violations() == []
    assert _run("round-trip", max_p99_ms=3).violations() == [
        "round-trip latency p99 4.0 ms > 3 ms"]


def test_the_summary_shows_both_latencies_and_how_calls_closed() -> None:
    text = format_report(_run(max_p99_ms=30))
    assert "= audible         p50 60.0" in text and text.count("<- gate") == 1
    assert "latency (round trip)  p50 4.0" in text
    assert "closed with       1000 'bot finished' x2, 1011 'bot error' x1" in text
    assert "FAIL: audible latency p99 60.0 ms > 30 ms" in text


def test_merged_rounds_and_the_comparison_block() -> None:
    a = merge_reports([_run(), _run()])
    assert len(a.calls) == 6
    a.label = "ours"
    b = _run()
    b.label = "theirs"
    block = format_comparison([a, b])
    assert block.splitlines()[1].startswith("ours ") and "(gate: audible)" in block


@pytest.mark.asyncio
async def test_a_tls_failure_names_the_url_dialled(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with EchoServer(0.0, ssl=context) as srv:
        url = srv.url("twilio").replace("ws://", "wss://")
        report = await run_calls(url, provider="twilio", seconds=1.0)
    (call,) = report.calls
    assert call.handshake_failed
    assert call.failure is not None and f"TLS to {url} failed" in call.failure
    assert "--insecure" in call.failure
