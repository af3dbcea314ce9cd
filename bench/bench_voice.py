"""The voice agent's turn latency: mediastream vs Pipecat's own FastAPI stack, same bot.

A turn's latency is what a caller waits: from the end of its words (the last voiced 20 ms
frame sent, plus 20 ms) to the first sample of the bot's answer *played* by the simulated
provider (its 20 ms playout clock, so any wait in the provider's buffer counts). The
simulated Twilio callers (:func:`mediastream.caller.run_calls`) say "Can you hear me?"
(the bundled ``caller-demo.wav``) every ``--period`` seconds after the greeting; the bot
is ``bot.voice_agent`` as shipped (Silero VAD, Pipecat's smart-turn end-of-turn model,
Deepgram -> OpenAI -> Cartesia), pointed at the local stand-ins of
:mod:`bench.voice_standins` through its endpoint settings.

The stand-ins' own delays are set twice: to **zero**, so what is left is what the stack
and the pipeline add (VAD and end-of-turn decision, frames through the pipeline, the
transport, pacing); and to **typical** values (:meth:`Delays.typical`: STT final 150 ms,
LLM first token 350 ms, TTS first audio 100 ms), so the figure is comparable with what a
caller would hear with the real services. The two stacks:

* ``mediastream``: :mod:`bench.mediastream_server` with ``--bot bot.voice_agent``;
* ``pipecat``: :mod:`bench.pipecat_server` with ``--bot voice_agent``: the Twilio guide's
  FastAPI + ``TwilioFrameSerializer`` + ``FastAPIWebsocketTransport``, the same
  :func:`bot.voice_agent.build_worker` pipeline (16 kHz in, 8 kHz out).

Each server runs in its own process pinned to one core; the callers and the stand-ins
share the other. Runs are interleaved (repetition, delay setting, stack) so a change in
the machine's load hits both stacks alike. Printed per stack and delay setting:
``turn latency p50 … p95 … ms`` over every turn of every call, the turns answered, and
the ratio of the two stacks' p50.

    python -m bench voice              # 3 calls x 5 turns, 2 repetitions (~3 min)
    python -m bench voice --quick      # 2 calls x 3 turns, 1 repetition
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.harness import ROOT, ServerProcess, fmt, log, pin_cores, print_table
from bench.voice_standins import Delays, Script, VoiceServices
from mediastream.caller import run_calls
from mediastream.caller.audio import read_wav

__all__ = ["main"]

#: "Can you hear me?" in caller-demo.wav (0.8 s, no pause inside).
SPEECH_S = (5.2, 6.1)
FIRST_TURN_AT = 1.5
SCRIPT = Script(transcripts=("Can you hear me?",),
                replies=("Hi there!", "Yes, I hear you."))
SETTINGS: tuple[tuple[str, Delays], ...] = (("zero", Delays()), ("typical", Delays.typical()))


@dataclass
class Stack:
    name: str
    argv: list[str]
    path: str
    server: ServerProcess | None = None
    #: delay setting -> audible turn latencies (ms); turns asked / answered.
    latencies: dict[str, list[float]] = field(default_factory=dict)
    turns: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _stacks() -> list[Stack]:
    return [
        Stack("pipecat", ["-m", "bench.pipecat_server", "--port", "{port}",
                          "--bot", "voice_agent"], "/ws"),
        Stack("mediastream", ["-m", "bench.mediastream_server", "--port", "{port}",
                              "--bot", "bot.voice_agent"], "/ws/twilio"),
    ]


def caller_wav(path: Path, turns: int, period: float) -> float:
    """Write the callers' WAV: "Can you hear me?" every ``period`` s; returns its length."""
    pcm, rate = read_wav(ROOT / "bot" / "assets" / "caller-demo.wav")
    words = pcm[round(SPEECH_S[0] * rate):round(SPEECH_S[1] * rate)]
    seconds = FIRST_TURN_AT + turns * period
    signal = np.zeros(round(seconds * rate), dtype=np.int16)
    for n in range(turns):
        at = round((FIRST_TURN_AT + n * period) * rate)
        signal[at:at + len(words)] = words
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(signal.tobytes())
    return seconds


async def _one_run(stack: Stack, setting: str, wav: Path, seconds: float, calls: int,
                   turns: int) -> None:
    assert stack.server is not None
    report = await run_calls(stack.server.url(stack.path), provider="twilio", calls=calls,
                             seconds=seconds, wav=wav, ramp=min(1.0, 0.3 * calls))
    got = report.audible_ms
    stack.latencies.setdefault(setting, []).extend(got)
    stack.turns[setting] = stack.turns.get(setting, 0) + calls * turns
    for call in report.calls:
        if call.failure or call.end != "completed":
            stack.failures.append(f"{setting}: call {call.index} {call.end} {call.failure}")
    p50, p95 = _percentiles(got)
    log(f"  {stack.name:11} {setting:7}: {len(got)}/{calls * turns} turns answered, "
        f"p50 {fmt(p50)} p95 {fmt(p95)} ms")


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    a = np.asarray(values)
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


