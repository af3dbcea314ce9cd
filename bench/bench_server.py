"""The server's own floor: ``mediastream serve --bot echo`` vs a bare websockets echo.

Each server runs in its own process pinned to one core (``--server-core``); the simulated
Twilio callers (:func:`mediastream.caller.run_calls`: 20 ms μ-law frames on a drift-free
clock, tone-burst probes, marks acknowledged after playout) run in this process on the
other core (``--client-core``). Stacks:

* ``floor`` -- :mod:`bench.bare_echo`, a bare ``websockets`` server that parses each
  Twilio message and sends the media payload straight back as Twilio ``media`` JSON: no
  codec, no resampling, no pacing, no marks, no bot. Nothing useful can be cheaper; it
  is the reference.
* ``ms-8k`` -- ``mediastream serve --bot echo --bot-sample-rate 8000``: the full path
  (protocol, μ-law decode, bot task, encode, pacer, marks, metrics) without resampling.
* ``ms-16k`` -- the same with the default 16 kHz bot rate: both resamplers run.
* ``asgi-8k`` -- ``ms-8k`` mounted in a FastAPI app under uvicorn (:mod:`bench.asgi_server`,
  :mod:`mediastream.asgi`): the same protocol, session and bot; uvicorn's WebSocket.
* with ``--baseline REF`` (a git commit, tag or branch), ``ms-8k@REF`` and ``ms-16k@REF``
  (those of them ``--only`` keeps) too: the same commands run from a checkout of REF (a
  temporary ``git worktree``), so a change is measured against what came before it in
  one run, side by side.

For each number of concurrent calls, side by side: audible round-trip latency p50/p99
(probe sent -> the caller *hears* its onset: arrival plus the wait in the provider's
playout buffer, as the caller models it), the arrival-only p50 (what a bare echo wins:
it sends at once and lets the provider's buffer hold the audio, while mediastream paces
to real time and keeps that buffer shallow, so a clear silences the caller fast), audio
lost per call, jitter (RMS over calls of each call's latency spread), server CPU (% of
its one core, from /proc, over the steady part of the run: :func:`bench.harness.run_level`)
and the load generator's own send lag p99 (so a saturated generator is not mistaken for a
slow server). Median of ``--reps`` runs per level; the
stacks' runs are interleaved so background load on a shared machine hits them alike.

    python -m bench.bench_server                 # levels 1,10,20,50,100,200
    python -m bench.bench_server --quick         # 1 and 10 calls, one repetition
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    Column,
    LevelResult,
    ServerProcess,
    fmt,
    level_table,
    log,
    median_levels,
    pin_cores,
    print_table,
    run_level,
)

__all__ = ["main"]


@dataclass(frozen=True)
class Stack:
    name: str
    argv: tuple[str, ...]
    path: str
    #: Another source tree to run from (``--baseline``); ``None``: this one.
    root: Path | None = None


STACKS = (
    Stack("floor", ("-m", "bench.bare_echo", "--port", "{port}"), "/ws/twilio"),
    Stack("ms-8k", ("-m", "mediastream", "serve", "--bot", "echo", "--bot-sample-rate", "8000",
                    "--max-calls", "5000", "--log-level", "WARNING", "--port", "{port}"),
          "/ws/twilio"),
    Stack("ms-16k", ("-m", "mediastream", "serve", "--bot", "echo", "--bot-sample-rate", "16000",
                     "--max-calls", "5000", "--log-level", "WARNING", "--port", "{port}"),
          "/ws/twilio"),
    # ms-8k mounted in FastAPI under uvicorn (mediastream.asgi): only the socket differs.
    Stack("asgi-8k", ("-m", "bench.asgi_server", "--bot-sample-rate", "8000", "--port", "{port}"),
          "/telephony/ws/twilio"),
)

#: Per stack: audible p50/p99, arrival p50, lost ms per call, jitter, CPU %, send lag p99.
COLUMNS: tuple[Column, ...] = (
    ("p50", lambda r: fmt(r.audible_p50)),
    ("p99", lambda r: fmt(r.audible_p99)),
    ("arr50", lambda r: fmt(r.p50)),
    ("lost", lambda r: fmt(r.lost)),
    ("jitter", lambda r: fmt(r.jitter, 7)),
    ("cpu%", lambda r: fmt(None if r.cpu is None else r.cpu * 100, 5)),
    ("ms/cs", lambda r: fmt(_per_call_second(r), 5, 2)),
    ("lag99", lambda r: fmt(r.lag_p99)),
    ("failed", lambda r: str(r.failures)),
)


#: Every repetition's result, per (stack, calls): the CPU ratios pair runs of one round.
RepRuns = dict[tuple[str, int], list[LevelResult]]


async def _bench(stacks: list[Stack], levels: list[int], args: argparse.Namespace,
                 deadline: float, rep_runs: RepRuns) -> dict[str, list[LevelResult]]:
    """All servers up at once; each repetition of a level runs every stack back to back,
    so the machine's background load (it is shared) falls on all of them alike."""
    servers = [ServerProcess(stack.name, stack.argv, core=args.server_core, root=stack.root)
               for stack in stacks]
    urls = [server.url(stack.path) for server, stack in zip(servers, stacks, strict=True)]
    by_stack: dict[str, list[LevelResult]] = {s.name: [] for s in stacks}
    try:
        for server, url in zip(servers, urls, strict=True):
            await asyncio.to_thread(server.start)
            # Warm-up: imports and first-call costs.
            await run_level(server, url, calls=1, seconds=2.0, ramp=0.0)
        for calls in levels:
            if time.monotonic() > deadline:
                log(f"time budget spent before {calls} calls")
                break
            reps: dict[str, list[LevelResult]] = {s.name: [] for s in stacks}
            for _ in range(args.reps):
                for server, url in zip(servers, urls, strict=True):
                    reps[server.name].append(await run_level(
                        server, url, calls=calls, seconds=args.seconds,
                        ramp=min(2.0, 0.02 * calls)))
            for name, runs in reps.items():
                rep_runs[name, calls] = runs
                result = median_levels(runs)
                by_stack[name].append(result)
                log(f"  {name:7} {calls:4d} calls: p50 {fmt(result.audible_p50)} "
                    f"p99 {fmt(result.audible_p99)} lost {fmt(result.lost)} ms  "
                    f"cpu {fmt(None if result.cpu is None else result.cpu * 100, 5)}%"
                    + (f"  {result.failures} failed" if result.failures else ""))
    finally:
        for server in servers:
            server.stop()
    return by_stack


