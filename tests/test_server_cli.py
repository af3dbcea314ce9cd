"""``mediastream serve`` as a user runs it: real processes, real signals."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from _util_server import FakeProvider, scaled, ulaw_payload

from mediastream.agents import registry_from_config
from mediastream.config import Config
from mediastream.server.cli import add_parser, config_from_args

ROOT = Path(__file__).resolve().parent.parent


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def test_flags_overlay_the_environment_config() -> None:
    base = Config(max_calls=7, agents="a=x.py")
    args = _parse("--port", "9000", "--bot", "echo", "--agent", "sales=bots.sales",
                  "--idle-media-timeout", "2.5", "--workers", "3")
    config = config_from_args(args, base)
    assert config.port == 9000 and config.bot == "echo" and config.workers == 3
    assert config.idle_media_timeout == 2.5
    assert config.max_calls == 7  # untouched flags keep the environment's value
    assert config.agents == "a=x.py,sales=bots.sales"


@pytest.mark.parametrize(("argv", "full"), [
    (["serve", "--drain", "30"], ["serve", "--drain-timeout", "30"]),
    (["call", "--provider", "twilio", "--call", "2", "ws://x"],
     ["call", "--provider", "twilio", "--calls", "2", "ws://x"]),
])
def test_abbreviated_flags_are_refused(
    argv: list[str], full: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # --drain would otherwise mean --drain-timeout, and --call --calls: a manifest or script
    # using one would break silently the day a new flag shares the prefix.
    from mediastream.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(argv)
    assert exc.value.code == 2
    abbreviation = next(a for a in argv if a.startswith("--") and a not in full)
    assert "unrecognized arguments: " + abbreviation in capsys.readouterr().err
    parser.parse_args(full)  # the full spelling is accepted


def test_bad_agent_flag_is_rejected() -> None:
    with pytest.raises(ValueError, match="NAME=SPEC"):
        config_from_args(_parse("--agent", "nope"), Config())


def test_listen_only_flags() -> None:
    base = Config(agents="a=echo", listen_only_agents="a")
    args = _parse("--agent", "notes=echo", "--listen-only", "notes",
                  "--listen-continue", "+15551230000")
    config = config_from_args(args, base)
    assert config.listen_only_agents == "a,notes"
    assert config.listen_continue == "+15551230000"
    assert registry_from_config(config).listen_only == {"a", "notes"}
    bad = config_from_args(_parse("--listen-only", "ghost"), Config(bot="echo"))
    with pytest.raises(ValueError, match="ghost"):
        registry_from_config(bad)


class _Process:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def wait_for_line(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        regex = re.compile(pattern)
        async with asyncio.timeout(scaled(30)):
            while True:
                found = [m for m in map(regex.search, self.lines) if m]
                if len(found) >= count:
                    return found
                assert self.process.stderr is not None
                line = await self.process.stderr.readline()
                assert line, "process exited:\n" + "".join(self.lines)
                self.lines.append(line.decode(errors="replace"))

    async def finish(self) -> int:
        assert self.process.stderr is not None
        async with asyncio.timeout(scaled(30)):
            rest = await self.process.stderr.read()
            self.lines.append(rest.decode(errors="replace"))
            return await self.process.wait()


async def _spawn(*argv: str) -> _Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for key in list(env):
        if key.startswith(("MEDIASTREAM_", "TWILIO_", "TELNYX_", "PLIVO_", "PROMETHEUS_")):
            del env[key]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediastream", "serve", *argv,
        cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    return _Process(process)


class _Port:
    def __init__(self, port: int) -> None:
        self.port = port


async def _one_call(port: int, provider: str) -> None:
    fake = FakeProvider(provider)
    async with fake.connect(_Port(port)):  # type: ignore[arg-type]
        await fake.open()
        fake.start_pump()
        sent = ulaw_payload(3)
        for i in range(3):
            await fake.send(fake.media(sent[i * 160 : (i + 1) * 160]))
        assert await fake.wait_audio(len(sent)) == sent
        await fake.send(fake.stop())
        assert (await fake.closed())[0] == 1000


@pytest.mark.asyncio
async def test_serve_runs_a_call_and_stops_cleanly_on_sigterm() -> None:
    server = await _spawn("--port", "0", "--bot", "echo", "--bot-sample-rate", "8000")
    try:
        match = (await server.wait_for_line(r"listening on 127\.0\.0\.1:(\d+)"))[0]
        port = int(match.group(1))
        await _one_call(port, "twilio")
        server.process.send_signal(signal.SIGTERM)
        code = await server.finish()
    finally:
        if server.process.returncode is None:
            server.process.kill()
            await server.process.wait()
    assert code == 0, "".join(server.lines)
    text = "".join(server.lines)
    assert "SIGTERM: shutting down gracefully" in text and "server closed" in text


@pytest.mark.asyncio
async def test_serve_with_an_unloadable_bot_says_what_to_do() -> None:
    server = await _spawn("--port", "0", "--bot", "surely_not_a_module")
    code = await server.finish()
    assert code == 2
    assert "no module named 'surely_not_a_module'" in "".join(server.lines)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.asyncio
async def test_workers_share_one_port_and_one_metrics_view() -> None:
    port = _free_port()
    server = await _spawn("--port", str(port), "--bot", "echo", "--bot-sample-rate", "8000",
                          "--workers", "2")
    try:
        await server.wait_for_line(r"\[worker \d\].*listening on", count=2)
        calls = 6
        await asyncio.gather(*(_one_call(port, "telnyx") for _ in range(calls)))
        async with aiohttp.ClientSession() as http:
            # Whichever worker answers, /metrics counts every worker's calls.
            for _ in range(3):
                async with http.get(f"http://127.0.0.1:{port}/metrics",
                                    headers={"Connection": "close"}) as r:
                    text = await r.text()
                total = re.search(
                    r'mediastream_calls_total\{outcome="stopped",provider="telnyx"\} (\S+)', text
                )
                assert total is not None and float(total.group(1)) == calls, text
        pids = {m.group(1) for m in map(re.compile(r"worker (\d) started \(pid (\d+)").search,
                                         server.lines) if m}
        assert len(pids) == 2
        server.process.send_signal(signal.SIGTERM)
        code = await server.finish()
    finally:
        if server.process.returncode is None:
            server.process.kill()
            await server.process.wait()
    assert code == 0, "".join(server.lines)


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_port_in_use_is_one_line_and_exit_1(workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = await _spawn("--host", "127.0.0.1", "--port", str(port), "--bot", "echo",
                              "--workers", workers)
        try:
            code = await asyncio.wait_for(server.finish(), scaled(30))
        finally:
            if server.process.returncode is None:
                server.process.kill()
                await server.process.wait()
    text = "".join(server.lines)
    assert code == 1, text
    assert f"mediastream serve: cannot listen on 127.0.0.1:{port}" in text
    assert "Traceback" not in text and "restarting" not in text
