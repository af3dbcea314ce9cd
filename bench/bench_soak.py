"""Soak: many thousands of calls on one server process, and nothing may accumulate.

``python -m bench soak`` starts ``mediastream``'s server with the echo bot in its own
process (this module's ``--serve`` mode: the CLI's server plus a ``GET /soak/state``
route reporting its asyncio tasks, open file descriptors, RSS and live objects), then:

1. **warm-up** -- calls of every kind until every code path has made its first
   allocations (pools, caches, the resampler's prepared views);
2. **sequential** -- calls one after another, each as short as a call can be: upgrade,
   ``start``, a few 20 ms frames, wait for their echo, ``stop`` (Plivo: close);
3. **concurrent** -- calls ``--batch`` at a time through the simulated caller
   (:func:`mediastream.caller.run_calls`: real-time 20 ms pacing, 1.0-1.5 s each, probe
   tones whose echo is matched, so a lost frame shows), the three providers mixed.

Then **SIGTERM** to ``mediastream serve --bot echo`` during ``--drain-calls`` (100) live
calls, twice: with a 30 s drain every call must complete with nothing lost, with a 0.5 s
drain every call must get 1001 after hearing every frame the server counted out for it
(what the bot had already said); both times the process must exit 0.

After each phase it waits until the server is idle and reads its state. Pass criteria:
RSS growth after the warm-up at most ``--max-rss-growth`` (10 MB), tasks and file
descriptors back to their idle baseline, no live media connection, no WARNING or ERROR
line in the server's log after start-up, every call complete, every probe back and no
frame lost (a call fails from ``LOST_FRAME_MS`` of missing tone; shorter shortfalls are
counted apart, see there). Memory in use (RSS after ``malloc_trim``) is reported next to
RSS, to tell a leak from free memory the C allocator keeps. Plivo calls stream L16 at
16 kHz so the resampler runs both ways; Twilio and Telnyx stream μ-law. Everything stays
on 127.0.0.1. ``tests/test_soak.py`` runs a short version in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import websockets
from websockets.asyncio.client import connect

from bench.harness import LOST_FRAME_MS
from mediastream.caller import ProbeConfig, RunReport, run_calls
from mediastream.caller.dialects import dialect_for, new_identity
from mediastream.protocols.events import MediaFormat, ProviderName

__all__ = ["PhaseResult", "SoakServer", "lean_call", "main", "run_concurrent",
           "run_sequential", "serve_main"]

ROOT = Path(__file__).resolve().parent.parent
PROVIDERS: tuple[ProviderName, ...] = ("twilio", "telnyx", "plivo")
#: Frames each sequential call sends (the pacer releases its first 80 ms at once).
LEAN_FRAMES = 4
#: Probe pattern for 1.0-1.5 s calls: 100 ms tones every 400 ms after 100 ms, and 400 ms
#: at the end to hear the last one back.
SHORT_PROBE = ProbeConfig(tone_ms=100, period_ms=400, lead_ms=100, tail_ms=400)
#: Call lengths of the concurrent phase (seconds, uniform per wave), and each wave's ramp.
#: 200 calls of ~1.25 s ask for ~160 call set-ups a second, about what one server
#: process sustains next to a Python load generator on a 2-core machine; shorter calls
#: at 200 at a time would measure a saturated CPU, not a leak (the sequential phase
#: has the shortest calls).
CALL_SECONDS = (1.0, 1.5)
WAVE_RAMP = 0.5
_CALL_FORMATS: dict[str, MediaFormat] = {
    "twilio": MediaFormat("pcmu", 8000),
    "telnyx": MediaFormat("pcmu", 8000),
    "plivo": MediaFormat("l16", 16000),
}


# ------------------------------------------------------------------ the server process


def serve_main(argv: Sequence[str]) -> int:
    """The child: ``python -m bench.bench_soak --serve --port P``."""
    import logging

    from aiohttp import web

    from mediastream.config import Config
    from mediastream.server import MediaStreamServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mediastream.server.websocket").setLevel(logging.WARNING)
    config = Config(host="127.0.0.1", port=args.port, bot="echo",
                    max_calls=1000, drain_timeout=5.0)
    app = web.Application()
    server = MediaStreamServer(config, app=app)
    marks: list[tracemalloc.Snapshot] = []

    async def state(request: web.Request) -> web.Response:
        gc.collect()
        body: dict[str, Any] = {
            # This request's own handler task and connection are not the server's.
            "tasks": len(asyncio.all_tasks()) - 1,
            "fds": len(os.listdir("/proc/self/fd")) - 1,
            "rss_kb": _rss_kb(),
            "objects": len(gc.get_objects()),
            "media_connections": server.media_connections,
            "active_calls": server.active_calls,
            "pending_heads": len(server._listener.pending_heads) if server._listener else 0,
        }
        if request.query.get("trim"):
            # Give the C allocator's free memory back to the OS first: what is left
            # is memory in use, not free memory a fragmented heap could not return.
            import ctypes

            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            body["rss_kb"] = _rss_kb()
        if request.query.get("types"):
            # Live objects by type, for hunting a leak the totals reveal.
            counts: dict[str, int] = {}
            for obj in gc.get_objects():
                name = type(obj).__qualname__
                counts[name] = counts.get(name, 0) + 1
            body["types"] = counts
        if tracemalloc.is_tracing():
            # --tracemalloc: what was allocated since the last ?mark and is still held.
            snapshot = tracemalloc.take_snapshot()
            if request.query.get("mark") or not marks:
                marks[:] = [snapshot]
            else:
                top = snapshot.compare_to(marks[0], "traceback")[:12]
                body["allocations"] = [
                    f"{stat.size_diff / 1024:+.0f} kB in {stat.count_diff:+d} blocks: "
                    + " <- ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}"
                                  for f in stat.traceback[:6])
                    for stat in top
                ]
        return web.json_response(body, headers={"Connection": "close"})

    app.router.add_get("/soak/state", state)

    async def run() -> None:
        await server.start()
        print(f"soak server listening on port {server.port}", file=sys.stderr, flush=True)
        try:
            await server.serve_forever()
        finally:
            await server.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def _rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class SoakServer:
    """The server child process, its log file and its ``/soak/state``."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    http: aiohttp.ClientSession
    log_start: int = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def run(cls, log_dir: Path) -> AsyncIterator[SoakServer]:
        """Start the child, wait for its port; stop it (SIGTERM, then kill) afterwards."""
        log_path = log_dir / "soak-server.log"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MEDIASTREAM_", "TWILIO_", "TELNYX_", "PLIVO_"))}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.bench_soak", "--serve", "--port", "0"],
                cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            )
        try:
            port = 0
            deadline = time.monotonic() + 30
            while not port:
                text = log_path.read_text(errors="replace")
                marker = "soak server listening on port "
                if marker in text:
                    port = int(text.split(marker, 1)[1].split()[0])
                elif process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("soak server did not start:\n" + text)
                else:
                    await asyncio.sleep(0.05)
            async with aiohttp.ClientSession() as http:
                yield cls(process, port, log_path, http, len(log_path.read_bytes()))
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    await asyncio.get_running_loop().run_in_executor(None, process.wait, 15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def state(self, types: bool = False) -> dict[str, Any]:
        """The server's own view: tasks, fds, RSS, objects (``types``: by type)."""
        url = f"http://127.0.0.1:{self.port}/soak/state" + ("?types=1" if types else "")
        async with self.http.get(url) as response:
            data: dict[str, Any] = await response.json()
        data["rss_kb"] = _rss_kb(self.process.pid)
        return data

    async def in_use_kb(self) -> int:
        """RSS after ``malloc_trim``: memory in use, without the free memory glibc keeps."""
        url = f"http://127.0.0.1:{self.port}/soak/state?trim=1"
        async with self.http.get(url) as response:
            data: dict[str, Any] = await response.json()
        return int(data["rss_kb"])

    async def idle_state(self, timeout: float = 30.0) -> dict[str, Any]:
        """The state once no call, connection or pending head is left (then it settles)."""
        deadline = time.monotonic() + timeout
        while True:
            state = await self.state()
            idle = not (state["media_connections"] or state["active_calls"]
                        or state["pending_heads"])
            if idle or time.monotonic() > deadline:
                # Handlers finish their last log line and close after the call count
                # drops: give them a moment, then read once more.
                await asyncio.sleep(0.3)
                return await self.state()
            await asyncio.sleep(0.1)

    def warnings(self) -> list[str]:
        """WARNING/ERROR lines (and tracebacks) the server logged after start-up."""
        text = self.log_path.read_bytes()[self.log_start:].decode(errors="replace")
        return [line for line in text.splitlines()
                if " WARNING " in line or " ERROR " in line or "Traceback" in line]


# ------------------------------------------------------------------ calls


@dataclass
class LeanResult:
    """One sequential call: did it end as it should, with its audio back?"""

    ok: bool
    detail: str = ""


async def lean_call(
    base: str, provider: ProviderName, frames: int = LEAN_FRAMES, pace: float = 0.0
) -> LeanResult:
    """Open, start, send ``frames`` 20 ms frames (``pace`` seconds apart), wait for the
    echo, stop, wait for the close."""
    fmt = _CALL_FORMATS[provider]
    dialect = dialect_for(provider)(new_identity(provider), fmt, fmt, {})
    size = fmt.sample_rate // 50 * (2 if fmt.encoding == "l16" else 1)
    b64 = base64.b64encode(bytes(random.randrange(256) & 0xFE for _ in range(size)))
    expect = frames if fmt.encoding == "pcmu" else frames - 1  # resampler delay holds a bit
    try:
        async with asyncio.timeout(10.0):
            ws = await connect(f"{base}/{provider}", compression=None, max_size=None)
            try:
                for message in dialect.opening(int(time.time() * 1000)):
                    await ws.send(message.decode())
                for i in range(frames):
                    await ws.send(dialect.media(b64, 20 * i).decode())
                    if pace:
                        await asyncio.sleep(pace)
                got = 0
                while got < expect:
                    event = json.loads(await ws.recv())
                    if event.get("event") in ("media", "playAudio"):
                        got += 1
                stop = dialect.stop()
                if stop is not None:
                    await ws.send(stop.decode())
                    with contextlib.suppress(websockets.ConnectionClosed):
                        while True:
                            await ws.recv()
                    code = ws.protocol.close_code
                else:
                    await ws.close()
                    code = 1000
            finally:
                await ws.close()
    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
        return LeanResult(False, f"{provider}: {type(exc).__name__}: {exc}")
    if code != 1000:
        return LeanResult(False, f"{provider}: closed with {code}")
    return LeanResult(True)


@dataclass
class PhaseResult:
    """What one phase did and what the server looked like afterwards."""

    name: str
    calls: int
    failed: int
    lost_ms: float
    wall_s: float
    state: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    #: Server CPU seconds (user + system) spent in the phase.
    cpu_s: float = 0.0
    #: Probe round trips of the simulated calls (ms); empty for lean calls.
    latencies_ms: list[float] = field(default_factory=list)
    #: (calls done, server RSS kB) along the phase.
    rss_trace: list[tuple[int, int]] = field(default_factory=list)
    #: Lost ms of the calls that heard a tone short by less than LOST_FRAME_MS.
    partial_lost_ms: list[float] = field(default_factory=list)

    @property
    def partial(self) -> int:
        return len(self.partial_lost_ms)


async def run_sequential(
    server: SoakServer, calls: int, trace: list[tuple[int, int]] | None = None
) -> tuple[int, list[str]]:
    """``calls`` lean calls one after another, providers in turn; (failed, problems)."""
    failed, problems = 0, list[str]()
    for i in range(calls):
        result = await lean_call(server.ws_base, PROVIDERS[i % 3])
        if not result.ok:
            failed += 1
            if len(problems) < 5:
                problems.append(result.detail)
        if trace is not None and (i + 1) % 500 == 0:
            trace.append((i + 1, _rss_kb(server.process.pid)))
    return failed, problems


async def run_concurrent(
    server: SoakServer, calls: int, batch: int, seed: int = 1,
    trace: list[tuple[int, int]] | None = None, latencies: list[float] | None = None,
    call_seconds: tuple[float, float] = CALL_SECONDS, probe: ProbeConfig = SHORT_PROBE,
    partial: list[float] | None = None,
) -> tuple[int, float, list[str]]:
    """``calls`` simulated calls, ``batch`` at a time; (failed, lost ms, problems)."""
    rng = random.Random(seed)
    failed, lost, problems = 0, 0.0, list[str]()
    done = 0
    while done < calls:
        wave = min(batch, calls - done)
        seconds = round(rng.uniform(*call_seconds), 2)
        shares = [wave // 3 + (1 if k < wave % 3 else 0) for k in range(3)]
        runs = [
            run_calls(f"{server.ws_base}/{p}", provider=p, calls=n, seconds=seconds,
                      ramp=WAVE_RAMP, probe=probe, codec=_CALL_FORMATS[p].encoding,
                      rate=_CALL_FORMATS[p].sample_rate, seed=seed + done)
            for p, n in zip(PROVIDERS, shares, strict=True) if n
        ]
        reports: list[RunReport] = await asyncio.gather(*runs)
        for report in reports:
            if latencies is not None:
                latencies += report.latencies_ms
            for c in report.calls:
                bad = (c.handshake_failed or c.end != "completed" or not c.probes
                       or c.probes_returned != c.probes or (c.lost_ms or 0) >= LOST_FRAME_MS
                       or c.protocol_errors)
                lost += c.lost_ms or 0.0
                if not bad and c.lost_ms and partial is not None:
                    partial.append(c.lost_ms)
                if bad:
                    failed += 1
                    if len(problems) < 5:
                        problems.append(
                            f"{report.provider} {c.call_id}: end={c.end} close={c.close_code} "
                            f"probes {c.probes_returned}/{c.probes} lost={c.lost_ms} "
                            f"{c.failure or ''} {c.protocol_error_samples[:1]}")
        done += wave
        if trace is not None:
            trace.append((done, _rss_kb(server.process.pid)))
    return failed, lost, problems


# ------------------------------------------------------------------ the soak


@dataclass
class SoakSettings:
    """How much to run and what to accept."""

    warmup: int = 2000
    sequential: int = 10_000
    concurrent: int = 10_000
    batch: int = 200
    max_rss_growth_mb: float = 10.0
    call_seconds: tuple[float, float] = CALL_SECONDS
    probe: ProbeConfig = SHORT_PROBE


async def soak(settings: SoakSettings, log_dir: Path,
               progress: Any = None) -> tuple[list[PhaseResult], dict[str, Any], list[str]]:
    """Run the phases; returns (phase results, baseline state, verdict problems)."""
    say = progress or (lambda line: None)
    phases: list[PhaseResult] = []
    async with SoakServer.run(log_dir) as server:
        pid = server.process.pid
        phases.append(PhaseResult("start", 0, 0, 0.0, 0.0, await server.idle_state()))

        async def phase(name: str, calls: int, sequential: int, batch: int) -> PhaseResult:
            say(f"{name}: {calls} calls" + (f", {batch} at a time" if calls > sequential
                                             else ""))
            t0, cpu0 = time.monotonic(), _cpu_s(pid)
            result = PhaseResult(name, calls, 0, 0.0, 0.0, {})
            if sequential:
                failed, problems = await run_sequential(server, sequential, result.rss_trace)
                result.failed += failed
                result.problems += problems
            if calls > sequential:
                trace: list[tuple[int, int]] = []
                failed, lost, problems = await run_concurrent(
                    server, calls - sequential, batch, trace=trace,
                    latencies=result.latencies_ms, call_seconds=settings.call_seconds,
                    probe=settings.probe, partial=result.partial_lost_ms)
                result.rss_trace += [(sequential + n, kb) for n, kb in trace]
                result.failed += failed
                result.lost_ms += lost
                result.problems += problems
            result.wall_s = time.monotonic() - t0
            result.state = await server.idle_state()
            result.cpu_s = _cpu_s(pid) - cpu0
            phases.append(result)
            return result

        # Warm-up: both kinds of call, so every path has made its first allocations
        # (and caches that fill per call, such as re's compiled patterns, are full).
        w_seq = settings.warmup // 3
        warm = await phase("warm-up", settings.warmup, w_seq,
                           min(settings.batch, max(1, settings.warmup - w_seq)))
        baseline = warm.state
        await phase("sequential", settings.sequential, settings.sequential, 1)
        await phase(f"concurrent x{settings.batch}", settings.concurrent, 0, settings.batch)
        # Raw RSS is what the verdict judges. Then (never earlier: it would lower every
        # later figure) RSS after malloc_trim: memory in use, without the free memory
        # the C allocator keeps for reuse.
        phases[-1].state["in_use_kb"] = await server.in_use_kb()
        warnings = server.warnings()
    verdict = judge(phases, baseline, warnings, settings.max_rss_growth_mb)
    return phases, baseline, verdict


def _cpu_s(pid: int) -> float:
    rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def judge(phases: list[PhaseResult], baseline: dict[str, Any], warnings: list[str],
          max_rss_growth_mb: float) -> list[str]:
    """The soak's verdict: every problem found (empty: passed)."""
    problems: list[str] = []
    final = phases[-1].state
    growth_mb = (final["rss_kb"] - baseline["rss_kb"]) / 1024
    if growth_mb > max_rss_growth_mb:
        problems.append(f"RSS grew {growth_mb:.1f} MB after warm-up (limit "
                        f"{max_rss_growth_mb:g} MB)")
    for key in ("tasks", "fds"):
        if final[key] > baseline[key]:
            problems.append(f"{key}: {final[key]} at the end vs {baseline[key]} after warm-up")
    for key in ("media_connections", "active_calls", "pending_heads"):
        if final[key]:
            problems.append(f"{key} still {final[key]} when idle")
    for phase in phases:
        if phase.failed:
            problems.append(f"{phase.name}: {phase.failed} calls failed: {phase.problems}")
    if warnings:
        problems.append(f"{len(warnings)} WARNING/ERROR lines in the server log, e.g. "
                        f"{warnings[:3]}")
    return problems


def table(phases: list[PhaseResult], baseline: dict[str, Any]) -> str:
    """One row per phase: calls, failures, loss, time, and the server's state after it."""
    header = (f"{'phase':<15} {'calls':>6} {'failed':>6} {'lost ms':>7} {'wall s':>6} "
              f"{'calls/s':>7} {'srv cpu s':>9} {'RTT p50/p99 ms':>14} {'RSS MB':>6} "
              f"{'dRSS MB':>7} {'tasks':>5} {'fds':>4} {'objects':>7}")
    lines = [header, "-" * len(header)]
    for p in phases:
        s = p.state
        rate = f"{p.calls / p.wall_s:7.1f}" if p.wall_s else f"{'-':>7}"
        rtt = "-"
        if p.latencies_ms:
            ordered = sorted(p.latencies_ms)
            p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
            rtt = f"{statistics.median(ordered):.0f}/{p99:.0f}"
        d_rss = (s["rss_kb"] - baseline["rss_kb"]) / 1024
        lines.append(
            f"{p.name:<15} {p.calls:>6} {p.failed:>6} {p.lost_ms:>7.0f} {p.wall_s:>6.1f} "
            f"{rate} {p.cpu_s:>9.1f} {rtt:>14} {s['rss_kb'] / 1024:>6.1f} {d_rss:>+7.1f} "
            f"{s['tasks']:>5} {s['fds']:>4} {s['objects']:>7}")
    for p in phases:
        if len(p.rss_trace) > 1:
            points = p.rss_trace[:: max(1, len(p.rss_trace) // 8)] + p.rss_trace[-1:]
            seen = dict(points)
            lines.append(f"RSS during {p.name} (calls: MB): " + "  ".join(
                f"{n}: {kb / 1024:.1f}" for n, kb in sorted(seen.items())))
    return "\n".join(lines)


# ------------------------------------------------------------------ SIGTERM drain

_CALL_ENDED = re.compile(
    r"\[call (?P<call>[^\]]+)\] call ended: (?P<outcome>\S+) \(close (?P<code>\S+) .*"
    r"frames in (?P<fin>\d+) out (?P<fout>\d+)"
)


@dataclass
class DrainResult:
    """SIGTERM to ``mediastream serve`` while ``calls`` calls are live."""

    drain_timeout: float
    calls: int
    completed: int = 0
    closed_1001: int = 0
    delivered: int = 0
    lost_ms: float = 0.0
    exit_code: int | None = None
    exit_s: float = 0.0
    problems: list[str] = field(default_factory=list)


async def run_drain(calls: int, drain_timeout: float, seconds: float = 4.0) -> DrainResult:
    """Start ``mediastream serve --bot echo``, place ``calls`` calls, SIGTERM it mid-call.

    With a drain longer than the calls they must all complete, nothing lost; with a
    short one each must get 1001 after receiving every frame the server counted out
    for it (what the bot had said). Either way the process must exit 0.
    """
    result = DrainResult(drain_timeout, calls)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEDIASTREAM_", "TWILIO_", "TELNYX_", "PLIVO_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediastream", "serve", "--bot", "echo", "--host", "127.0.0.1",
        "--port", "0", "--drain-timeout", str(drain_timeout), "--max-calls", str(calls + 10),
        cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []
    assert process.stderr is not None
    stderr = process.stderr

    async def read() -> None:
        while line := await stderr.readline():
            lines.append(line.decode(errors="replace"))

    reader = asyncio.ensure_future(read())
    try:
        async with asyncio.timeout(30):
            while not any("listening on" in line for line in lines):
                await asyncio.sleep(0.05)
        port = int(next(line for line in lines if "listening on" in line)
                   .split("127.0.0.1:")[1].split()[0])
        shares = [calls // 3 + (1 if k < calls % 3 else 0) for k in range(3)]
        runs = asyncio.gather(*(
            run_calls(f"ws://127.0.0.1:{port}/ws/{p}", provider=p, calls=n, seconds=seconds,
                      ramp=0.5, probe=SHORT_PROBE, codec=_CALL_FORMATS[p].encoding,
                      rate=_CALL_FORMATS[p].sample_rate)
            for p, n in zip(PROVIDERS, shares, strict=True) if n
        ))
        async with asyncio.timeout(60):
            while sum("call started" in line for line in lines) < calls:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # mid-call, audio flowing both ways
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        reports: list[RunReport] = await runs
        result.exit_code = await asyncio.wait_for(process.wait(), 60)
        result.exit_s = time.monotonic() - signalled
        await reader
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        reader.cancel()
    ends = {m["call"]: m for m in map(_CALL_ENDED.search, lines) if m}
    for report in reports:
        for c in report.calls:
            end = ends.get(c.call_id)
            result.lost_ms += c.lost_ms or 0.0
            if end is None:
                result.problems.append(f"{c.call_id}: no 'call ended' line")
                continue
            if c.end == "completed":
                result.completed += 1
                if c.probes_returned != c.probes or (c.lost_ms or 0) >= LOST_FRAME_MS:
                    result.problems.append(f"{c.call_id}: {c.probes_returned}/{c.probes} "
                                           f"probes, lost {c.lost_ms} ms")
            elif c.close_code == 1001:
                result.closed_1001 += 1
                if c.frames_received == int(end["fout"]):
                    result.delivered += 1
                else:
                    result.problems.append(f"{c.call_id}: heard {c.frames_received} frames "
                                           f"of {end['fout']} sent")
            else:
                result.problems.append(f"{c.call_id}: ended {c.end} {c.close_code}")
    if result.exit_code != 0:
        result.problems.append(f"exit code {result.exit_code}")
    if any(" ERROR " in line or "Traceback" in line for line in lines):
        result.problems.append("ERROR lines in the server log")
    return result


def drain_table(results: list[DrainResult]) -> str:
    """One row per drain run."""
    header = (f"{'SIGTERM drain':<16} {'calls':>5} {'completed':>9} {'1001':>5} "
              f"{'all audio heard':>15} {'lost ms':>7} {'exit':>4} {'exit after s':>12}")
    lines = [header, "-" * len(header)]
    for r in results:
        heard = f"{r.delivered}/{r.closed_1001}" if r.closed_1001 else "-"
        lines.append(f"{'drain ' + format(r.drain_timeout, 'g') + ' s':<16} {r.calls:>5} "
                     f"{r.completed:>9} {r.closed_1001:>5} {heard:>15} {r.lost_ms:>7.0f} "
                     f"{r.exit_code!s:>4} {r.exit_s:>12.1f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench soak [--sequential N] [--concurrent N] [--batch B] ...``."""
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--sequential", type=int, default=10_000)
    parser.add_argument("--concurrent", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--max-rss-growth", type=float, default=10.0, help="MB")
    parser.add_argument("--keep-log", metavar="PATH", help="copy the server log here")
    parser.add_argument("--drain-calls", type=int, default=100,
                        help="live calls when SIGTERM arrives (0: skip the drain runs)")
    args = parser.parse_args(list(argv or []))
    settings = SoakSettings(args.warmup, args.sequential, args.concurrent, args.batch,
                            args.max_rss_growth)
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {line}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        phases, baseline, verdict = asyncio.run(soak(settings, Path(tmp), say))
        if args.keep_log:
            Path(args.keep_log).write_bytes((Path(tmp) / "soak-server.log").read_bytes())
    drains: list[DrainResult] = []
    if args.drain_calls:
        for timeout in (30.0, 0.5):
            say(f"SIGTERM during {args.drain_calls} live calls, drain timeout {timeout:g} s")
            drains.append(asyncio.run(run_drain(args.drain_calls, timeout)))
    print(table(phases, baseline))
    if drains:
        print()
        print(drain_table(drains))
        for d in drains:
            verdict += [f"drain {d.drain_timeout:g} s: {p}" for p in d.problems[:5]]
    total = sum(p.calls for p in phases)
    final = phases[-1].state
    print(f"\n{total} calls on one server process in {time.monotonic() - started:.0f} s; "
          f"baseline after warm-up: RSS {baseline['rss_kb'] / 1024:.1f} MB, "
          f"{baseline['tasks']} tasks, {baseline['fds']} fds")
    if "in_use_kb" in final:
        print(f"at the end: RSS {final['rss_kb'] / 1024:.1f} MB, of which in use "
              f"{final['in_use_kb'] / 1024:.1f} MB (RSS after malloc_trim; the rest is free "
              "memory the C allocator keeps for reuse)")
    partial = sum(p.partial for p in phases)
    if partial:
        print(f"{partial} calls heard a probe tone up to {LOST_FRAME_MS:g} ms short (no frame "
              "lost; see LOST_FRAME_MS in bench/harness.py)")
    print("verdict: " + ("PASS" if not verdict else "FAIL\n  " + "\n  ".join(verdict)))
    return 0 if not verdict else 1


if __name__ == "__main__":
    if "--serve" in sys.argv[1:]:
        sys.exit(serve_main(sys.argv[1:]))
    sys.exit(main(sys.argv[1:]))
