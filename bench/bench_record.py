"""What call recording costs, and whether every recording of a load run is right.

``python -m bench record [--calls 20] [--seconds 6] [--reps 2]``

Two servers (``mediastream serve --bot echo``), the same but for ``--record DIR``, each in
its own process pinned to one core, take the same load of simulated Twilio μ-law probe
calls (:func:`mediastream.caller.run_calls`), interleaved: plain, recording, plain,
recording... The server's CPU is sampled over the steady part of each run
(:func:`bench.harness.run_level`) and printed side by side as milliseconds of CPU per
call-second, with the ratio: recording's cost as a share of one call's CPU (the budget
is 10 %). The echo bot is the cheapest bot there is, so the share is an upper bound for
real bots.

The same comparison without sockets: one call's session (``CallSession`` vs
``RecordingSession``, writer thread included) driven by the same probe frames, echoed
back, in this process, alternating, best of ``--reps``: the recording's own CPU
per call-second without the server runs' noise, also shown as a share of the server's
plain per-call CPU.

Then every WAV the recording runs wrote is checked (:mod:`bench.record_check`): a
complete standard WAV whose sidecar says complete, with the caller's probes on the left
at the times they were sent and each echo on the right shortly after, at its frequency.
The exit status is 1 when any file is wrong or a call failed. ``--calls 200`` is the
issue's load check (takes about a minute; run it on a quiet machine).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.harness import LevelResult, ServerProcess, log, pin_cores, run_level
from bench.record_check import check_echo_recording

__all__ = ["main"]

BUDGET = 0.10


def _argv(record: Path | None, bot: str) -> list[str]:
    argv = ["-m", "mediastream", "serve", "--port", "{port}", "--bot", bot,
            "--log-level", "WARNING", "--max-calls", "2000"]
    return argv + (["--record", str(record)] if record is not None else [])


async def _one(name: str, record: Path | None, args: argparse.Namespace) -> LevelResult:
    with ServerProcess(name, _argv(record, args.bot), core=args.server_core) as server:
        result = await run_level(server, server.url("/ws/twilio"), calls=args.calls,
                                 seconds=args.seconds, ramp=args.ramp)
    return result


def _session_ms(record: bool, seconds: int, root: Path) -> float:
    """CPU ms per call-second of one echoing session, recorded or not (this process)."""
    import base64

    from mediastream.call import CallEvent, InboundAudio
    from mediastream.caller.audio import probe_plan
    from mediastream.protocols.events import (
        AudioReceived,
        CallInfo,
        MarkPlayed,
        MediaFormat,
        SendMark,
    )
    from mediastream.recording import Recordings, check_record_dir
    from mediastream.recording.session import open_session
    from mediastream.session import CallSession

    fmt = MediaFormat("pcmu", 8000)
    info = CallInfo("twilio", f"CA-session-{record}", "MZ1", fmt, fmt)
    # What the server runs' callers send: the probe pattern (200 ms tones every 500 ms).
    frames = [base64.b64decode(f) for f in probe_plan(fmt, seconds).frames]
    clock = [0.0]

    class Echo:  # the host: the bot echoes every frame at once
        session: CallSession

        def deliver(self, events: list[CallEvent]) -> None:
            for event in events:
                if type(event) is InboundAudio:
                    self.session.send_audio(event.pcm, 16000, clock[0])

        def wake(self) -> None: ...
        def resume(self) -> None: ...
        def failed(self, exc: Exception) -> None:
            raise exc

    host = Echo()
    recordings = Recordings(check_record_dir(str(root))) if record else None
    host.session = session = open_session(recordings, info, host, clock=lambda: clock[0],
                                          agent=None, now=0.0, bot_sample_rate=16000)
    messages = [AudioReceived(frame, fmt, chunk=i + 1, timestamp_ms=20 * i)
                for i, frame in enumerate(frames)]
    started = time.process_time()
    for i, message in enumerate(messages):
        now = clock[0] = 0.02 * i
        session.receive_event(message, now)
        for command in session.poll(now):
            if type(command) is SendMark:
                session.receive_event(MarkPlayed(command.name), now)
    session.end("stop", clock[0])
    if recordings is not None:
        from mediastream.errors import Outcome
        from mediastream.recording.session import close_recording
        from mediastream.server.ending import Ending

        close_recording(session, clock[0], Ending(1000, "stop", Outcome.STOPPED))
        recordings.writer.close()
    return 1000 * (time.process_time() - started) / seconds


def _ms_per_call_second(r: LevelResult) -> float | None:
    return None if r.cpu is None else 1000 * r.cpu / r.calls


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench record", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each call")
    parser.add_argument("--ramp", type=float, default=None,
                        help="seconds over which the calls start (default: calls / 100)")
    parser.add_argument("--reps", type=int, default=2, help="runs per server (median)")
    parser.add_argument("--bot", default="echo",
                        help="the server's bot (default echo, the cheapest: the upper bound "
                        "of the share; bot.echo is the Pipecat echo)")
    parser.add_argument("--keep", metavar="DIR", help="record there and keep the files")
    parser.add_argument("--server-core", type=int)
    parser.add_argument("--client-core", type=int)
    args = parser.parse_args(argv)
    if args.ramp is None:
        args.ramp = args.calls / 100
    args.server_core, args.client_core = pin_cores(args.server_core, args.client_core)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ms-record-"))
    try:
        return _run(args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def _run(args: argparse.Namespace, root: Path) -> int:
    start = time.monotonic()
    log(f"{args.calls} calls of {args.seconds:g} s x {args.reps}, plain and recording, "
        f"interleaved; recordings in {root}")
    plain: list[LevelResult] = []
    recorded: list[LevelResult] = []
    dirs: list[Path] = []
    for rep in range(args.reps):
        plain.append(asyncio.run(_one("plain", None, args)))
        dirs.append(root / f"rep{rep}")
        recorded.append(asyncio.run(_one("record", dirs[-1], args)))
    failures = sum(r.failures for r in plain + recorded)
    rows = []
    for name, results in (("plain", plain), ("--record", recorded)):
        cpus = [v for v in map(_ms_per_call_second, results) if v is not None]
        rows.append((name, statistics.median(cpus) if cpus else None,
                     [round(v, 2) for v in cpus]))
    print(f"\nServer CPU per call-second, bot {args.bot}, {args.calls} Twilio μ-law calls of "
          f"{args.seconds:g} s, median of {args.reps} (server on core {args.server_core})")
    for name, median, runs in rows:
        shown = "-" if median is None else f"{median:.3f}"
        print(f"  {name:9} {shown:>7} ms CPU per call-second   runs: {runs}")
    status = 0
    # Each round's recording run against the plain run just before it (the machine's
    # speed drifts between rounds), then the median of those ratios.
    ratios = [r / p for p, r in zip(map(_ms_per_call_second, plain),
                                    map(_ms_per_call_second, recorded), strict=True)
              if p and r]
    if ratios:
        ratio = statistics.median(ratios)
        verdict = "within" if ratio - 1 <= BUDGET else "OVER"
        print(f"  recording costs {100 * (ratio - 1):+.1f} % of a call's CPU (median of "
              f"per-round ratios {[round(x, 3) for x in ratios]}; {verdict} the "
              f"{100 * BUDGET:.0f} % budget)")
    else:
        print("  no CPU figure: the steady window was too short (use --seconds >= 3)")
    plain_s, record_s = [], []
    for rep in range(max(3, args.reps)):
        plain_s.append(_session_ms(False, 60, root))
        record_s.append(_session_ms(True, 60, root / f"session{rep}"))
    own = min(record_s) - min(plain_s)
    print(f"\nOne session alone (no sockets), best of {len(plain_s)}: plain "
          f"{min(plain_s):.3f}, recording {min(record_s):.3f} ms CPU per call-second: the "
          f"recording's own cost {own:.3f} ms", end="")
    if rows[0][1]:
        print(f" = {100 * own / rows[0][1]:.1f} % of a plain server call's CPU above")
    else:
        print()
    wavs = sorted(p for d in dirs for p in d.glob("*.wav"))
    problems = [p for wav in wavs for p in check_echo_recording(wav, args.seconds)]
    expected = args.calls * args.reps
    print(f"\nRecordings: {len(wavs)} files for {expected} calls; "
          f"{len(wavs) - len({p.split(':')[0] for p in problems})} complete and right "
          f"(probes left, echoes right, at their times and frequencies)")
    for line in problems[:20]:
        print("  " + line)
    if len(problems) > 20:
        print(f"  ... and {len(problems) - 20} more")
    if failures:
        print(f"  {failures} calls failed")
    if problems or len(wavs) != expected or failures:
        status = 1
    print(f"(wall time {time.monotonic() - start:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
