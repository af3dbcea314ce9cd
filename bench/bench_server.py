"""The server's own floor: ``mediastream serve --bot echo`` vs a bare websockets echo.

Each server runs in its own process pinned to one core (``--server-core``); the simulated
Twilio callers (:func:`mediastream.caller.run_calls`: 20 ms μ-law frames on a drift-free
clock, tone-burst probes, marks acknowledged after playout) run in this process on the
other core (``--client-core``). Stacks:

* ``floor`` -- a bare ``websockets`` server that parses each Twilio message and sends the
  media payload straight back as Twilio ``media`` JSON: no codec, no resampling, no
  pacing, no marks, no bot. Nothing useful can be cheaper; it is the reference.
* ``ms-8k`` -- ``mediastream serve --bot echo --bot-sample-rate 8000``: the full path
  (protocol, μ-law decode, bot task, encode, pacer, marks, metrics) without resampling.
* ``ms-16k`` -- the same with the default 16 kHz bot rate: both resamplers run.

For each number of concurrent calls, side by side: audible round-trip latency p50/p99
(probe sent -> the caller *hears* its onset: arrival plus the wait in the provider's
playout buffer, as the caller models it), the arrival-only p50 (what a bare echo wins:
it sends at once and lets the provider's buffer hold the audio, while mediastream paces
to real time and keeps that buffer shallow, so a clear silences the caller fast), audio
lost per call, jitter (RMS over calls of each call's latency spread), server CPU (% of
its one core, from /proc) and the load generator's own send lag p99 (so a saturated
generator is not mistaken for a slow server). Median of ``--reps`` runs per level; the
stacks' runs are interleaved so background load on a shared machine hits them alike.

    python -m bench.bench_server                 # levels 1,10,50,100,200
    python -m bench.bench_server --quick         # 1 and 10 calls, one repetition
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Stack:
    name: str
    argv: tuple[str, ...]
    path: str


STACKS = (
    Stack("floor", ("-m", "bench.bench_server", "--serve-floor"), "/ws/twilio"),
    Stack("ms-8k", ("-m", "mediastream", "serve", "--bot", "echo", "--bot-sample-rate", "8000",
                    "--max-calls", "5000", "--log-level", "WARNING"), "/ws/twilio"),
    Stack("ms-16k", ("-m", "mediastream", "serve", "--bot", "echo", "--bot-sample-rate", "16000",
                     "--max-calls", "5000", "--log-level", "WARNING"), "/ws/twilio"),
)


# ------------------------------------------------------------------- the floor server


async def _floor(port: int) -> None:
    """Bare websockets + JSON echo of Twilio media (the reference)."""
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        sid = ""
        loads, dumps = json.loads, json.dumps
        async for raw in ws:
            message = loads(raw)
            event = message.get("event")
            if event == "media":
                await ws.send(dumps({"event": "media", "streamSid": sid,
                                     "media": {"payload": message["media"]["payload"]}}))
            elif event == "start":
                sid = message["start"]["streamSid"]
            elif event == "stop":
                return

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None,
                     max_size=2**20):
        await stop.wait()


# ------------------------------------------------------------------- measurement


@dataclass
class Result:
    stack: str
    calls: int
    p50: float | None
    p99: float | None
    arrival_p50: float | None
    lost: float | None
    jitter: float | None
    cpu: float
    send_lag_p99: float | None
    failures: int


class Server:
    """A server process pinned to one core; CPU time read from /proc."""

    def __init__(self, stack: Stack, core: int | None) -> None:
        self.stack = stack
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MEDIASTREAM_", "TWILIO_", "TELNYX_", "PLIVO_"))}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        preexec = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
        self.proc = subprocess.Popen(
            [sys.executable, *stack.argv, "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=preexec,
        )

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.stack.path}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"{self.stack.name} exited: {err[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.stack.name} did not start in {timeout:.0f} s")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run_level(server: Server, calls: int, seconds: float) -> Result:
    from mediastream.caller import run_calls

    ramp = min(2.0, 0.02 * calls)
    cpu0, wall0 = server.cpu_seconds(), time.monotonic()
    report = await run_calls(server.url, provider="twilio", calls=calls, seconds=seconds,
                             ramp=ramp)
    cpu = (server.cpu_seconds() - cpu0) / (time.monotonic() - wall0) * 100
    data = report.to_dict()
    arrival = data["latency_ms"]
    audible = data.get("audible_latency_ms", arrival)
    return Result(
        stack=server.stack.name, calls=calls, p50=audible["p50"], p99=audible["p99"],
        arrival_p50=arrival["p50"], lost=data["lost_ms_per_call"], jitter=data["jitter_ms"],
        cpu=cpu,
        send_lag_p99=data["send_lag_ms"]["p99"],
        failures=data["handshake_failures"]
        + sum(n for end, n in data["ends"].items() if end not in ("completed",)),
    )


def _median(results: list[Result]) -> Result:
    def med(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    first = results[0]
    return Result(
        stack=first.stack, calls=first.calls,
        p50=med([r.p50 for r in results]), p99=med([r.p99 for r in results]),
        arrival_p50=med([r.arrival_p50 for r in results]),
        lost=med([r.lost for r in results]), jitter=med([r.jitter for r in results]),
        cpu=statistics.median(r.cpu for r in results),
        send_lag_p99=med([r.send_lag_p99 for r in results]),
        failures=max(r.failures for r in results),
    )


async def _bench(stacks: list[Stack], levels: list[int], args: argparse.Namespace,
                 deadline: float) -> dict[str, list[Result]]:
    """All servers up at once; each repetition of a level runs every stack back to back,
    so the machine's background load (it is shared) falls on all of them alike."""
    servers = [Server(stack, args.server_core) for stack in stacks]
    by_stack: dict[str, list[Result]] = {s.name: [] for s in stacks}
    try:
        for server in servers:
            server.wait_ready()
            await _run_level(server, 1, 2.0)  # warm-up: imports and first-call costs
        for calls in levels:
            if time.monotonic() > deadline:
                _log(f"time budget spent before {calls} calls")
                break
            reps: dict[str, list[Result]] = {s.name: [] for s in stacks}
            for _ in range(args.reps):
                for server in servers:
                    reps[server.stack.name].append(await _run_level(server, calls, args.seconds))
            for name, runs in reps.items():
                result = _median(runs)
                by_stack[name].append(result)
                _log(f"  {name:7} {calls:4d} calls: p50 {_f(result.p50)} p99 {_f(result.p99)}"
                     f" lost {_f(result.lost)} ms  cpu {result.cpu:5.1f}%"
                     + (f"  {result.failures} failed" if result.failures else ""))
    finally:
        for server in servers:
            server.stop()
    return by_stack


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _f(value: float | None, width: int = 6, digits: int = 1) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def _print_table(by_stack: dict[str, list[Result]], names: list[str]) -> None:
    levels = sorted({r.calls for rs in by_stack.values() for r in rs})
    width = 49
    print("calls | " + " | ".join(f"{n:^{width}}" for n in names))
    print("      | " + " | ".join("  p50    p99  arr50   lost  jitter  cpu%  lag99"
                                  for _ in names))
    for calls in levels:
        cells = []
        for name in names:
            r = next((x for x in by_stack.get(name, []) if x.calls == calls), None)
            if r is None:
                cells.append(f"{'(not run)':^{width}}")
            else:
                cells.append(f"{_f(r.p50)} {_f(r.p99)} {_f(r.arrival_p50)} {_f(r.lost)} "
                             f"{_f(r.jitter, 7)} "
                             f"{r.cpu:5.1f} {_f(r.send_lag_p99, 6)}"
                             + ("!" if r.failures else " "))
        print(f"{calls:5d} | " + " | ".join(cells))


