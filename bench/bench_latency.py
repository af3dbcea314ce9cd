"""Audible round trip through ``mediastream serve --bot echo`` vs a bare echo server.

The bare server is the floor (:mod:`bench.bare_echo`): ``websockets`` + ``json``, each media
message's payload sent straight back in the provider's reply form -- no codec, no
resampling, no pacing, no bot.
Both run in their own process pinned to one core; the simulated callers
(:func:`mediastream.caller.run_calls`: 20 ms frames on a drift-free clock, tone-burst
probes, marks acknowledged after playout) run here, pinned to the other core.

Per level of concurrent calls, side by side: latency p50/p99 (probe sent -> its onset
returned, at sample resolution), audible p50/p99 (plus the wait in the provider's playout
buffer), lost ms per call, jitter, playout underruns, server CPU as a fraction of one core
(steady state, from /proc) and the load generator's own send lag p99 -- if that is high,
the generator, not the server, was the bottleneck. Then the targets of issue 4:
1 call p50 <= 25 ms; 200 calls p99 <= 60 ms, nothing lost, server CPU <= 0.8 core and
within 1.5x of the bare echo server's.

    python -m bench latency                      # levels 1,50,200
    python -m bench.bench_latency --quick        # 1 and 50 calls, one repetition
    python -m bench latency --leads 20,40,80 --levels 1,50   # the playout_lead study
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    LevelResult,
    ServerProcess,
    fmt,
    log,
    median_levels,
    pin_cores,
    print_table,
    run_level,
)

__all__ = ["main"]

#: Issue 4's targets.
TARGET_P50_1 = 25.0
TARGET_P99_200 = 60.0
TARGET_CPU_200 = 0.8
TARGET_CPU_RATIO = 1.5


# ------------------------------------------------------------------ the runs


STACKS = {
    "bare": ["-m", "bench.bare_echo", "--port", "{port}"],
    "mediastream": ["-m", "mediastream", "serve", "--bot", "echo", "--port", "{port}",
                    "--max-calls", "5000", "--log-level", "WARNING"],
}


async def _bench(name: str, levels: list[int], args: argparse.Namespace,
                 server_core: int | None) -> list[LevelResult]:
    results: list[LevelResult] = []
    with ServerProcess(name, STACKS[name], core=server_core) as server:
        url = server.url(f"/ws/{args.provider}")
        # Warm-up: first-call costs (imports, caches) are not what we measure.
        await run_level(server, url, calls=1, seconds=1.5, ramp=0, provider=args.provider)
        for calls in levels:
            ramp = min(3.0, 0.015 * calls)
            seconds = min(args.seconds, 15.0 - ramp)  # each level stays within 15 s
            reps = [await run_level(server, url, calls=calls, seconds=seconds, ramp=ramp,
                                    provider=args.provider) for _ in range(args.reps)]
            r = median_levels(reps)
            results.append(r)
            log(f"  {name:11} {calls:4d} calls: p50 {fmt(r.p50)} p99 {fmt(r.p99)} ms, "
                f"lost {fmt(r.lost)} ms/call, cpu {fmt(r.cpu, 5, 2)} core, "
                f"send lag p99 {fmt(r.lag_p99, 5)} ms" + (f", {r.failures} failed"
                                                          if r.failures else ""))
    return results


def _verdicts(ms: dict[int, LevelResult], bare: dict[int, LevelResult]) -> list[str]:
    lines: list[str] = []

    def check(label: str, ok: bool | None, figure: str) -> None:
        verdict = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        lines.append(f"  [{verdict}] {label}: {figure}")

    one = ms.get(1)
    check(f"1 call p50 <= {TARGET_P50_1:g} ms",
          None if one is None or one.p50 is None else one.p50 <= TARGET_P50_1,
          "-" if one is None else f"{fmt(one.p50, 0)} ms (audible {fmt(one.audible_p50, 0)} ms)")
    top = ms.get(200)
    ref = bare.get(200)
    check(f"200 calls p99 <= {TARGET_P99_200:g} ms",
          None if top is None or top.p99 is None else top.p99 <= TARGET_P99_200,
          "-" if top is None else f"{fmt(top.p99, 0)} ms (audible {fmt(top.audible_p99, 0)} ms)")
    check("200 calls: nothing lost",
          None if top is None or top.lost_max is None
          else top.lost_max == 0 and top.failures == 0,
          "-" if top is None else f"worst call {fmt(top.lost_max, 0)} ms, "
          f"{top.failures} failed call(s)")
    check(f"200 calls: server CPU <= {TARGET_CPU_200:g} core",
          None if top is None or top.cpu is None else top.cpu <= TARGET_CPU_200,
          "-" if top is None else f"{fmt(top.cpu, 0, 2)} core")
    ratio = (top.cpu / ref.cpu) if top and ref and top.cpu and ref.cpu else None
    check(f"200 calls: CPU within {TARGET_CPU_RATIO:g}x the bare echo's",
          None if ratio is None else ratio <= TARGET_CPU_RATIO,
          "-" if ratio is None else f"{ratio:.2f}x ({fmt(top.cpu if top else None, 0, 2)} vs "
          f"{fmt(ref.cpu if ref else None, 0, 2)} core)")
    return lines


# ------------------------------------------------------------------ the playout lead


def _lead_stacks(lead_ms: int) -> dict[str, list[str]]:
    lead = f"{lead_ms / 1000:g}"
    common = ["--max-calls", "5000", "--log-level", "WARNING", "--port", "{port}",
              "--playout-lead", lead]
    return {
        # Pipecat's echo (16 kHz): its output transport hands audio over in bursts, which
        # the lead lets go ahead of real time into the provider's buffer.
        f"echo@{lead_ms}": ["-m", "mediastream", "serve", "--bot", "bot.echo", *common],
        # Interrupted speech: a clear -> silence per key press.
        f"talk@{lead_ms}": ["-m", "mediastream", "serve", "--bot", "bench.talker_bot",
                            *common],
    }


def _median(values: list[float | None]) -> float | None:
    present = sorted(v for v in values if v is not None)
    return None if not present else present[len(present) // 2] if len(present) % 2 else (
        (present[len(present) // 2 - 1] + present[len(present) // 2]) / 2)


async def _lead_bench(leads: list[int], levels: list[int], args: argparse.Namespace,
                      server_core: int | None) -> list[list[str]]:
    """Every lead's servers up at once; each repetition runs every lead in turn, so the
    shared machine's background load falls on all of them alike."""
    stacks = {name: argv for lead in leads for name, argv in _lead_stacks(lead).items()}
    servers = {name: ServerProcess(name, argv, core=server_core)
               for name, argv in stacks.items()}
    keys = ",".join(f"{k}@{1.0 + 1.2 * i:.1f}" for i, k in enumerate("5555"))
    rows: list[list[str]] = []
    try:
        for server in servers.values():
            await asyncio.to_thread(server.start)
            await run_level(server, server.url(f"/ws/{args.provider}"), calls=1, seconds=1.5,
                            ramp=0, provider=args.provider)
        for calls in levels:
            ramp = min(3.0, 0.015 * calls)
            seconds = max(6.0, min(args.seconds, 15.0 - ramp))
            runs: dict[str, list[LevelResult]] = {name: [] for name in servers}
            for _ in range(args.reps):
                for lead in leads:
                    for kind in ("echo", "talk"):
                        name = f"{kind}@{lead}"
                        server = servers[name]
                        extra = {"dtmf": keys} if kind == "talk" else {}
                        runs[name].append(await run_level(
                            server, server.url(f"/ws/{args.provider}"), calls=calls,
                            seconds=seconds, ramp=ramp, provider=args.provider, **extra))
            for lead in leads:
                echo, talk = median_levels(runs[f"echo@{lead}"]), runs[f"talk@{lead}"]
                c2s50 = _median([r.extra.get("clear_to_silence_p50") for r in talk])
                c2smax = max((r.extra.get("clear_to_silence_max") or 0.0 for r in talk),
                             default=None)
                clears = sum(int(r.extra.get("clears") or 0) for r in talk)
                log(f"  lead {lead:3d} ms {calls:4d} calls: audible p50 {fmt(echo.audible_p50)} "
                    f"p99 {fmt(echo.audible_p99)}, clear->silence p50 {fmt(c2s50)} ms")
                rows.append([
                    str(lead), str(calls), fmt(echo.p50), fmt(echo.p99),
                    fmt(echo.audible_p50), fmt(echo.audible_p99), str(echo.underruns),
                    fmt(echo.lost), fmt(c2s50), fmt(c2smax), str(clears),
                    str(echo.failures + sum(r.failures for r in talk)),
                ])
    finally:
        for server in servers.values():
            server.stop()
    return rows


