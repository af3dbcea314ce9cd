"""``mediastream call``: the simulated caller's command line.

Exit status: 0 when the run met its limits, 1 when ``--max-p99-ms``/``--max-lost-ms`` were
exceeded (or, with a limit set, any call failed to connect), 2 for bad arguments, 3 when
no call connected at all. ``--max-p99-ms`` gates the audible latency (what the caller
hears) unless ``--gate round-trip``. With two or more URLs the servers run interleaved,
round by round with the same load, and the limits apply to each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import ssl
import sys
from typing import Any

from mediastream.config import Config

from .audio import ProbeConfig
from .dialects import PROVIDERS
from .faults import parse_fault
from .report import RunReport, summarize
from .runner import parse_dtmf, run_calls, stderr_progress

__all__ = ["add_parser", "format_comparison", "format_report", "main", "merge_reports"]

EXAMPLES = """\
examples:
  mediastream call ws://127.0.0.1:8765/ws/twilio --provider twilio --seconds 10
  mediastream call http://127.0.0.1:8765/twilio --provider twilio --calls 50 --ramp 5 --sign
  mediastream call ws://127.0.0.1:8765/ws/plivo --provider plivo --codec l16 --rate 16000 \\
      --json --max-p99-ms 60 --max-lost-ms 0
  mediastream call ws://127.0.0.1:8765/ws/telnyx --provider telnyx --wav hello.wav \\
      --record out/ --fault jitter:10 --fault reorder:0.05
  mediastream call ws://127.0.0.1:8765/ws/twilio ws://127.0.0.1:8000/ws --provider twilio \\
      --label mediastream --label pipecat --calls 10 --plot compare.png
