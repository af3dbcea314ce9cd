"""Run many simulated calls from one event loop: the library entry point.

``await run_calls(url, provider="twilio", calls=200, seconds=10, ramp=5)`` starts the calls
spread over ``ramp`` seconds, drives them all from one shared 20 ms ticker, and returns a
:class:`~mediastream.caller.report.RunReport`. ``url`` is either the stream's ``ws(s)://``
URL (connect directly) or the ``http(s)://`` incoming-call webhook (fetch the answer
document first, as the provider does).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TextIO

import numpy as np

from mediastream.protocols.events import Encoding, ProviderName

from .audio import ProbeConfig, read_wav
from .dialects import PROVIDERS
from .faults import Fault, FaultPlan, parse_fault
from .report import CallReport, RunReport
from .simcall import CallSettings, PlanCache, SimulatedCall, default_formats
from .ticker import Ticker

__all__ = ["Progress", "parse_dtmf", "run_calls"]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def parse_dtmf(spec: str) -> tuple[tuple[str, float], ...]:
    """``"1@0.5,#@1.2"`` → ``(("1", 0.5), ("#", 1.2))``: digits and when to press them."""
    out: list[tuple[str, float]] = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        digit, sep, at = item.partition("@")
        if not sep or len(digit) != 1 or digit.upper() not in "0123456789*#ABCD":
            raise ValueError(f"bad DTMF {item!r}: expected DIGIT@SECONDS, e.g. 5@1.5")
        out.append((digit.upper(), float(at)))
    return tuple(out)


async def run_calls(
    url: str,
    *,
    provider: ProviderName,
    calls: int = 1,
    seconds: float = 5.0,
    ramp: float = 0.0,
    wav: str | Path | None = None,
    wav_at: float = 0.0,
    codec: Encoding = "pcmu",
    rate: int = 8000,
    params: Mapping[str, str] | None = None,
    faults: Iterable[Fault | str] = (),
    dtmf: Iterable[tuple[str, float]] | str = (),
    probe: ProbeConfig | None = None,
    record_dir: str | Path | None = None,
    secret: str | None = None,
    limits: Mapping[str, float] | None = None,
    progress: Progress | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = 10.0,
    halfopen_wait: float = 15.0,
    seed: int | None = None,
    tracks: str = "inbound",
) -> RunReport:
    """Place ``calls`` simulated calls to ``url`` and measure them.

    ``secret`` signs webhooks/upgrades (Twilio/Plivo auth token, Telnyx base64 Ed25519
    seed). ``limits`` may hold ``max_p99_ms``/``max_lost_ms`` for
    :meth:`RunReport.violations`. ``progress`` receives a status line about once a second.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
    if tracks not in ("inbound", "both"):
        raise ValueError(f"tracks must be 'inbound' or 'both', not {tracks!r}")
    if calls < 1 or seconds <= 0 or ramp < 0:
        raise ValueError("calls must be >= 1, seconds > 0, ramp >= 0")
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("ws", "wss", "http", "https"):
        raise ValueError(f"{url!r}: expected a ws(s):// stream URL or an http(s):// webhook")
    default_formats(provider, codec, rate)  # validate early: a clear error, not N failures
    if scheme in ("ws", "wss"):
        from websockets.exceptions import InvalidURI
        from websockets.uri import parse_uri

        try:
            parse_uri(url)
        except InvalidURI as exc:
            raise ValueError(str(exc)) from None
    webhook = url if scheme in ("http", "https") else None
    record = Path(record_dir) if record_dir is not None else None
    if record is not None:
        record.mkdir(parents=True, exist_ok=True)
    fault_list = [f if isinstance(f, Fault) else parse_fault(f) for f in faults]
    settings = CallSettings(
        provider=provider,
        url=None if webhook else url,
        webhook=webhook,
        seconds=seconds,
        codec=codec,
        rate=rate,
        params=dict(params or {}),
        faults=FaultPlan.of(fault_list),
        dtmf=parse_dtmf(dtmf) if isinstance(dtmf, str) else tuple(dtmf),
        probe=probe or ProbeConfig(),
        wav=read_wav(wav) if wav is not None else None,
        wav_at=wav_at,
        secret=secret,
        record_dir=record,
        connect_timeout=connect_timeout,
        halfopen_wait=halfopen_wait,
        ssl_context=ssl_context,
        seed=seed,
        tracks=tracks,
    )
    plans = PlanCache(settings)
    # Build the plan for the default format now: bad probe/WAV settings fail here, once.
    plans.get(default_formats(provider, codec, rate)[0])

    ticker = Ticker()
    ticker.start()
    http = None
    if webhook:
        import aiohttp

        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, ssl=ssl_context or True)
        )
    run_start = time.monotonic()
    sims = [
        SimulatedCall(i, settings, ticker, plans, http=http, run_start=run_start)
        for i in range(calls)
    ]
    reporter = (
        asyncio.get_running_loop().create_task(_report_progress(sims, ticker, progress, run_start))
        if progress is not None
        else None
    )
    try:
        tasks = [
            asyncio.create_task(_start_later(sim, ramp * i / calls), name=f"call-{i}")
            for i, sim in enumerate(sims)
        ]
        await asyncio.gather(*tasks)
        reports = [sim.finish() for sim in sims]
    finally:
        if reporter is not None:
            reporter.cancel()
        await ticker.stop()
        if http is not None:
            await http.close()
    return RunReport(
        url=url,
        provider=provider,
        seconds=seconds,
        calls=list(reports),
        wall_s=time.monotonic() - run_start,
        faults=[str(f) for f in fault_list],
        limits=dict(limits or {}),
    )


async def _start_later(sim: SimulatedCall, delay: float) -> CallReport:
    if delay > 0:
        await asyncio.sleep(delay)
    return await sim.run(analyze=False)


async def _report_progress(
    sims: list[SimulatedCall], ticker: Ticker, progress: Progress, run_start: float
) -> None:
    last_frames = 0
    while True:
        await asyncio.sleep(1.0)
        done = sum(1 for s in sims if s.report.end != "failed" or s.report.handshake_failed)
        failed = sum(1 for s in sims if s.report.handshake_failed)
        frames = sum(s.frames_received for s in sims)
        lags = [s.lags[max(0, s.j - 50) : s.j] for s in sims if s.j]
        lag = np.concatenate(lags) * 1000 if lags else np.zeros(0)
        progress(
            f"[{time.monotonic() - run_start:6.1f}s] active {len(ticker):4d}  "
            f"ended {done - failed:4d}  failed {failed:3d}  "
            f"rx {frames - last_frames:6d} msg/s  "
            f"send lag p99 {float(np.percentile(lag, 99)) if lag.size else 0.0:6.2f} ms"
        )
        last_frames = frames


def stderr_progress(stream: TextIO | None = None) -> Progress:
    """A progress callback that writes lines to stderr."""
    out = stream or sys.stderr

    def write(line: str) -> None:
        print(line, file=out, flush=True)

    return write