def _per_call_second(r: LevelResult) -> float | None:
    """Server CPU per call-second, ms: what one call costs the server for each second
    it lasts (cpu is a fraction of one core over the steady part of the run)."""
    return None if r.cpu is None or not r.calls else r.cpu * 1000.0 / r.calls


def _ratios(by_stack: dict[str, list[LevelResult]], rep_runs: RepRuns) -> list[str]:
    """Per stack and level: CPU against the floor's, as the median over repetitions of
    the ratio within each round (the stacks of one round run back to back, so a change
    in the shared machine's speed between rounds cancels out), with its range."""
    lines = []
    floor = {r.calls: r for r in by_stack.get("floor", [])}
    for name in by_stack:
        if name == "floor":
            continue
        for r in by_stack.get(name, []):
            ref = floor.get(r.calls)
            if ref is None or r.audible_p50 is None or ref.audible_p50 is None:
                continue
            pairs = zip(rep_runs.get((name, r.calls), []), rep_runs.get(("floor", r.calls), []),
                        strict=False)
            ratios = sorted(a.cpu / b.cpu for a, b in pairs if a.cpu and b.cpu)
            if not ratios:
                continue
            mine, theirs = _per_call_second(r), _per_call_second(ref)
            per_cs = ("" if mine is None or theirs is None else
                      f" = {mine:.2f} vs {theirs:.2f} ms CPU per call-second")
            lines.append(f"{name:>12} at {r.calls:4d} calls: CPU {statistics.median(ratios):4.2f}x "
                         f"the floor's (per round {ratios[0]:.2f}-{ratios[-1]:.2f}){per_cs}, "
                         f"audible p50 {r.audible_p50 - ref.audible_p50:+5.1f} ms vs the floor")
    return lines