def _lead_main(leads: list[int], levels: list[int], args: argparse.Namespace,
               server_core: int | None, client_core: int | None) -> int:
    start = time.monotonic()
    log(f"playout lead {leads} ms: levels {levels}, x {args.reps}, interleaved")
    rows = asyncio.run(_lead_bench(leads, levels, args, server_core))
    print(f"\nplayout_lead against what the caller hears, {args.provider} callers (median of "
          f"{args.reps}; servers on core {server_core}, callers on core {client_core}).\n"
          "echo = mediastream serve --bot bot.echo (Pipecat, 16 kHz): rt = probe round "
          "trip, aud = audible (+ the wait in the provider's playout buffer), underruns "
          "and lost ms/call;\ntalk = bench.talker_bot (speaks 2 s at a time, clears on "
          "each key): clear->silence = clear arrived -> the caller's first 20 ms of "
          "silence.\n")
    print_table(["lead ms", "calls", "rt50", "rt99", "aud50", "aud99", "underruns", "lost",
                 "c->s p50", "c->s max", "clears", "failed"], rows)
    print(f"(wall time {time.monotonic() - start:.0f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run both servers over the levels and print them side by side with the targets."""
    parser = argparse.ArgumentParser(prog="python -m bench latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,50,200", help="concurrent calls per level")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="audio per call (a level, ramp included, stays within 15 s)")
    parser.add_argument("--reps", type=int, default=2, help="repetitions per level (median)")
    parser.add_argument("--provider", default="twilio", choices=("twilio", "telnyx", "plivo"))
    parser.add_argument("--server-core", type=int)
    parser.add_argument("--client-core", type=int)
    parser.add_argument("--only", action="append", choices=sorted(STACKS))
    parser.add_argument("--quick", action="store_true", help="1 and 50 calls, one repetition")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--leads", metavar="MS,...",
                        help="instead: measure these playout_lead values (e.g. 20,40,80) "
                             "against audible latency and clear->silence")
    args = parser.parse_args(argv)
    if args.quick:
        args.levels, args.reps, args.seconds = "1,50", 1, 5.0
    levels = sorted({int(x) for x in args.levels.split(",") if x.strip()})
    server_core, client_core = pin_cores(args.server_core, args.client_core)
    if args.leads:
        leads = [int(x) for x in args.leads.split(",") if x.strip()]
        return _lead_main(leads, levels, args, server_core, client_core)
    start = time.monotonic()
    names = [n for n in ("bare", "mediastream") if not args.only or n in args.only]
    by_stack: dict[str, list[LevelResult]] = {}
    for name in names:
        log(f"{name}: levels {levels}, {args.seconds:g} s calls x {args.reps}")
        by_stack[name] = asyncio.run(_bench(name, levels, args, server_core))

    print(f"\nEcho round trip, {args.provider} callers ({args.seconds:g} s calls, median of "
          f"{args.reps}; server pinned to core {server_core}, callers to core {client_core})."
          "\nms: latency = probe sent -> onset returned; aud = audible: + the wait in the "
          "provider's playout buffer\n(its 20 ms clock and any lead the server keeps); "
          "cpu = server, gen cpu = load generator, fractions of one core;\nlag99 = the "
          "generator's send lag p99 (high = the generator, not the server, was short).\n")
    rows = []
    for calls in levels:
        for name in names:
            r = next((x for x in by_stack[name] if x.calls == calls), None)
            if r is None:
                continue
            rows.append([
                str(calls), name, fmt(r.p50), fmt(r.p99), fmt(r.audible_p50),
                fmt(r.audible_p99), fmt(r.lost), fmt(r.jitter, 5, 2), str(r.underruns),
                fmt(r.cpu, 5, 2), fmt(r.gen_cpu, 5, 2), fmt(r.lag_p99, 5), str(r.failures),
            ])
    print_table(["calls", "server", "p50", "p99", "aud50", "aud99", "lost/call", "jitter",
                 "underruns", "cpu", "gen cpu", "lag99", "failed"], rows)
    lag = max((r.lag_p99 or 0.0) for rs in by_stack.values() for r in rs)
    if lag > 5:
        print(f"\nnote: the load generator's send lag reached p99 {lag:.1f} ms: it was "
              "short of CPU, so the highest levels understate what the server can do")
    ms = {r.calls: r for r in by_stack.get("mediastream", [])}
    bare = {r.calls: r for r in by_stack.get("bare", [])}
    print("\nTargets (issue 4), mediastream:")
    for line in _verdicts(ms, bare):
        print(line)
    print(f"(wall time {time.monotonic() - start:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {name: [r.__dict__ for r in rs] for name, rs in by_stack.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
