"""Pipecat's own telephony stack vs mediastream: same echo bot, same simulated callers.

Each server runs in its own process pinned to one core; the simulated Twilio callers
(:func:`mediastream.caller.run_calls`: 20 ms μ-law frames in real time, 200 ms tone
bursts every 500 ms, pauses between them) run in this process on another core
(:mod:`bench.harness`). The stacks are interleaved level by level and repetition by
repetition, so a change in the machine's background load hits both alike. Per level:

* audible round-trip latency p50/p99 (first probe frame sent -> its onset *played* by the
  simulated provider, i.e. including any wait in the provider's playout buffer);
* audio lost per call (ms of probe tone that never came back, tails included);
* jitter (per-call standard deviation of the latency, RMS over calls);
* server CPU (fraction of its core over the steady part of the run) and CPU per call,
  plus the generator's send lag so a saturated generator is not mistaken for a slow server.

The reference is :mod:`bench.pipecat_server` (FastAPI + uvicorn, the Twilio guide's
``parse_telephony_websocket`` -> ``TwilioFrameSerializer`` -> ``FastAPIWebsocketTransport``);
ours is :mod:`bench.mediastream_server` with ``bot.echo``. Both run
:func:`bot.echo.build_worker` at 16 kHz: only the transport differs. ``--plain`` adds
mediastream's built-in echo (no Pipecat) to show what the Pipecat pipeline itself costs;
mediastream runs as ``mediastream serve`` does, with ``gc.freeze()`` after start-up;
``--unfrozen`` adds it without (a full collection of Pipecat's object graph then pauses
every call for tens of milliseconds).

Capacity is the largest level a stack still meets a criterion at, levels being climbed
until it misses twice in a row: the target (audible p99 <= 60 ms, nothing lost) and,
since Pipecat's stack misses that target even with one call, "keeps up" (p99 within 50 ms
of its own one-call p99, under 20 ms lost per call, no failed call). CPU per call gives a
projection independent of the other work on the machine: one core / (CPU per call).

    python -m bench pipecat                  # default levels, bounded by --budget
    python -m bench pipecat --quick          # 1 and 10 calls, one repetition
    python -m bench pipecat --frame-ms 20    # mediastream with 20 ms bot frames only

mediastream runs once per ``--frame-ms`` (``--bot-frame-ms`` of the server: 20 ms is
"mediastream", 40 and 60 are "ms-40ms" and "ms-60ms"): longer frames halve or third the
frames through the Pipecat pipeline for 20 or 40 ms more latency. The latency/CPU plot
goes to ``bench/results/pipecat_latency.png`` (``--plot``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

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

TARGET_P99_MS = 60.0
#: Where the latency-vs-calls plot goes unless --plot says otherwise.
DEFAULT_PLOT = Path(__file__).resolve().parent / "results" / "pipecat_latency.png"
KEEP_UP_SLACK_MS = 50.0
KEEP_UP_LOST_MS = 20.0


@dataclass
class Stack:
    """One server under test."""

    name: str
    argv: list[str]
    path: str
    results: list[LevelResult] = field(default_factory=list)
    misses: int = 0
    server: ServerProcess | None = None

    @property
    def running(self) -> bool:
        return self.misses < 2


def _stacks(plain: bool, unfrozen: bool, frame_ms: Sequence[int] = ()) -> list[Stack]:
    stacks = [
        Stack("pipecat", ["-m", "bench.pipecat_server", "--port", "{port}"], "/ws"),
        Stack("mediastream", ["-m", "bench.mediastream_server", "--port", "{port}",
                              "--bot", "bot.echo"], "/ws/twilio"),
    ]
    for ms in frame_ms:
        if ms != 20:  # "mediastream" is the default, 20 ms
            stacks.append(Stack(f"ms-{ms}ms", ["-m", "bench.mediastream_server", "--port",
                                               "{port}", "--bot", "bot.echo",
                                               "--bot-frame-ms", str(ms)], "/ws/twilio"))
    if plain:
        stacks.append(Stack("ms-plain", ["-m", "bench.mediastream_server", "--port", "{port}",
                                         "--bot", "echo"], "/ws/twilio"))
    if unfrozen:
        stacks.append(Stack("ms-unfrozen", ["-m", "bench.mediastream_server", "--port",
                                            "{port}", "--bot", "bot.echo", "--no-gc-freeze"],
                            "/ws/twilio"))
    return stacks


def meets_target(r: LevelResult) -> bool:
    """Audible p99 within the target and not a millisecond lost on any call."""
    return (r.audible_p99 is not None and r.audible_p99 <= TARGET_P99_MS
            and r.lost_max == 0 and not r.failures)


def keeps_up(r: LevelResult, base: LevelResult) -> bool:
    """Close to the stack's own one-call figures: it is not falling behind."""
    if r.audible_p99 is None or base.audible_p99 is None or r.failures:
        return False
    return (r.audible_p99 <= base.audible_p99 + KEEP_UP_SLACK_MS
            and (r.lost or 0.0) <= max(KEEP_UP_LOST_MS, base.lost or 0.0))


