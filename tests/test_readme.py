"""The README's Python examples run as written (a stale example is a bug)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def _block(marker: str) -> str:
    found = [b for b in BLOCKS if marker in b]
    assert len(found) == 1, f"expected one README python block containing {marker!r}"
    return found[0]


def test_protocols_example_prints_what_its_comments_say() -> None:
    code = _block("ProviderDetector")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README:protocols", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0] == "twilio CA1 support-bot"
    assert lines[1] == "pcmu 5"
    assert lines[2] == '{"event":"media","streamSid":"MZ1","medi'  # first 40 characters


def test_session_example_prints_what_its_comments_say() -> None:
    code = _block("CallSession(started.call, Host()")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README:session", "exec"), {})
    assert out.getvalue().splitlines() == [
        "bot gets ['InboundAudio']",
        "wake",
        "bot gets ['PlayoutStarted']",
        "['SendAudio']",
        '{"event":"media","streamSid":"',
    ]


def test_codecs_example_runs() -> None:
    exec(compile(_block("StreamResampler(8000, 16000)"), "README:codecs", "exec"), {})


def test_pipecat_bot_example_loads_as_a_bot(tmp_path: Path) -> None:
    pytest.importorskip("pipecat")
    from mediastream.agents import load_bot

    path = tmp_path / "mybot.py"
    path.write_text(_block("async def run_bot(transport, call)"), encoding="utf-8")
    assert callable(load_bot(str(path)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.asyncio
async def test_embedding_example_serves_a_call_and_stops_on_sigterm(tmp_path: Path) -> None:
    from mediastream.caller import run_calls

    port = _free_port()
    code = _block("asyncio.run(serve(config, parrot))")
    code = code.replace("with_overrides(port=8765)", f"with_overrides(port={port})")
    script = tmp_path / "embedded.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEDIASTREAM_", "TWILIO_", "TELNYX_", "PLIVO_"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
            assert time.monotonic() < deadline, "the README example never listened"
            time.sleep(0.05)
        report = await run_calls(
            f"ws://127.0.0.1:{port}/ws/twilio", provider="twilio", calls=1, seconds=1.2,
        )
        data = report.to_dict()
        assert data["connected"] == 1
        assert data["probes_returned"] >= 1  # the example echoes the caller's audio
        assert data["lost_ms_per_call"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            output = proc.communicate(timeout=20)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, output