def _versus_baseline(by_stack: dict[str, list[LevelResult]], rep_runs: RepRuns) -> list[str]:
    """Per level, each stack against the same stack run from the baseline checkout: CPU
    as the median of per-round ratios (this over the baseline) and audible p99."""
    lines = []
    for name in by_stack:
        base, at, _ = name.partition("@")
        if not at:
            continue
        for mine, theirs in zip(by_stack.get(base, []), by_stack[name], strict=False):
            pairs = zip(rep_runs.get((base, mine.calls), []),
                        rep_runs.get((name, theirs.calls), []), strict=False)
            ratios = sorted(a.cpu / b.cpu for a, b in pairs if a.cpu and b.cpu)
            if not ratios or mine.audible_p99 is None or theirs.audible_p99 is None:
                continue
            lines.append(f"{base:>7} vs {name} at {mine.calls:4d} calls: CPU "
                         f"{statistics.median(ratios):4.2f}x (per round {ratios[0]:.2f}-"
                         f"{ratios[-1]:.2f}), audible p99 {mine.audible_p99:5.1f} vs "
                         f"{theirs.audible_p99:5.1f} ms")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stacks over the concurrency levels and print them side by side."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,10,20,50,100,200")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each call")
    parser.add_argument("--reps", type=int, default=2, help="repetitions per level (median)")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds, all stacks")
    parser.add_argument("--server-core", type=int)
    parser.add_argument("--client-core", type=int)
    parser.add_argument("--only", action="append", choices=[s.name for s in STACKS])
    parser.add_argument("--quick", action="store_true", help="1 and 10 calls, one repetition")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--baseline", metavar="REF",
                        help="also run ms-8k and ms-16k from a checkout of this git commit")
    args = parser.parse_args(argv)
    if args.quick:
        args.levels, args.reps, args.seconds = "1,10", 1, 4.0
    levels = sorted({int(x) for x in args.levels.split(",") if x.strip()})
    args.server_core, args.client_core = pin_cores(args.server_core, args.client_core)
    stacks = [s for s in STACKS if not args.only or s.name in args.only]
    with contextlib.ExitStack() as cleanup:
        if args.baseline:
            tree = cleanup.enter_context(_checkout(args.baseline))
            stacks += [Stack(f"{s.name}@{args.baseline[:10]}", s.argv, s.path, tree)
                       for s in list(stacks) if s.name.startswith("ms-")]
        return _run(stacks, levels, args)


@contextlib.contextmanager
def _checkout(ref: str) -> Iterator[Path]:
    """A temporary worktree of ``ref`` (removed afterwards)."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", "-q", str(tree),
                        ref], check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)],
                           check=False)


def _run(stacks: list[Stack], levels: list[int], args: argparse.Namespace) -> int:
    start = time.monotonic()
    log(f"{', '.join(s.name for s in stacks)}: levels {levels}, "
        f"{args.seconds:g} s calls x {args.reps}, interleaved")
    rep_runs: RepRuns = {}
    by_stack = asyncio.run(_bench(stacks, levels, args, start + args.budget, rep_runs))
    print(f"\nEcho through the server vs a bare websockets echo, Twilio μ-law callers "
          f"({args.seconds:g} s calls, median of {args.reps}; server on core "
          f"{args.server_core}, callers on core {args.client_core}). p50/p99 = audible "
          f"round trip, arr50 = arrival only, lost = ms per call (all ms); cpu = % of the "
          f"server's one core; ms/cs = server CPU ms per call-second; lag99 = load "
          f"generator send lag p99\n")
    print_table(*level_table(by_stack, COLUMNS))
    print()
    for line in _ratios(by_stack, rep_runs) + _versus_baseline(by_stack, rep_runs):
        print(line)
    print(f"(wall time {time.monotonic() - start:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {name: [r.__dict__ for r in rs] for name, rs in by_stack.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