def capacity(results: list[LevelResult], criterion: str) -> int:
    """The largest level that met ``criterion`` ("target" or "keeps_up")."""
    if not results:
        return 0
    base = results[0]
    ok = [r.calls for r in results
          if (meets_target(r) if criterion == "target" else keeps_up(r, base))]
    return max(ok, default=0)


def cpu_ms_per_call_second(r: LevelResult) -> float | None:
    """Server CPU per call, in ms of CPU per second of call."""
    return None if r.cpu is None or not r.calls else r.cpu * 1000 / r.calls


async def _run(stacks: list[Stack], levels: list[int], args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.budget
    for stack in stacks:
        assert stack.server is not None
        # Warm-up: imports, first-call costs, JIT-free but cache-warm.
        await run_level(stack.server, stack.server.url(stack.path), calls=1, seconds=2.0,
                        ramp=0.0)
    for calls in levels:
        live = [s for s in stacks if s.running]
        if not live:
            break
        if time.monotonic() > deadline:
            log(f"time budget spent; stopping before {calls} calls")
            break
        reps: dict[str, list[LevelResult]] = {s.name: [] for s in live}
        for _ in range(args.reps):
            for stack in live:
                assert stack.server is not None
                reps[stack.name].append(await run_level(
                    stack.server, stack.server.url(stack.path), calls=calls,
                    seconds=args.seconds, ramp=min(2.0, 0.02 * calls)))
        for stack in live:
            result = median_levels(reps[stack.name])
            stack.results.append(result)
            ok = meets_target(result) or keeps_up(result, stack.results[0])
            stack.misses = 0 if ok else stack.misses + 1
            log(f"  {stack.name:11} {calls:4d} calls: audible p50 {fmt(result.audible_p50)} "
                f"p99 {fmt(result.audible_p99)} ms, lost {fmt(result.lost)} ms/call, "
                f"cpu {fmt(None if result.cpu is None else result.cpu * 100)}%"
                + ("" if ok else "  (falling behind)"))


#: Per stack: audible p50/p99, lost ms per call, jitter, CPU %, CPU per call-second.
COLUMNS: tuple[Column, ...] = (
    ("p50", lambda r: fmt(r.audible_p50)),
    ("p99", lambda r: fmt(r.audible_p99)),
    ("lost", lambda r: fmt(r.lost)),
    ("jitter", lambda r: fmt(r.jitter)),
    ("cpu%", lambda r: fmt(None if r.cpu is None else r.cpu * 100)),
    ("ms/call-s", lambda r: fmt(cpu_ms_per_call_second(r), digits=2)),
)


def _report(stacks: list[Stack], args: argparse.Namespace) -> dict[str, dict[str, object]]:
    headers, rows = level_table({s.name: s.results for s in stacks}, COLUMNS)
    headers.append("gen lag p99")
    for row in rows:
        lags = [r.lag_p99 for s in stacks for r in s.results
                if r.calls == int(row[0]) and r.lag_p99 is not None]
        row.append(fmt(max(lags, default=None)))
    print(f"\nEcho bot at 16 kHz behind each stack; Twilio μ-law callers, {args.seconds:g} s "
          f"calls, median of {args.reps} (interleaved); server core {args.server_core}, "
          f"callers on core {args.client_core}. Latency = audible round trip, ms.\n")
    print_table(headers, rows)

    summary: dict[str, dict[str, object]] = {}
    for s in stacks:
        one = s.results[0] if s.results else None
        per_call = [v for v in (cpu_ms_per_call_second(r) for r in s.results
                                if r.calls >= 10) if v is not None]
        cost = min(per_call) if per_call else None
        summary[s.name] = {
            "one_call_p50_ms": one.audible_p50 if one else None,
            "one_call_p99_ms": one.audible_p99 if one else None,
            "one_call_arrival_p50_ms": one.p50 if one else None,
            "capacity_target": capacity(s.results, "target"),
            "capacity_keeps_up": capacity(s.results, "keeps_up"),
            "cpu_ms_per_call_second": cost,
            "projected_calls_per_core": round(1000 / cost) if cost else None,
        }
    print()
    for name, v in summary.items():
        print(f"{name:11}: 1 call audible p50 {fmt(v['one_call_p50_ms'])} ms "  # type: ignore[arg-type]
              f"p99 {fmt(v['one_call_p99_ms'])} ms (arrival p50 "  # type: ignore[arg-type]
              f"{fmt(v['one_call_arrival_p50_ms'], 1)} ms); "  # type: ignore[arg-type]
              f"capacity: target {v['capacity_target']}, "
              f"keeps up {v['capacity_keeps_up']} calls; "
              f"{fmt(v['cpu_ms_per_call_second'], digits=2)} ms CPU per call-second "  # type: ignore[arg-type]
              f"(~{v['projected_calls_per_core']} calls per core)")
    ref = summary.get("pipecat")
    for name, ours in summary.items():
        if ref is None or name == "pipecat" or name == "ms-plain":
            continue
        if ref["one_call_p50_ms"] and ours["one_call_p50_ms"]:
            print(f"1 call: {name}'s audible p50 is "
                  f"{ref['one_call_p50_ms'] / ours['one_call_p50_ms']:.1f}x lower")  # type: ignore[operator]
        for key in ("capacity_target", "capacity_keeps_up", "projected_calls_per_core"):
            if ref[key] and ours[key]:
                print(f"  {key}: {name} / Pipecat = "
                      f"{ours[key] / ref[key]:.2f}")  # type: ignore[operator]
            else:
                print(f"  {key}: Pipecat {ref[key]}, {name} {ours[key]}")
    return summary


def _check_matplotlib(parser: argparse.ArgumentParser) -> None:
    """Fail before the run, not after it, when the plot cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parser.error("--plot needs matplotlib (the [plot] extra); give --plot '' to skip it")


def _plot(stacks: list[Stack], args: argparse.Namespace, path: Path) -> None:
    """Audible p50 (dashed) and p99 (solid) against calls, one colour per stack, with the
    target line; a second panel has CPU per call-second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, cpu) = plt.subplots(1, 2, figsize=(12, 4.8))
    for i, s in enumerate(stacks):
        rs = [r for r in s.results if r.audible_p99 is not None]
        if not rs:
            continue
        color = f"C{i}"
        calls = [r.calls for r in rs]
        lat.plot(calls, [r.audible_p99 for r in rs], "o-", color=color, label=f"{s.name} p99")
        lat.plot(calls, [r.audible_p50 for r in rs], "x--", color=color, alpha=0.6,
                 label=f"{s.name} p50")
        per_call = [(r.calls, cpu_ms_per_call_second(r)) for r in rs if r.calls >= 10]
        if per_call:
            cpu.plot([c for c, _ in per_call], [v for _, v in per_call], "o-", color=color,
                     label=s.name)
    lat.axhline(TARGET_P99_MS, color="grey", linestyle=":", label=f"target {TARGET_P99_MS:g} ms")
    for ax in (lat, cpu):
        ax.set_xscale("log")
        ax.set_xlabel("concurrent calls")
        ax.grid(True, which="both", alpha=0.3)
    lat.set_ylabel("audible round trip, ms")
    lat.set_yscale("log")
    lat.set_title("Echo bot latency a caller hears")
    cpu.set_ylabel("server CPU, ms per call-second")
    cpu.set_title("Server CPU per call")
    lat.legend(fontsize=7)
    cpu.legend(fontsize=7)
    fig.suptitle(f"Pipecat's FastAPI stack vs mediastream, same Pipecat echo bot "
                 f"({args.seconds:g} s Twilio calls, median of {args.reps})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stacks over the concurrency levels and print them side by side."""
    parser = argparse.ArgumentParser(prog="python -m bench pipecat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,10,25,50,100,150,200,300",
                        help="call counts, ascending (default %(default)s); 1 is always run")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each call")
    parser.add_argument("--reps", type=int, default=2, help="repetitions per level (median)")
    parser.add_argument("--budget", type=float, default=480.0,
                        help="stop climbing levels after this many seconds (%(default)s)")
    parser.add_argument("--server-core", type=int)
    parser.add_argument("--client-core", type=int)
    parser.add_argument("--plain", action="store_true",
                        help="also run mediastream's built-in echo (no Pipecat)")
    parser.add_argument("--unfrozen", action="store_true",
                        help="also run mediastream without serve()'s gc.freeze()")
    parser.add_argument("--frame-ms", default="20,40,60",
                        help="bot frame lengths to run mediastream with (--bot-frame-ms); "
                             "default %(default)s")
    parser.add_argument("--quick", action="store_true", help="1 and 10 calls, one repetition")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--plot", metavar="FILE.png", default=str(DEFAULT_PLOT),
                        help="latency vs calls per stack (default %(default)s; '' for none)")
    args = parser.parse_args(argv)
    if args.quick:
        args.levels, args.reps, args.seconds = "1,10", 1, 4.0
    levels = sorted({1, *(int(x) for x in args.levels.split(",") if x.strip())})
    args.server_core, args.client_core = pin_cores(args.server_core, args.client_core)

    frame_ms = [int(x) for x in args.frame_ms.split(",") if x.strip()]
    if any(ms not in (20, 40, 60) for ms in frame_ms):
        parser.error("--frame-ms takes 20, 40 and/or 60")
    if args.plot:
        _check_matplotlib(parser)
    stacks = _stacks(args.plain, args.unfrozen, frame_ms)
    start = time.monotonic()
    try:
        for stack in stacks:
            stack.server = ServerProcess(stack.name, stack.argv, core=args.server_core).start()
        asyncio.run(_run(stacks, levels, args))
    finally:
        for stack in stacks:
            if stack.server is not None:
                stack.server.stop()
    summary = _report(stacks, args)
    if args.plot:
        _plot(stacks, args, Path(args.plot))
        print(f"latency vs calls: {args.plot}")
    print(f"(wall time {time.monotonic() - start:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"summary": summary, "levels": {s.name: [asdict(r) for r in s.results]
                                            for s in stacks}}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