async def _run(stacks: list[Stack], args: argparse.Namespace, wav: Path,
               seconds: float) -> VoiceServices:
    services = VoiceServices(SCRIPT)
    await services.start()
    try:
        for stack in stacks:
            stack.server = ServerProcess(stack.name, stack.argv, core=args.server_core,
                                         env=services.environ()).start()
        # Warm-up: first-call costs (model sessions, connections, imports on first use).
        for stack in stacks:
            await _one_run(stack, "warm-up", wav, seconds, 1, args.turns)
            stack.latencies.pop("warm-up", None)
            stack.turns.pop("warm-up", None)
        for _ in range(args.reps):
            for setting, delays in SETTINGS:
                services.delays = delays
                for stack in stacks:
                    await _one_run(stack, setting, wav, seconds, args.calls, args.turns)
    finally:
        for stack in stacks:
            if stack.server is not None:
                stack.server.stop()
        await services.close()
    return services


def _report(stacks: list[Stack], args: argparse.Namespace) -> dict[str, object]:
    print(f"\nbot.voice_agent behind each stack against local Deepgram/OpenAI/Cartesia "
          f"stand-ins; Twilio callers, {args.calls} calls x {args.turns} turns x "
          f"{args.reps} repetitions per row (interleaved); server core {args.server_core}, "
          f"callers and stand-ins on core {args.client_core}. Turn latency = end of the "
          f"caller's words -> first bot sample played, ms.\n")
    headers = ["stack", "delays", "answered", "p50", "p95", "max"]
    rows = []
    summary: dict[str, object] = {}
    for setting, _ in SETTINGS:
        for stack in stacks:
            values = stack.latencies.get(setting, [])
            p50, p95 = _percentiles(values)
            rows.append([stack.name, setting, f"{len(values)}/{stack.turns.get(setting, 0)}",
                         fmt(p50), fmt(p95), fmt(max(values, default=None))])
            summary[f"{stack.name}/{setting}"] = {"p50_ms": p50, "p95_ms": p95,
                                                  "turns": len(values)}
    print_table(headers, rows)
    print()
    for setting, delays in SETTINGS:
        own = (delays.stt_final + delays.llm_first_token + delays.tts_first_chunk) * 1000
        for stack in stacks:
            p50, p95 = _percentiles(stack.latencies.get(setting, []))
            print(f"{stack.name:11} delays {setting:7} (services' own {own:.0f} ms): "
                  f"turn latency p50 {fmt(p50, 0, 0)} p95 {fmt(p95, 0, 0)} ms")
        by = {s.name: _percentiles(s.latencies.get(setting, []))[0] for s in stacks}
        ref, ours = by.get("pipecat"), by.get("mediastream")
        if ref and ours:
            print(f"  {setting}: Pipecat's p50 / mediastream's p50 = {ref / ours:.2f} "
                  f"({ref - ours:+.0f} ms)")
    for stack in stacks:
        for failure in stack.failures:
            print(f"{stack.name}: {failure}")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Run both stacks over both delay settings and print their turn latency."""
    parser = argparse.ArgumentParser(prog="python -m bench voice", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3, help="concurrent calls per run")
    parser.add_argument("--turns", type=int, default=5, help="caller turns per call")
    parser.add_argument("--reps", type=int, default=2, help="repetitions (interleaved)")
    parser.add_argument("--period", type=float, default=3.5,
                        help="seconds from one caller turn to the next (default %(default)s)")
    parser.add_argument("--server-core", type=int)
    parser.add_argument("--client-core", type=int)
    parser.add_argument("--quick", action="store_true", help="2 calls x 3 turns, 1 repetition")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.turns, args.reps = 2, 3, 1
    args.server_core, args.client_core = pin_cores(args.server_core, args.client_core)
    start = time.monotonic()
    stacks = _stacks()
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "caller.wav"
        seconds = caller_wav(wav, args.turns, args.period)
        services = asyncio.run(_run(stacks, args, wav, seconds))
    summary = _report(stacks, args)
    print(f"(wall time {time.monotonic() - start:.0f} s)")
    if services.problems:
        print("stand-ins refused requests:\n  " + "\n  ".join(services.problems[:10]))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 1 if services.problems else 0


if __name__ == "__main__":
    sys.exit(main())
