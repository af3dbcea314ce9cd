"""A short soak in ``make test``: hundreds of calls on one server process leave nothing.

``python -m bench soak`` (``make soak``) runs 10,000 calls one after another and 10,000
more 200 at a time; this runs the same phases with 400 calls, 50 at a time, and the same
verdict: asyncio tasks and file descriptors back to their idle baseline, no media
connection left, no WARNING/ERROR in the server's log, no call failed or lost a frame,
and RSS growth after the warm-up within a generous bound (a short run measures the
allocator's noise more than any trend). No timing is asserted.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest
from _util_reliability import scaled, settled
from _util_server import running_server

from bench.bench_soak import SoakSettings, lean_call, soak, table
from mediastream.caller import ProbeConfig
from mediastream.echo import echo_bot
from mediastream.server.connection import MediaConnection
from mediastream.server.live import LiveCall
from mediastream.session import CallSession


@pytest.mark.asyncio
async def test_a_short_soak_leaves_nothing_behind(tmp_path: Path) -> None:
    settings = SoakSettings(
        warmup=100, sequential=150, concurrent=150, batch=50, max_rss_growth_mb=40.0,
        call_seconds=(0.4, 0.6),
        probe=ProbeConfig(tone_ms=60, period_ms=200, lead_ms=40, tail_ms=300),
    )
    phases, baseline, verdict = await asyncio.wait_for(soak(settings, tmp_path), scaled(120))
    assert verdict == [], "\n" + table(phases, baseline)
    assert [p.calls for p in phases] == [0, 100, 150, 150]
    final = phases[-1].state
    assert final["tasks"] == baseline["tasks"] and final["fds"] == baseline["fds"]


_CALL_OBJECTS = (MediaConnection, LiveCall, CallSession)


@pytest.mark.asyncio
async def test_no_call_object_outlives_its_call() -> None:
    # The housekeeping tick once kept the last connection it looked at (with its
    # session, resamplers and socket) alive in a loop variable while the server idled.
    # Only objects made during this test count: earlier tests in the same process may
    # keep theirs on purpose (a bot that ignores cancellation is abandoned, by design).
    gc.collect()
    before = {id(o) for o in gc.get_objects() if isinstance(o, _CALL_OBJECTS)}
    async with running_server(echo_bot, idle_media_timeout=0.2) as server:
        base = f"ws://127.0.0.1:{server.port}/ws"
        for provider in ("twilio", "telnyx", "plivo"):
            result = await lean_call(base, provider, frames=12, pace=0.02)
            assert result.ok, result.detail
        await settled(server)
        await asyncio.sleep(0.2)  # a few ticks of the idle server
        gc.collect()
        alive = [o for o in gc.get_objects()
                 if isinstance(o, _CALL_OBJECTS) and id(o) not in before]
    assert alive == []