"""


def add_parser(subparsers: Any) -> None:
    """Register ``call`` on the ``mediastream`` command line."""
    p = subparsers.add_parser(
        "call",
        allow_abbrev=False,
        help="call a media-stream server as Twilio/Telnyx/Plivo would, and measure it",
        description=(
            "Simulated caller: speaks the provider's side of the media-stream protocol, "
            "plays back what the server sends like the provider does, and measures the "
            "audible round trip, lost audio, jitter and underruns."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", nargs="*",
                   help="ws(s):// stream URL, or the http(s):// incoming-call webhook; "
                        "two or more: compare the servers (interleaved, same load, one plot)")
    p.add_argument("--label", action="append", default=[], metavar="NAME",
                   help="name of each URL in summaries and plots, in order (default: the URL)")
    p.add_argument("--gate", choices=("audible", "round-trip"), default="audible",
                   help="latency --max-p99-ms gates and --plot draws: audible (what the "
                        "caller hears: arrival + the provider's playout queue; default) or "
                        "round-trip (arrival only)")
    p.add_argument("--rounds", type=int, metavar="N",
                   help="comparing: rounds, each running every URL's calls in turn "
                        "(default 2; 1 for a single URL)")
    p.add_argument("--webhook", metavar="URL",
                   help="incoming-call webhook to POST first (same as an http(s) URL)")
    p.add_argument("--provider", required=True, choices=PROVIDERS)
    p.add_argument("--calls", type=int, default=1, metavar="N", help="concurrent calls (1)")
    p.add_argument("--seconds", type=float, default=10.0, metavar="S",
                   help="audio per call in seconds (10)")
    p.add_argument("--ramp", type=float, default=0.0, metavar="S",
                   help="spread call starts over S seconds (0)")
    p.add_argument("--wav", metavar="FILE",
                   help="speak this WAV instead of probe tones; measures response time")
    p.add_argument("--wav-at", type=float, default=0.0, metavar="S",
                   help="start the WAV S seconds into the call (after a bot's greeting)")
    p.add_argument("--codec", choices=("pcmu", "pcma", "l16"), default="pcmu")
    p.add_argument("--rate", type=int, choices=(8000, 16000), default=8000)
    p.add_argument("--tracks", choices=("inbound", "both"), default="inbound",
                   help="both: stream a both-tracks fork, the other party (a steady "
                        "2200 Hz tone) on the outbound track beside the caller's audio")
    p.add_argument("--params", nargs="+", action="extend", default=[], metavar="K=V",
                   help="custom stream parameters (customParameters / extra_headers)")
    p.add_argument("--dtmf", default="", metavar="D@S,...",
                   help="press digits during the call, e.g. 1@2.0,#@3.5")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC",
                   help="jitter:MS | reorder:P | stall:MS@T | close@T | halfopen@T "
                        "(repeatable)")
    p.add_argument("--secret", metavar="VALUE",
                   help="sign webhooks/upgrades: Twilio/Plivo auth token, Telnyx base64 "
                        "Ed25519 seed")
    p.add_argument("--sign", action="store_true",
                   help="sign with TWILIO_AUTH_TOKEN / PLIVO_AUTH_TOKEN, read as the server "
                        "reads them (Telnyx: give --secret)")
    p.add_argument("--json", action="store_true", help="print one JSON object for the run")
    p.add_argument("--plot", metavar="FILE.png", help="latency CDF + per-call timeline")
    p.add_argument("--record", metavar="DIR", help="write what each caller heard as WAV")
    p.add_argument("--max-p99-ms", type=float, metavar="X",
                   help="exit 1 if the --gate latency's p99 exceeds X ms")
    p.add_argument("--max-lost-ms", type=float, metavar="Y",
                   help="exit 1 if any call lost more than Y ms of probe audio")
    p.add_argument("--probe", default="200/500", metavar="TONE/PERIOD",
                   help="probe tone and period in ms, multiples of 20 (200/500)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="webhook/connect/handshake timeout (10)")
    p.add_argument("--insecure", action="store_true",
                   help="do not verify TLS certificates (self-signed test servers)")
    p.add_argument("--seed", type=int, help="seed for fault randomness")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``mediastream call``; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    urls: list[str] = list(args.url)
    if args.webhook:
        urls.append(args.webhook)
    if not urls or (args.webhook and args.url):
        print("mediastream call: give a URL or --webhook (not both)", file=sys.stderr)
        return 2
    if args.label and len(args.label) != len(urls):
        print(f"mediastream call: {len(args.label)} --label for {len(urls)} URLs",
              file=sys.stderr)
        return 2
    rounds = args.rounds if args.rounds is not None else (2 if len(urls) > 1 else 1)
    limits: dict[str, float] = {}
    if args.max_p99_ms is not None:
        limits["max_p99_ms"] = args.max_p99_ms
    if args.max_lost_ms is not None:
        limits["max_lost_ms"] = args.max_lost_ms
    try:
        if rounds < 1:
            raise ValueError("--rounds must be >= 1")
        params = dict(_pair(p) for p in args.params)
        faults = [parse_fault(f) for f in args.fault]
        dtmf = parse_dtmf(args.dtmf)
        tone, _, period = args.probe.partition("/")
        probe = ProbeConfig(tone_ms=int(tone), period_ms=int(period or 500))
        secret = args.secret or (_env_secret(args.provider) if args.sign else None)
        if args.plot:
            from .plot import require_matplotlib

            require_matplotlib()  # before the run, not after minutes of it
    except (ValueError, RuntimeError) as exc:
        print(f"mediastream call: {exc}", file=sys.stderr)
        return 2
    context = None
    if args.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    progress = None
    if not args.quiet and (args.seconds + args.ramp >= 3 or args.calls > 1):
        progress = stderr_progress()

    async def one(url: str) -> RunReport:
        return await run_calls(
            url, provider=args.provider, calls=args.calls, seconds=args.seconds,
            ramp=args.ramp, wav=args.wav, wav_at=args.wav_at, codec=args.codec,
            rate=args.rate, params=params,
            faults=faults, dtmf=dtmf, probe=probe, record_dir=args.record, secret=secret,
            limits=limits, progress=progress, ssl_context=context,
            connect_timeout=args.timeout, seed=args.seed, tracks=args.tracks,
        )

    async def interleaved() -> list[list[RunReport]]:
        # Round by round, every URL in turn: background load (a shared machine) falls
        # on each server alike, and no server always runs first.
        runs: list[list[RunReport]] = [[] for _ in urls]
        for r in range(rounds):
            order = list(range(len(urls)))
            if r % 2:
                order.reverse()
            for i in order:
                runs[i].append(await one(urls[i]))
        return runs

    try:
        runs = asyncio.run(interleaved())
    except (ValueError, OSError) as exc:
        print(f"mediastream call: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    reports = [merge_reports(r) for r in runs]
    for i, report in enumerate(reports):
        report.gate = args.gate
        report.label = args.label[i] if args.label else ""
    if args.json:
        data = [r.to_dict() for r in reports]
        print(json.dumps(data[0] if len(data) == 1 else {"compare": data}))
    else:
        print("\n\n".join(format_report(r) for r in reports))
        if len(reports) > 1:
            print("\n" + format_comparison(reports))
    if args.plot:
        from .plot import PlotUnavailable, plot_reports

        try:
            plot_reports(reports, args.plot)
        except PlotUnavailable as exc:
            print(f"mediastream call: {exc}", file=sys.stderr)
            return 2
    if any(r.connected == 0 for r in reports):
        return 3
    return 1 if any(r.violations() for r in reports) else 0


def merge_reports(runs: list[RunReport]) -> RunReport:
    """One report over several runs against the same URL (the rounds of a comparison)."""
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    return RunReport(
        first.url, first.provider, first.seconds, [c for r in runs for c in r.calls],
        wall_s=sum(r.wall_s for r in runs), faults=first.faults, limits=first.limits)


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"bad parameter {text!r}: expected KEY=VALUE")
    return key, value


def _env_secret(provider: str) -> str:
    # The environment is read by mediastream.config alone (docs/design.md §1).
    creds = Config.from_env().credentials
    token = {"twilio": creds.twilio_auth_token, "plivo": creds.plivo_auth_token}.get(provider)
    if not token:
        raise ValueError(
            f"--sign: no auth token for {provider} in the environment"
            + (" (Telnyx needs --secret with the private key seed)" if provider == "telnyx" else "")
        )
    return token


def _ms(summary: dict[str, float | int | None], keys: tuple[str, ...]) -> str:
    if not summary.get("count"):
        return "-"
    return "  ".join(f"{k} {summary[k]:.1f}" for k in keys) + " ms"


def format_report(report: RunReport) -> str:
    """The human-readable summary of a run."""
    d = report.to_dict()
    ends = ", ".join(f"{k} {v}" for k, v in sorted(d["ends"].items()))
    closes = ", ".join(f"{k} x{v}" for k, v in sorted(d["closes"].items())) or "-"
    kind = "round trip" if report.latency_kind == "probe_round_trip" else "response time"
    lat = summarize(report.latencies_ms)
    audible_gate = "  <- gate" if report.gate == "audible" else ""
    trip_gate = "  <- gate" if report.gate == "round-trip" else ""
    name = f"{report.label} ({d['url']})" if report.label else d["url"]
    lines = [
        f"{d['calls']} call(s) to {name} as {d['provider']}, {d['seconds']:g} s each"
        + (f", faults: {', '.join(d['faults'])}" if d["faults"] else ""),
        f"  connected         {d['connected']}/{d['calls']}   handshake failures "
        f"{d['handshake_failures']}   ends: {ends}",
        f"  closed with       {closes}",
        f"  latency ({kind})  {_ms(lat, ('p50', 'p95', 'p99', 'max'))}"
        f"   n={lat['count']}  probes returned {d['probes_returned']}/{d['probes']}"
        + trip_gate,
        f"  + playout queue   {_ms(d['playout_queue_ms'], ('p50', 'max'))}",
        f"  = audible         {_ms(d['audible_latency_ms'], ('p50', 'p95', 'p99', 'max'))}"
        + audible_gate,
    ]
    if d["lost_ms_per_call"] is not None:
        lines.append(f"  lost              {d['lost_ms_per_call']:.1f} ms/call "
                     f"(worst call {d['lost_ms_max']:.1f} ms)")
    jitter = "-" if d["jitter_ms"] is None else f"{d['jitter_ms']:.2f} ms"
    lines.append(f"  jitter            {jitter}   underruns {d['underruns']} "
                 f"({d['underrun_ms']:.1f} ms)")
    if d["clear_to_silence_ms"]["count"]:
        lines.append(f"  clear→silence     {_ms(d['clear_to_silence_ms'], ('p50', 'max'))}")
    if d["marks_received"]:
        lines.append(f"  marks             received {d['marks_received']} "
                     f"acknowledged {d['marks_acknowledged']}")
    lines.append(f"  protocol errors   {d['protocol_errors']}")
    for call in report.calls:
        if call.protocol_error_samples:
            lines.append(f"    e.g. call {call.index}: {call.protocol_error_samples[0]}")
            break
    failures = [c for c in report.calls if c.failure]
    if failures:
        lines.append(f"    e.g. call {failures[0].index} failed: {failures[0].failure}")
    lag = d["send_lag_ms"]
    if lag["p50"] is not None:
        lines.append(f"  send lag (ours)   p50 {lag['p50']:.2f}  p99 {lag['p99']:.2f}  "
                     f"max {lag['max']:.2f} ms")
    violations = report.violations()
    if report.limits:
        lines.append("  verdict           " + ("FAIL: " + "; ".join(violations)
                                              if violations else "OK"))
    return "\n".join(lines)


def format_comparison(reports: list[RunReport]) -> str:
    """Side by side: each server's audible and round-trip latency, loss and jitter."""
    width = max(len(r.name) for r in reports)
    lines = [f"{'':{width}}  audible p50    p99 | round trip p50    p99 | lost ms/call | "
             f"jitter ms   (gate: {reports[0].gate})"]
    for r in reports:
        a, t = summarize(r.audible_ms), summarize(r.latencies_ms)

        def f(v: float | int | None) -> str:
            return "     -" if v is None else f"{v:6.1f}"

        lost, jitter = r.lost_ms_per_call, r.jitter_ms
        lines.append(f"{r.name:{width}}         {f(a['p50'])} {f(a['p99'])} |"
                     f"            {f(t['p50'])} {f(t['p99'])} |"
                     f"       {f(lost)} |    {f(jitter)}")
    return "\n".join(lines)
