"""Call recording (``serve --record DIR``, issue 14), end to end: a real server on
loopback, the real caller simulator (``mediastream.caller.run_calls``, the engine of
``mediastream call``) sending tone probes, and the files read back with Python's
:mod:`wave` -- the left channel must hold the caller's probes where the caller sent them,
the right one the echoes where the caller heard them, cut at a ``clear``; a both-tracks
listen-only fork records both tracks; a killed server leaves a readable file; a failing
disk stops the recording, not the call."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import websockets
from _util_caller import check_echo_call, scaled

from bench.record_check import check_echo_recording, read_recording, tone_onsets
from mediastream.agents import AgentRegistry
from mediastream.call import Call, InboundAudio
from mediastream.caller import run_calls
from mediastream.caller.audio import OTHER_PARTY_HZ
from mediastream.cli import main as cli_main
from mediastream.config import Config
from mediastream.echo import echo_bot
from mediastream.recording import safe_name
from mediastream.server import MediaStreamServer

PROVIDERS = ("twilio", "telnyx", "plivo")
ROOT = Path(__file__).resolve().parent.parent


def _config(directory: Path, **changes: object) -> Config:
    return Config(host="127.0.0.1", port=0, record_dir=str(directory), **changes)  # type: ignore[arg-type]


def _wavs(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wav"))


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spectrum[1:]) + 1) * rate / len(x)


@pytest.mark.asyncio
async def test_an_echo_call_records_probes_left_and_echoes_right_per_provider(
        tmp_path: Path) -> None:
    heard_dir = tmp_path / "caller"
    async with MediaStreamServer(_config(tmp_path / "rec"), bot=echo_bot) as server:
        reports = await asyncio.wait_for(asyncio.gather(*(
            run_calls(f"ws://127.0.0.1:{server.port}/ws/{p}", provider=p,  # type: ignore[arg-type]
                      seconds=3.0, dtmf="7@1.1", record_dir=heard_dir / p,
                      params={"lang": "en", "api_key": "s3cret"})
            for p in PROVIDERS)), scaled(20))
    for provider, report in zip(PROVIDERS, reports, strict=True):
        call = report.calls[0]
        check_echo_call(call)
        wav = tmp_path / "rec" / f"{safe_name(call.call_id)}.wav"
        assert check_echo_recording(wav, 3.0) == [], provider
        rec = read_recording(wav)
        assert rec.rate == 16000
        side = rec.sidecar
        assert side["provider"] == provider and side["call_id"] == call.call_id
        assert side["sample_rate"] == 16000 and side["complete"] is True
        # The end as the server logged it: a stop (1000 sent back), or, where the caller
        # just hangs up the socket, a disconnect (no close code of ours).
        assert (side["outcome"], side["close_code"]) in (("stopped", 1000),
                                                         ("disconnected", None)), side
        assert side["custom_parameters"]["lang"] == "en"
        assert side["custom_parameters"]["api_key"] == "<redacted>"  # never on disk
        assert "s3cret" not in (wav.with_suffix(".json")).read_text()
        events = side["events"]
        assert isinstance(events, list)
        kinds = [e["event"] for e in events]
        assert kinds[0] == "start" and kinds[-1] == "end"
        marks = [e for e in events if e["event"] == "mark_played"]
        assert marks and all(e["plays_at"] is not None and e["t"] >= e["plays_at"] - 0.1
                             for e in marks), marks  # echoed once their audio had played
        assert ("stop" in kinds) == (side["outcome"] == "stopped")
        dtmf = [e for e in events if e["event"] == "dtmf"]
        assert [e["digit"] for e in dtmf] == ["7"]
        assert abs(dtmf[0]["t"] - 1.1) < 0.1, dtmf  # on the WAV's timeline
        times = [e["t"] for e in events]
        assert all(b - a > -0.05 for a, b in itertools.pairwise(times)), times  # in order
        # The caller's own recording (what it heard, mono, same time zero: its start
        # message) lines up with the right channel: the same echoes, a few ms later (the
        # network and the caller's 20 ms playout tick).
        assert call.recording is not None
        with wave.open(call.recording, "rb") as w:
            caller_rate = w.getframerate()
            heard = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        ours, theirs = tone_onsets(rec.right, rec.rate), tone_onsets(heard, caller_rate)
        assert len(ours) == len(theirs) == call.probes
        assert all(0 <= b - a < 0.06 for a, b in zip(ours, theirs, strict=True)), (ours, theirs)
    assert not list((tmp_path / "rec").glob("*.jsonl"))  # merged into the sidecars


@pytest.mark.asyncio
async def test_twenty_calls_each_record_a_complete_file(tmp_path: Path) -> None:
    async with MediaStreamServer(_config(tmp_path), bot=echo_bot) as server:
        report = await asyncio.wait_for(run_calls(
            f"ws://127.0.0.1:{server.port}/ws/twilio", provider="twilio", calls=20,
            seconds=2.0, ramp=0.5), scaled(20))
    assert all(c.end == "completed" for c in report.calls)
    wavs = _wavs(tmp_path)
    assert {w.stem for w in wavs} == {safe_name(c.call_id) for c in report.calls}
    problems = [p for wav in wavs for p in check_echo_recording(wav, 2.0)]
    assert problems == []


class _TalkThenClear:
    """Talks 3 s of a 1 kHz tone as soon as the caller is heard, clears 1 s later."""

    def __init__(self) -> None:
        self.cleared_at: float | None = None

    async def __call__(self, call: Call) -> None:
        async for event in call:
            if isinstance(event, InboundAudio):
                break
        t = np.arange(3 * 16000) / 16000
        tone = np.round(12000 * np.sin(2 * np.pi * 1000 * t)).astype("<i2").tobytes()
        call.send_audio(tone, 16000)
        call.end_utterance()
        await asyncio.sleep(1.0)
        call.clear()
        async for _ in call:
            pass


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_clear_cuts_the_right_channel_where_the_caller_stopped_hearing(
        tmp_path: Path, provider: str) -> None:
    # A 1 s playout lead: at the clear, ~1 s of the tone has already gone to the
    # provider. The caller never hears it (the provider flushes it), so neither may the
    # recording hold it.
    bot = _TalkThenClear()
    async with MediaStreamServer(_config(tmp_path, playout_lead=1.0), bot=bot) as server:
        report = await asyncio.wait_for(run_calls(
            f"ws://127.0.0.1:{server.port}/ws/{provider}", provider=provider,  # type: ignore[arg-type]
            seconds=3.0), scaled(20))
    call = report.calls[0]
    assert call.end == "completed" and call.clears == 1
    (wav,) = _wavs(tmp_path)
    rec = read_recording(wav)
    events = rec.sidecar["events"]
    assert isinstance(events, list)
    (clear,) = [e for e in events if e["event"] == "clear"]
    stopped = [e for e in events if e["event"] == "playout_stopped"]
    assert stopped and stopped[-1]["cut"] is True
    loud = np.flatnonzero(np.abs(rec.right.astype(np.int32)) > 3000) / rec.rate
    assert len(loud)
    start, end = loud[0], loud[-1]
    assert abs(end - clear["t"]) < 0.03, (end, clear)
    assert 0.9 < end - start < 1.1  # one second heard, then nothing
    # ... although more than that was sent: the caller received frames past the cut.
    assert call.frames_received * 0.02 > (end - start) + 0.5
    # The left channel is the caller's probes, untouched by the clear.
    assert len(tone_onsets(rec.left, rec.rate)) == call.probes


@pytest.mark.asyncio
async def test_both_tracks_listen_only_calls_record_both_channels(tmp_path: Path) -> None:
    async def notes(call: Call) -> None:
        async for _ in call:
            pass

    registry = AgentRegistry(echo_bot, {"notes": notes})
    config = _config(tmp_path, listen_only_agents="notes", listen_continue="+15550001111")
    async with MediaStreamServer(config, bot=registry) as server:
        base = f"http://127.0.0.1:{server.port}"
        reports = await asyncio.wait_for(asyncio.gather(*(
            run_calls(f"{base}/{p}?agent=notes", provider=p, seconds=3.0,  # type: ignore[arg-type]
                      tracks="both")
            for p in PROVIDERS)), scaled(20))
    for provider, report in zip(PROVIDERS, reports, strict=True):
        call = report.calls[0]
        assert call.end == "completed", (provider, call.end, call.close_reason)
        rec = read_recording(tmp_path / f"{safe_name(call.call_id)}.wav")
        assert rec.sidecar["listen_only"] is True
        assert "inbound" in rec.sidecar["tracks"]  # as the start named them
        # Left: the caller's probes, where the caller sent them.
        left = tone_onsets(rec.left, rec.rate)
        assert len(left) == 5 and all(abs(t - (0.2 + 0.5 * k)) < 0.1
                                      for k, t in enumerate(left)), (provider, left)
        # Right: the other party's steady tone, from the first frame to the last.
        loud = np.flatnonzero(np.abs(rec.right.astype(np.int32)) > 3000) / rec.rate
        assert loud[0] < 0.1 and loud[-1] > 2.8, (provider, loud[0], loud[-1])
        middle = rec.right[rec.rate : 2 * rec.rate]
        assert abs(_peak_hz(middle, rec.rate) - OTHER_PARTY_HZ) < 10, provider


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_process(directory: Path, port: int, *, fsize: int | None = None
                    ) -> subprocess.Popen[bytes]:
    def limits() -> None:
        if fsize is not None:  # a "disk" that fills up: writes past fsize fail (EFBIG)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASTREAM_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediastream", "serve", "--port", str(port), "--bot", "echo",
         "--record", str(directory), "--log-level", "INFO"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=limits)
    deadline = time.monotonic() + scaled(20)
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("server did not listen")


@pytest.mark.asyncio
async def test_a_killed_server_leaves_a_readable_recording(tmp_path: Path) -> None:
    port = _free_port()
    proc = _server_process(tmp_path, port)
    try:
        run = asyncio.ensure_future(run_calls(
            f"ws://127.0.0.1:{port}/ws/twilio", provider="twilio", seconds=6.0))
        await asyncio.sleep(3.2)
        proc.send_signal(signal.SIGKILL)  # a crash: nothing gets to finish
        proc.wait()
        report = await asyncio.wait_for(run, scaled(20))
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stderr:
            proc.stderr.close()
    assert report.calls[0].end != "completed"
    (wav,) = _wavs(tmp_path)
    with wave.open(str(wav), "rb") as w:  # the standard reader takes it as it is
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 16000)
        frames = w.getnframes()
        data = np.frombuffer(w.readframes(frames), "<i2").reshape(-1, 2)
    assert len(data) == frames
    assert 44 + 4 * frames <= wav.stat().st_size
    # Everything up to the last block written: ~1.5 s flushed by then at least.
    assert frames / 16000 >= 1.5
    left, right = tone_onsets(data[:, 0], 16000), tone_onsets(data[:, 1], 16000)
    assert len(left) >= 3 and all(abs(t - (0.2 + 0.5 * k)) < 0.1 for k, t in enumerate(left))
    assert all(0 <= r - lo < 0.3 for lo, r in zip(left, right, strict=False))
    side = json.loads(wav.with_suffix(".json").read_text())
    assert side["complete"] is False and side["call_id"] == report.calls[0].call_id
    # The events written so far are there too, one JSON array per block written.
    lines = wav.with_suffix(".events.jsonl").read_text().splitlines()
    assert json.loads(lines[0])[0]["event"] == "start"


@pytest.mark.asyncio
async def test_a_failing_disk_stops_the_recording_and_not_the_call(tmp_path: Path) -> None:
    port = _free_port()
    proc = _server_process(tmp_path, port, fsize=100_000)  # ~1.5 s of stereo 16 kHz
    try:
        report = await asyncio.wait_for(run_calls(
            f"ws://127.0.0.1:{port}/ws/twilio", provider="twilio", seconds=4.0), scaled(20))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=scaled(20))
    call = report.calls[0]
    check_echo_call(call)  # the call went on to the end, every probe echoed
    log = err.decode()
    failures = [line for line in log.splitlines() if "recording to" in line]
    assert len(failures) == 1, log[-3000:]
    assert f"[call {call.call_id}]" in failures[0] and "recording stopped" in failures[0]
    (wav,) = _wavs(tmp_path)
    with wave.open(str(wav), "rb") as w:  # what was written before the failure reads fine
        frames = w.getnframes()
        assert len(w.readframes(frames)) == 4 * frames
    assert 44 + 4 * frames <= 100_000 and frames / 16000 > 1.0


@pytest.mark.asyncio
async def test_call_ids_cannot_leave_the_directory(tmp_path: Path) -> None:
    record = tmp_path / "rec"
    async with MediaStreamServer(_config(record), bot=echo_bot) as server:
        for call_sid in ("../../escape", "/etc/passwd", "..", "a/../../b\\c"):
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws/twilio") as ws:
                await ws.send(json.dumps({"event": "connected", "protocol": "Call",
                                          "version": "1.0.0"}))
                await ws.send(json.dumps({
                    "event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
                    "start": {"streamSid": "MZ1", "accountSid": "AC1", "callSid": call_sid,
                              "tracks": ["inbound"], "customParameters": {},
                              "mediaFormat": {"encoding": "audio/x-mulaw",
                                              "sampleRate": 8000, "channels": 1}}}))
                await ws.send(json.dumps({"event": "stop", "sequenceNumber": "2",
                                          "streamSid": "MZ1", "stop": {}}))
                await ws.wait_closed()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                   if p.is_file())
    # Everything stayed inside DIR, named after the sanitised id; ".." ends up "call".
    assert all(f.startswith("rec/") and "/" not in f[4:] for f in files), files
    assert "rec/_.._escape.wav" in files and "rec/_etc_passwd.wav" in files
    assert "rec/call.wav" in files and "rec/a_.._.._b_c.wav" in files
    sides = [json.loads((tmp_path / f).read_text()) for f in files if f.endswith(".json")]
    assert {s["call_id"] for s in sides} == {"../../escape", "/etc/passwd", "..", "a/../../b\\c"}


def test_an_unwritable_directory_is_a_start_up_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    bad = str(blocker / "rec")
    with pytest.raises(ValueError, match="not writable"):
        MediaStreamServer(Config(record_dir=bad))
    assert cli_main(["serve", "--record", bad, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "record directory" in err and bad in err and "not writable" in err
    with pytest.raises(ValueError, match="record_dir"):
        Config(record_dir="  ")
    assert Config.from_env({"MEDIASTREAM_RECORD_DIR": "/srv/rec"}).record_dir == "/srv/rec"
    assert Config().record_dir is None  # off by default


def test_logs_name_the_call_when_the_writer_fails(caplog: pytest.LogCaptureFixture,
                                                  tmp_path: Path) -> None:
    from mediastream.recording.disk import DiskWriter, WavSink

    sink = WavSink(tmp_path / "gone", "x", "CA-log", 16000)  # its directory does not exist
    writer = DiskWriter()
    with caplog.at_level(logging.ERROR, "mediastream.recording"):
        writer.submit(sink, "opening the file", lambda: sink.open({}))
        writer.submit(sink, "writing audio", lambda: sink.append(b"\0" * 4, []), 4)
        writer.close(10)
    assert sink.failed and writer.backlog == 0
    (record,) = caplog.records  # one line, and the later operation is skipped
    assert "[call CA-log]" in record.getMessage() and "opening the file" in record.getMessage()


@pytest.mark.asyncio
async def test_audio_late_in_a_burst_keeps_its_place_on_the_left(tmp_path: Path) -> None:
    # The caller's connection freezes for 400 ms at 1.1 s and then sends the backlog at
    # once (a TCP stall: late, not lost). The provider's timestamps say where that audio
    # belongs: the probe sent at 1.2 s stays at 1.2 s, and so does every later one.
    async with MediaStreamServer(_config(tmp_path), bot=echo_bot) as server:
        report = await asyncio.wait_for(run_calls(
            f"ws://127.0.0.1:{server.port}/ws/twilio", provider="twilio", seconds=3.0,
            faults=["stall:400@1.1"]), scaled(20))
    assert report.calls[0].end == "completed"
    (wav,) = _wavs(tmp_path)
    rec = read_recording(wav)
    left = tone_onsets(rec.left, rec.rate)
    assert len(left) == 5 and all(abs(t - (0.2 + 0.5 * k)) < 0.06
                                  for k, t in enumerate(left)), left
    # The caller heard that probe's echo late, and so does the right channel.
    right = tone_onsets(rec.right, rec.rate)
    assert len(right) == 5 and right[2] - left[2] > 0.2, (left, right)


def test_a_stream_lane_follows_the_providers_clock() -> None:
    from mediastream.recording.timeline import StreamLane

    lane = StreamLane(8000)
    frame = b"\x01\x00" * 160
    lane.stream_ms = 20
    lane.add(frame, wall=1000)  # first frame: ends at the wall clock
    assert lane.end == 1000
    lane.stream_ms = 40
    lane.add(frame, wall=5000)  # late (a burst): the stream says it comes next
    assert lane.end == 1160
    lane.stream_ms = 1040  # the provider's clock moved on 1 s: nothing was sent meanwhile
    lane.add(frame, wall=9000)
    assert lane.end == 1160 + 8000
    block = lane.take(0, 9160)
    assert block[840:1160].tolist() == [1] * 320 and not block[1160:9000].any()


def test_a_cut_removes_what_was_scheduled_after_it_to_the_sample() -> None:
    from mediastream.protocols.events import MediaFormat
    from mediastream.recording.timeline import ScheduledLane

    lane = ScheduledLane(MediaFormat("l16", 8000), 8000, t0=10.0)
    frame = b"\x00\x10" * 160  # 4096, L16 little-endian
    for k in range(10):  # 200 ms scheduled from t = 0.1 s
        lane.add(frame, 10.1 + 0.02 * k)
    lane.cut(10.15)  # the caller stopped hearing it 50 ms in
    lane.add(frame, 10.2)  # new audio after the clear
    block = lane.take(0, 2400)
    loud = np.flatnonzero(block)
    assert loud[0] == 800 and block[800:1200].tolist() == [4096] * 400
    assert not block[1200:1600].any() and block[1600:1760].tolist() == [4096] * 160
    assert not block[1760:].any()


@pytest.mark.asyncio
async def test_the_readme_comparison_example_lines_both_recordings_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
               if "call-0000-heard.wav" in b]
    async with MediaStreamServer(_config(tmp_path / "rec"), bot=echo_bot) as server:
        await asyncio.wait_for(run_calls(
            f"ws://127.0.0.1:{server.port}/ws/telnyx", provider="telnyx", seconds=1.5,
            record_dir=tmp_path / "calls"), scaled(20))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README:recording", "exec"), {})
    found = re.fullmatch(r"sent (\S+) s, played (\S+) s, heard (\S+) s\n", capsys.readouterr().out)
    assert found is not None
    sent, played, heard = map(float, found.groups())
    assert abs(sent - 0.2) < 0.05 and 0 <= played - sent < 0.06 and 0 <= heard - played < 0.04


@pytest.mark.asyncio
async def test_the_asgi_app_records_calls_the_same_way(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    from fastapi import FastAPI
    from test_asgi import _uvicorn

    from mediastream.asgi import asgi_app

    telephony = asgi_app(_config(tmp_path), echo_bot)
    app = FastAPI(lifespan=telephony.lifespan)
    app.mount("/telephony", telephony)
    async with _uvicorn(app, telephony) as (port, _):
        report = await asyncio.wait_for(run_calls(
            f"ws://127.0.0.1:{port}/telephony/ws/twilio", provider="twilio", seconds=2.0),
            scaled(20))
    check_echo_call(report.calls[0])
    (wav,) = _wavs(tmp_path)
    assert check_echo_recording(wav, 2.0) == []


@pytest.mark.asyncio
async def test_recordings_are_readable_by_owner_and_group_only(tmp_path: Path) -> None:
    async with MediaStreamServer(_config(tmp_path), bot=echo_bot) as server:
        await asyncio.wait_for(run_calls(
            f"ws://127.0.0.1:{server.port}/ws/plivo", provider="plivo", seconds=1.0),
            scaled(20))
    files = list(tmp_path.iterdir())
    assert {f.suffix for f in files} == {".wav", ".json"}
    # 0640 (less under a stricter umask): nothing for others, no writing for the group.
    assert all(f.stat().st_mode & 0o137 == 0 for f in files), files


@pytest.mark.asyncio
@pytest.mark.parametrize(("provider", "codec", "rate"), [
    ("plivo", "l16", 16000),  # little-endian at the session rate: nothing to resample
    ("plivo", "l16", 8000),
    ("telnyx", "pcma", 8000),
])
async def test_other_wire_formats_record_the_same(tmp_path: Path, provider: str, codec: str,
                                                  rate: int) -> None:
    async with MediaStreamServer(_config(tmp_path), bot=echo_bot) as server:
        report = await asyncio.wait_for(run_calls(
            f"ws://127.0.0.1:{server.port}/ws/{provider}", provider=provider,  # type: ignore[arg-type]
            seconds=2.0, codec=codec, rate=rate), scaled(20))  # type: ignore[arg-type]
    check_echo_call(report.calls[0])
    (wav,) = _wavs(tmp_path)
    assert check_echo_recording(wav, 2.0) == []
    assert read_recording(wav).sidecar["outbound_format"] == f"{codec}/{rate}"


def test_silence_skips_the_resampler_without_moving_the_sound() -> None:
    from audiocodecs.g711 import ulaw_decode, ulaw_encode
    from audiocodecs.resample import StreamResampler
    from mediastream.protocols.events import MediaFormat
    from mediastream.recording.timeline import ScheduledLane

    # 3 s of 8 kHz μ-law: bursts of a 700 Hz tone between silences of various lengths,
    # some crossing the 1 s block boundaries; one frame every 20 ms from t = 0.
    loud = np.zeros(150, dtype=bool)
    for first, length in ((3, 10), (20, 1), (22, 30), (49, 4), (80, 2), (83, 40), (140, 9)):
        loud[first : first + length] = True
    t = np.arange(160) / 8000
    frames = []
    for k in range(150):
        tone = np.round(9000 * np.sin(2 * np.pi * 700 * (t + 0.02 * k))).astype(np.int16)
        frames.append(ulaw_encode(tone).tobytes() if loud[k] else b"\xff" * 160)
    lane = ScheduledLane(MediaFormat("pcmu", 8000), 16000, t0=0.0)
    for k, frame in enumerate(frames):
        lane.add(frame, 0.02 * k)
    got = np.concatenate([lane.take(16000 * s, 16000 * (s + 1)) for s in range(3)])
    # The reference: the whole signal through one resampler, lead-padded like the lane.
    rs = StreamResampler(8000, 16000)
    wire = ulaw_decode(b"".join(frames))
    ref = np.concatenate([np.zeros(rs.delay_samples, np.int16), rs.process(wire)])[:48000]
    assert len(got) == 48000
    quiet = np.repeat(~loud, 320)
    # Where the bot was silent (beyond the filter's reach), exactly silence; where it
    # spoke, the same samples as the continuous resampler, to a few LSB.
    reach = np.convolve(~quiet, np.ones(401), mode="same") > 0  # the filter's ringing
    assert not got[~reach].any()
    # A run of sound after silence starts a fresh resampler stream, like the call's first
    # audio: the few samples of the filter's rise before its group delay are not there.
    rise = np.zeros(48000, dtype=bool)
    for k in np.flatnonzero(loud[1:] & ~loud[:-1]) + 1:
        rise[320 * k : 320 * k + 12] = True  # before the lead pad + group delay
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff[~rise].max() < 300, np.flatnonzero(diff[~rise] >= 300)
    assert np.corrcoef(got.astype(float), ref.astype(float))[0, 1] > 0.999