def _ratios(by_stack: dict[str, list[Result]]) -> list[str]:
    lines = []
    floor = {r.calls: r for r in by_stack.get("floor", [])}
    for name in ("ms-8k", "ms-16k"):
        for r in by_stack.get(name, []):
            ref = floor.get(r.calls)
            if ref is None or ref.cpu <= 0 or r.p50 is None or ref.p50 is None:
                continue
            lines.append(f"{name} at {r.calls:4d} calls: CPU {r.cpu / ref.cpu:4.1f}x the floor's, "
                         f"audible p50 {r.p50 - ref.p50:+5.1f} ms vs the floor")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stacks over the concurrency levels and print them side by side."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,10,50,100,200")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each call")
    parser.add_argument("--reps", type=int, default=2, help="repetitions per level (median)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds, all stacks")
    parser.add_argument("--server-core", type=int, default=1)
    parser.add_argument("--client-core", type=int, default=0)
    parser.add_argument("--only", action="append", choices=[s.name for s in STACKS])
    parser.add_argument("--quick", action="store_true", help="1 and 10 calls, one repetition")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor:
        asyncio.run(_floor(args.port))
        return 0
    if args.quick:
        args.levels, args.reps, args.seconds = "1,10", 1, 4.0
    levels = sorted({int(x) for x in args.levels.split(",") if x.strip()})
    cores = os.sched_getaffinity(0)
    for name in ("server_core", "client_core"):
        if getattr(args, name) not in cores:
            _log(f"note: core {getattr(args, name)} not available; {name} not pinned")
            setattr(args, name, None)
    if args.client_core is not None:
        os.sched_setaffinity(0, {args.client_core})
    stacks = [s for s in STACKS if not args.only or s.name in args.only]
    start = time.monotonic()
    _log(f"{', '.join(s.name for s in stacks)}: levels {levels}, "
         f"{args.seconds:g} s calls x {args.reps}, interleaved")
    by_stack = asyncio.run(_bench(stacks, levels, args, start + args.budget))
    print(f"\nEcho through the server vs a bare websockets echo, Twilio μ-law callers "
          f"({args.seconds:g} s calls, median of {args.reps}; server on core "
          f"{args.server_core}, callers on core {args.client_core}). p50/p99 = audible "
          f"round trip, arr50 = arrival only, lost = ms per call (all ms); cpu = % of the "
          f"server's one core; lag99 = load generator send lag p99; ! = failed calls\n")
    _print_table(by_stack, [s.name for s in stacks])
    print()
    for line in _ratios(by_stack):
        print(line)
    print(f"(wall time {time.monotonic() - start:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {name: [r.__dict__ for r in rs] for name, rs in by_stack.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
