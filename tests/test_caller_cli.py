"""``mediastream call`` as a user runs it: a real subprocess, JSON output, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from _util_caller import EchoServer, scaled

from mediastream.config import Config, ProviderCredentials
from mediastream.echo import echo_bot
from mediastream.server import MediaStreamServer

ROOT = Path(__file__).resolve().parent.parent
_TOKENS = ("TWILIO_AUTH_TOKEN", "PLIVO_AUTH_TOKEN")


async def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``mediastream call``; ``env`` replaces the provider tokens of our environment."""
    environ = {k: v for k, v in os.environ.items() if k not in _TOKENS}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediastream", "call", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), scaled(30))
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
async def test_json_output_and_exit_codes(tmp_path: Path) -> None:
    plot = tmp_path / "run.png"
    async with EchoServer(0.040) as srv:
        url = srv.url("twilio")
        (ok, out, err), (slow, out2, _) = await asyncio.gather(
            _cli(url, "--provider", "twilio", "--calls", "2", "--seconds", "1.5", "--json",
                 "--max-p99-ms", "500", "--max-lost-ms", "5", "--plot", str(plot)),
            _cli(url, "--provider", "twilio", "--seconds", "1.5", "--max-p99-ms", "10"),
        )
    assert ok == 0, err
    report = json.loads(out)  # stdout is exactly one JSON object; progress went to stderr
    assert report["calls"] == 2 and report["handshake_failures"] == 0
    assert set(report["latency_ms"]) >= {"p50", "p95", "p99", "max"}
    assert 39.5 <= report["latency_ms"]["p50"] <= 40 + scaled(5)
    assert report["lost_ms_per_call"] == 0
    assert isinstance(report["jitter_ms"], float)
    assert report["underruns"] >= 0
    assert set(report["send_lag_ms"]) == {"p50", "p99", "max"}
    assert report["violations"] == [] and len(report["per_call"]) == 2
    assert plot.stat().st_size > 10_000
    # Over the limit: exit 1, and the human summary says why.
    assert slow == 1
    assert "FAIL: audible latency p99" in out2 and "> 10 ms" in out2


@pytest.mark.asyncio
async def test_usage_errors_and_unreachable_servers() -> None:
    (bad, _, err), (nothing, out, _), (twilio_l16, _, err3) = await asyncio.gather(
        _cli("ws://127.0.0.1:9/x", "--provider", "twilio", "--fault", "flood:1"),
        _cli("ws://127.0.0.1:9/x", "--provider", "twilio", "--seconds", "1", "--json"),
        _cli("ws://127.0.0.1:9/x", "--provider", "twilio", "--codec", "l16"),
    )
    assert bad == 2 and "bad fault" in err
    assert nothing == 3  # no call connected
    assert json.loads(out)["handshake_failures"] == 1
    assert twilio_l16 == 2 and "μ-law" in err3


@pytest.mark.asyncio
async def test_sign_uses_the_token_the_server_reads() -> None:
    config = Config(host="127.0.0.1", port=0, credentials=ProviderCredentials(
        twilio_account_sid="AC" + "0" * 32, twilio_auth_token="twilio-token"))
    async with MediaStreamServer(config, bot=echo_bot) as server:
        hook = f"http://127.0.0.1:{server.port}/twilio"
        (signed, out, err), (missing, _, err2), (telnyx, _, err3) = await asyncio.gather(
            _cli(hook, "--provider", "twilio", "--sign", "--seconds", "1", "--json",
                 env={"TWILIO_AUTH_TOKEN": "twilio-token"}),
            _cli(hook, "--provider", "twilio", "--sign", "--seconds", "1"),
            _cli(hook, "--provider", "telnyx", "--sign", "--seconds", "1",
                 env={"TWILIO_AUTH_TOKEN": "twilio-token"}),
        )
    # The signed webhook is answered and its stream token accepted: the call ran.
    assert signed == 0, err
    report = json.loads(out)
    assert report["handshake_failures"] == 0 and report["connected"] == 1
    assert report["probes_returned"] == report["probes"] > 0
    assert missing == 2 and "no auth token for twilio" in err2
    assert telnyx == 2 and "--secret" in err3


@pytest.mark.asyncio
async def test_two_urls_are_compared_interleaved_in_one_plot(tmp_path: Path) -> None:
    plot = tmp_path / "compare.png"
    async with EchoServer(0.020) as fast, EchoServer(0.060) as slow:
        code, out, err = await _cli(
            fast.url("twilio"), slow.url("twilio"), "--provider", "twilio", "--calls", "2",
            "--seconds", "1.5", "--label", "fast", "--label", "slow", "--json",
            "--max-p99-ms", "1000", "--plot", str(plot))
        text_code, text, _ = await _cli(
            fast.url("twilio"), slow.url("twilio"), "--provider", "twilio", "--seconds", "1",
            "--rounds", "1", "--gate", "round-trip")
    assert code == 0, err
    fast_run, slow_run = json.loads(out)["compare"]
    assert (fast_run["label"], slow_run["label"]) == ("fast", "slow")
    for run, server in ((fast_run, fast), (slow_run, slow)):
        assert run["url"] == server.url("twilio") and run["gate"] == "audible"
        assert run["calls"] == 4  # two rounds of two calls, against the same load
        assert run["handshake_failures"] == 0
    # One server's echo is 40 ms later than the other's, and the figures say so.
    assert slow_run["latency_ms"]["p50"] > fast_run["latency_ms"]["p50"]
    assert slow_run["audible_latency_ms"]["p50"] > fast_run["audible_latency_ms"]["p50"]
    assert plot.stat().st_size > 10_000
    assert text_code == 0
    # Both latencies per server, the gated one marked, then the side-by-side block.
    assert text.count("<- gate") == 2 and "(gate: round-trip)" in text
    assert text.count("  = audible ") == 2


@pytest.mark.asyncio
async def test_plot_without_matplotlib_is_refused_before_the_run(tmp_path: Path) -> None:
    fake = tmp_path / "matplotlib"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('not here')\n")
    code, out, err = await _cli(
        "ws://127.0.0.1:9/x", "--provider", "twilio", "--seconds", "1",
        "--plot", str(tmp_path / "p.png"), env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert code == 2 and "--plot needs matplotlib" in err  # not 3: no call was placed
    assert out == ""
