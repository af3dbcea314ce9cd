"""The softphone and the dashboard in a real browser, against ``mediastream serve --bot echo``.

Headless chromium (driven over CDP, tests/_util_browser.py) with a fake microphone
playing tests/assets/tones.wav (440 Hz, then 880 Hz, in a loop) calls the server's media
path in each provider's dialect and codec: the call connects, both tones come back
through the echo bot and are heard (the page's playout measures each frame's frequency),
marks are echoed and the server counts them as played by echo, DTMF keys reach the bot
(its log line), and hanging up ends the call with 1000. Another test keeps /dashboard
open while ``mediastream call`` places calls: they are listed, then listed as ended.

Without chromium the module is skipped with one line (``make e2e`` installs it);
``MEDIASTREAM_E2E=1`` (set by ``make e2e``) turns the skip into a failure.
Screenshots land in ``MEDIASTREAM_SCREENSHOTS`` when set (``make e2e`` sets docs/).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _util_browser import Browser, browser, find_chromium
from _util_timing import scaled

from audiocodecs import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from mediastream.server.pages import static_file

CHROMIUM = find_chromium()
if CHROMIUM is None:
    if os.environ.get("MEDIASTREAM_E2E") == "1":
        raise RuntimeError("MEDIASTREAM_E2E=1 but no chromium on PATH (make e2e installs it)")
    pytest.skip("browser tests skipped: no chromium on PATH (make e2e installs it and runs "
                "them)", allow_module_level=True)

SHOTS = Path(os.environ["MEDIASTREAM_SCREENSHOTS"]) if os.environ.get(
    "MEDIASTREAM_SCREENSHOTS") else None


class Served:
    """``mediastream serve --bot echo`` on 127.0.0.1, its port and its log lines."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.port = 0
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        assert self.process.stderr is not None
        stream = self.process.stderr
        async with asyncio.timeout(scaled(60)):
            while not self.port:
                line = (await stream.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError("server exited:\n" + "".join(self.lines))
                self.lines.append(line)
                found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
                if found:
                    self.port = int(found.group(1))
        self._reader = asyncio.get_running_loop().create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append(line.decode(errors="replace"))

    async def wait_log(self, pattern: str, timeout: float = 10.0) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + scaled(timeout)
        while loop.time() < deadline:
            for line in self.lines:
                if re.search(pattern, line):
                    return line
            await asyncio.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}:\n" + "".join(self.lines[-30:]))

    def calls(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/calls", timeout=5) as r:
            listing: dict[str, Any] = json.load(r)
        return listing

    def calls_with(self, token: str) -> dict[str, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/calls",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as r:
            listing: dict[str, Any] = json.load(r)
        return listing


CLEAR_BOT = Path(__file__).parent / "_e2e_bots.py"


@contextlib.asynccontextmanager
async def served(*, bot: str | None = "echo", **env_changes: str) -> AsyncIterator[Served]:
    """The echo bot by default (``None``: the server's default, the parrot); agent
    ``clearer``: tests/_e2e_bots.py's tone it clears."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("MEDIASTREAM_API_TOKEN", "MEDIASTREAM_REQUIRE_AUTH", "TWILIO_AUTH_TOKEN",
                 "TELNYX_PUBLIC_KEY", "PLIVO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "TELNYX_API_KEY",
                 "PLIVO_AUTH_ID"):
        env.pop(name, None)
    env.update(env_changes)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediastream", "serve", *(["--bot", bot] if bot else []),
        "--host", "127.0.0.1", "--port", "0", "--agent", f"clearer={CLEAR_BOT}:clear_bot",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env)
    server = Served(process)
    try:
        await server.start()
        yield server
    finally:
        if process.returncode is None:
            process.terminate()
            async with asyncio.timeout(scaled(20)):
                await process.wait()
        if server._reader is not None:
            server._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server._reader


def _heard(phone: dict[str, Any], hz: float, tolerance: float = 25.0) -> int:
    """Frames the page heard within ``tolerance`` of ``hz``."""
    return sum(n for key, n in phone["heard"]["hz"].items() if abs(float(key) - hz) <= tolerance)


async def _one_call(chrome: Browser, server: Served, provider: str, codec: str,
                    shot: Path | None = None) -> None:
    page = await chrome.open(
        f"http://127.0.0.1:{server.port}/phone?provider={provider}&codec={codec}"
        f"&param.tenant=acme&autocall=1")
    try:
        await page.wait_for("window.phone && window.phone.state === 'live'", scaled(20))
        call_id = await page.evaluate("window.phone.callId")
        # Both tones of the microphone's WAV come back through the echo bot and are heard.
        await page.wait_for(
            "(() => { const h = window.phone.heard.hz; const near = (f) => Object.entries(h)"
            ".filter(([k]) => Math.abs(k - f) <= 25).reduce((n, [, c]) => n + c, 0);"
            " return near(440) >= 5 && near(880) >= 5; })()", scaled(20))
        await page.evaluate("window.phoneControl.pressKey('5'); window.phoneControl.pressKey('#')")
        await server.wait_log(rf"\[call {re.escape(call_id)}\] echo bot: DTMF 5")
        await server.wait_log(rf"\[call {re.escape(call_id)}\] echo bot: DTMF #")
        await page.wait_for("window.phone.marksEchoed >= 3", scaled(10))
        [row] = [r for r in server.calls()["calls"] if r["call_id"] == call_id]
        assert row["provider"] == provider and row["direction"] == "inbound"
        assert row["inbound"].startswith(codec)
        # The server resolved marks by the page's echoes, not by its clock fallback.
        assert row["marks_played"] - row["marks_timed_out"] >= 1, row
        if shot is not None:
            await asyncio.sleep(4)  # a few seconds of the rolling chart
            await page.screenshot(shot)
        phone = await page.evaluate("window.phone")
        assert phone["error"] is None, phone
        assert _heard(phone, 440) >= 5 and _heard(phone, 880) >= 5, phone["heard"]
        assert phone["framesSent"] > 50 and phone["mediaReceived"] > 25
        print(f"{provider}/{codec}: mark played in {phone['markMs']} ms, bot talks over the "
              f"caller after {phone['echoMs']} ms, underruns {phone['underruns']}")
        await page.evaluate("window.phoneControl.hangup()")
        await page.wait_for("window.phone.state === 'ended'", scaled(10))
        assert await page.evaluate("window.phone.closeCode") == 1000
        await server.wait_log(rf"\[call {re.escape(call_id)}\] call ended")
        ended = {r["call_id"]: r for r in server.calls()["ended"]}
        assert ended[call_id]["state"] == "ended"
    finally:
        await page.close()


@pytest.mark.asyncio
async def test_softphone_in_each_dialect_and_codec() -> None:
    async with served() as server, browser(CHROMIUM) as chrome:
        for provider, codec in (("twilio", "pcmu"), ("telnyx", "pcma"), ("telnyx", "l16"),
                                ("plivo", "l16")):
            shot = SHOTS / "softphone.png" if SHOTS and provider == "twilio" else None
            await _one_call(chrome, server, provider, codec, shot)


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", ["twilio", "plivo"])
async def test_a_clear_silences_the_phone_at_once(provider: str) -> None:
    """The bot queues seconds of a 600 Hz tone and clears it on key 1: the phone drops
    what it holds (Twilio: echoing the pending marks; Plivo: clearedAudio), and hears no
    more of it."""
    async with served() as server, browser(CHROMIUM) as chrome:
        page = await chrome.open(
            f"http://127.0.0.1:{server.port}/phone?provider={provider}&agent=clearer"
            "&autocall=1")
        await page.wait_for("window.phone.state === 'live'", scaled(20))
        near600 = ("Object.entries(window.phone.heard.hz).filter(([k]) => Math.abs(k - 600)"
                   " <= 25).reduce((n, [, c]) => n + c, 0)")
        await page.wait_for(f"{near600} >= 25", scaled(10))  # half a second of it
        call_id = await page.evaluate("window.phone.callId")
        await page.evaluate("window.phoneControl.pressKey('1')")
        await page.wait_for("window.phone.clears === 1", scaled(5))
        heard_at_clear = await page.evaluate(near600)
        await asyncio.sleep(1.0)
        phone = await page.evaluate("window.phone")
        # What was already on its way out to the speaker (a frame or two) may finish.
        assert await page.evaluate(near600) <= heard_at_clear + 2
        assert phone["queuedMs"] == 0 and phone["botDbfs"] == -90
        [row] = [r for r in server.calls()["calls"] if r["call_id"] == call_id]
        assert row["clears"] == 1 and row["playout_queue_ms"] == 0
        # The bot speaks again after the clear: the phone plays it.
        await page.evaluate("window.phoneControl.pressKey('2')")
        await page.wait_for(f"{near600} >= {heard_at_clear + 25}", scaled(10))
        await page.evaluate("window.phoneControl.hangup()")
        await page.wait_for("window.phone.state === 'ended'", scaled(10))
        await page.close()


@pytest.mark.asyncio
async def test_make_run_s_parrot_greets_and_hangs_up_on_hash() -> None:
    """What a newcomer gets from ``make run`` and a click on Call: the default bot (the
    parrot, a Pipecat pipeline) greets the caller; ``#`` plays its goodbye and the bot
    hangs up, which the phone sees as the server's close with 1000."""
    pytest.importorskip("pipecat")
    async with served(bot=None) as server, browser(CHROMIUM) as chrome:
        page = await chrome.open(f"http://127.0.0.1:{server.port}/phone?autocall=1")
        await page.wait_for("window.phone.state === 'live'", scaled(30))
        await page.wait_for("window.phone.heard.loudFrames >= 25", scaled(15))  # the greeting
        await page.evaluate("window.phoneControl.pressKey('#')")
        await page.wait_for("window.phone.state === 'ended'", scaled(20))
        phone = await page.evaluate("window.phone")
        assert phone["closeCode"] == 1000, phone
        assert phone["marksEchoed"] >= 1 and phone["error"] is None
        await page.close()


@pytest.mark.asyncio
async def test_recording_is_a_stereo_wav_of_both_sides() -> None:
    async with served() as server, browser(CHROMIUM) as chrome:
        page = await chrome.open(f"http://127.0.0.1:{server.port}/phone?autocall=1")
        await page.wait_for("window.phone.state === 'live'", scaled(20))
        await page.evaluate("document.getElementById('record').click()")
        await asyncio.sleep(2.5)  # more than a 440 + 880 Hz cycle of the microphone
        await page.evaluate("document.getElementById('record').click()")
        encoded = await page.wait_for("window.phoneRecording && (() => { const b = new "
                                      "Uint8Array(window.phoneRecording); let s = ''; for "
                                      "(const x of b) s += String.fromCharCode(x); "
                                      "return btoa(s); })()", scaled(5))
        await page.evaluate("window.phoneControl.hangup()")
        await page.close()
    import base64
    import io
    import wave

    with wave.open(io.BytesIO(base64.b64decode(encoded))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        frames = wav.readframes(wav.getnframes())
    both = np.frombuffer(frames, dtype="<i2").reshape(-1, 2).astype(np.float64)
    assert 2.0 <= len(both) / 8000 <= 3.0
    for channel in (0, 1):  # you, then the echo bot: both tones on each side
        spectrum = np.abs(np.fft.rfft(both[:, channel]))
        freqs = np.fft.rfftfreq(len(both), 1 / 8000)
        top = {round(float(f), -1) for f in freqs[np.argsort(spectrum)[-6:]]}
        assert any(abs(f - 440) <= 20 for f in top) and any(abs(f - 880) <= 20 for f in top)


@pytest.mark.asyncio
async def test_with_an_api_token_the_page_asks_for_it() -> None:
    """MEDIASTREAM_API_TOKEN set and stream tokens required: the page gets a one-time
    stream token with the API token typed in, and the call goes through; without it the
    page says why and no call starts."""
    async with served(MEDIASTREAM_API_TOKEN="e2e-token", MEDIASTREAM_REQUIRE_AUTH="1",
                      ) as server, browser(CHROMIUM) as chrome:
        page = await chrome.open(f"http://127.0.0.1:{server.port}/phone?provider=telnyx")
        await page.wait_for("window.phone.access === 'token'", scaled(20))
        assert not await page.evaluate("document.getElementById('token-row').hidden")
        await page.evaluate("window.phoneControl.call()")
        await page.wait_for("window.phone.error", scaled(10))
        assert "401" in await page.evaluate("window.phone.error")
        assert not [r for r in server.calls_with("e2e-token")["calls"]]
        await page.evaluate("document.getElementById('token').value = 'e2e-token'")
        await page.evaluate("window.phoneControl.call()")
        await page.wait_for("window.phone.state === 'live'", scaled(20))
        await page.wait_for("window.phone.heard.loudFrames >= 10", scaled(10))
        call_id = await page.evaluate("window.phone.callId")
        assert [r["call_id"] for r in server.calls_with("e2e-token")["calls"]] == [call_id]
        await page.evaluate("window.phoneControl.hangup()")
        await page.wait_for("window.phone.state === 'ended'", scaled(10))
        assert await page.evaluate("window.phone.closeCode") == 1000
        await page.close()


async def _place_calls(port: int, calls: int, seconds: float) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediastream", "call", "--provider", "telnyx", "--calls",
        str(calls), "--seconds", str(seconds), "--quiet", f"ws://127.0.0.1:{port}/ws/telnyx",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def _finished(caller: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(scaled(60)):
        _, err = await caller.communicate()
    assert caller.returncode == 0, err.decode()


@pytest.mark.asyncio
async def test_dashboard_lists_calls_then_their_end() -> None:
    async with served() as server, browser(CHROMIUM) as chrome:
        page = await chrome.open(f"http://127.0.0.1:{server.port}/dashboard")
        await page.wait_for("window.dashboard && window.dashboard.polls >= 1", scaled(20))
        assert await page.evaluate("window.dashboard.error") is None
        # Two short calls come and go ...
        await _finished(await _place_calls(server.port, 2, 1))
        await page.wait_for("window.dashboard.listing.ended.length === 2", scaled(10))
        # ... then three longer ones are listed while they last.
        caller = await _place_calls(server.port, 3, 3)
        try:
            await page.wait_for("window.dashboard.listing.calls.length === 3", scaled(20))
            rows = await page.evaluate("document.querySelectorAll('#live tbody tr').length")
            assert rows == 3
            if SHOTS:
                await asyncio.sleep(1.5)  # a poll with levels and durations in
                await page.screenshot(SHOTS / "dashboard.png")
            listed = await page.evaluate("window.dashboard.listing.calls")
            assert {r["provider"] for r in listed} == {"telnyx"}
            assert all(r["frames_in"] > 0 and r["state"] == "live" for r in listed)
        finally:
            await _finished(caller)
        await page.wait_for("window.dashboard.listing.calls.length === 0", scaled(15))
        await page.wait_for("window.dashboard.listing.ended.length === 5", scaled(5))
        ended = await page.evaluate("window.dashboard.listing.ended")
        assert {r["state"] for r in ended} == {"ended"}
        assert all(r["outcome"] and r["ended_at"] for r in ended)
        rows = await page.evaluate("document.querySelectorAll('#ended tbody tr').length")
        assert rows == 5
        await page.close()


_WORKLET_PROBE = """
(() => {
  globalThis.AudioWorkletProcessor = class {};
  globalThis.registerProcessor = () => {};
  globalThis.sampleRate = 48000;
  const m = new Function(%s + '; return {mulawEncode, alawEncode, mulawDecode, alawDecode,'
                             + ' Resampler, dominantHz};')();
  const all = [];
  for (let s = -32768; s < 32768; s++) all.push(s);
  const tone = (hz, rate, n) => Float32Array.from(
    {length: n}, (_, i) => 0.5 * Math.sin(2 * Math.PI * hz * i / rate));
  const run = (inRate, outRate, hz) => Array.from(
    new m.Resampler(inRate, outRate).push(tone(hz, inRate, inRate)));
  return {
    mu: all.map(m.mulawEncode), a: all.map(m.alawEncode),
    muDec: Array.from({length: 256}, (_, i) => m.mulawDecode(i)),
    aDec: Array.from({length: 256}, (_, i) => m.alawDecode(i)),
    down440: run(48000, 8000, 440), down6k: run(48000, 8000, 6000),
    down441: run(44100, 16000, 1000), up1k: run(8000, 48000, 1000),
    hz: m.dominantHz(Float32Array.from(tone(440, 8000, 160)), 8000),
  };
})()
"""


@pytest.mark.asyncio
async def test_worklet_codecs_and_resampler() -> None:
    """The worklet's G.711 encoders and decoders against audiocodecs on every value, and
    its resampler's passband and stopband, run in the browser's own JavaScript engine."""
    source = static_file("worklet.js")[0].decode()
    async with browser(CHROMIUM) as chrome:
        page = await chrome.open("about:blank")
        got = await page.evaluate(_WORKLET_PROBE % json.dumps(source))
        await page.close()
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert np.array_equal(np.array(got["mu"]), ulaw_encode(every))
    assert np.array_equal(np.array(got["a"]), alaw_encode(every))
    assert np.array_equal(np.array(got["muDec"]), ulaw_decode(bytes(range(256))))
    assert np.array_equal(np.array(got["aDec"]), alaw_decode(bytes(range(256))))

    def rms(x: list[float]) -> float:
        y = np.array(x[100:-100])  # past the filter's start
        return float(np.sqrt(np.mean(y * y)))

    sine = 0.5 / np.sqrt(2)
    assert len(got["down440"]) == pytest.approx(8000, abs=10)
    assert rms(got["down440"]) == pytest.approx(sine, rel=0.01)  # passband: kept
    assert rms(got["down6k"]) < sine * 1e-3  # above 4 kHz: no alias into 8 kHz (-60 dB)
    assert rms(got["down441"]) == pytest.approx(sine, rel=0.01)  # 44.1 kHz devices too
    up = np.array(got["up1k"][300:-300])
    assert rms(got["up1k"]) == pytest.approx(sine, rel=0.01)
    spectrum = np.abs(np.fft.rfft(up * np.hanning(len(up))))
    freqs = np.fft.rfftfreq(len(up), 1 / 48000)
    image = spectrum[(freqs > 6500) & (freqs < 9500)].max()  # the 7 kHz image of 1 kHz
    assert image < spectrum.max() * 1e-3
    assert got["hz"] == pytest.approx(440, abs=2)
