"""Network faults injected by the simulator reach the server as the fault says."""

from __future__ import annotations

import asyncio
import statistics

import numpy as np
import pytest
from _util_caller import Connection, EchoServer, scaled

from mediastream.caller import run_calls


def _sequence(conn: Connection) -> list[int]:
    return [int(m["sequenceNumber"]) for m in conn.events("media")]


@pytest.mark.asyncio
async def test_faults_reach_the_server() -> None:
    async with EchoServer(0.0) as srv:
        url = srv.url("twilio")
        closed, reordered, jittered, stalled = await asyncio.wait_for(asyncio.gather(
            run_calls(url, provider="twilio", seconds=2.0, faults=["close@0.5"]),
            run_calls(url.replace("twilio", "telnyx"), provider="telnyx", seconds=1.5,
                      faults=["reorder:0.3"], seed=3),
            run_calls(url, provider="twilio", seconds=1.5, faults=["jitter:30"], seed=1),
            run_calls(url.replace("twilio", "plivo"), provider="plivo", seconds=2.0,
                      faults=["stall:300@0.5"]),
        ), scaled(15))
        conns = srv.connections
    assert len(conns) == 4 and all(c.started.is_set() for c in conns)

    # close@0.5: the TCP connection is cut after 25 frames, without stop or close frame.
    call = closed.calls[0]
    assert call.end == "aborted" and call.frames_sent == 25
    aborted = next(c for c in conns if c.provider == "twilio" and len(c.events("media")) == 25)
    assert aborted.events("stop") == [] and aborted.close_code is None
    assert closed.to_dict()["ends"] == {"aborted": 1}

    # reorder: every frame arrives, some out of order (Telnyx's sequence_number shows it).
    telnyx = next(c for c in conns if c.provider == "telnyx")
    seq = [int(m["sequence_number"]) for m in telnyx.events("media")]
    assert sorted(seq) == list(range(2, 77))
    assert seq != sorted(seq)
    assert reordered.calls[0].lost_ms == 0  # late, not lost

    # jitter:30: order kept, arrival spacing spread, round trip up by ~15 ms on average.
    twilio = [c for c in conns if c.provider == "twilio" and c is not aborted]
    (jit,) = twilio
    assert _sequence(jit) == list(range(2, 77))
    gaps = np.diff(jit.media_arrivals) * 1000
    assert float(np.std(gaps)) > 5
    assert 3 < statistics.median(jittered.calls[0].latencies_ms) < 30

    # stall:300@0.5: nothing for ~300 ms, then the backlog in one burst; nothing lost.
    plivo = next(c for c in conns if c.provider == "plivo")
    arrivals = np.array(plivo.media_arrivals)
    assert len(arrivals) == 100
    assert float(np.diff(arrivals).max()) >= 0.28
    assert _sequence(plivo) == list(range(2, 102))
    call = stalled.calls[0]
    assert call.lost_ms == 0 and call.end == "completed"
    # The probe sent during the stall (at 0.7 s) came back late.
    assert max(call.latencies_ms) > 50


@pytest.mark.asyncio
async def test_half_open_caller_is_noticed_only_by_a_server_that_watches() -> None:
    async def idle_watchdog(conn: Connection) -> None:
        # A server that closes a stream after 300 ms without media.
        while True:
            await asyncio.sleep(0.05)
            if conn.media_arrivals and conn.loop.time() - conn.media_arrivals[-1] > 0.3:
                assert conn.transport is not None
                conn.transport.close()
                return

    async with EchoServer(script=idle_watchdog) as srv:
        watched = await asyncio.wait_for(run_calls(
            srv.url("twilio"), provider="twilio", seconds=2.0, faults=["halfopen@0.4"],
            halfopen_wait=2.0), scaled(10))
    async with EchoServer() as srv:
        unwatched = await asyncio.wait_for(run_calls(
            srv.url("twilio"), provider="twilio", seconds=2.0, faults=["halfopen@0.4"],
            halfopen_wait=0.5), scaled(10))
    call = watched.calls[0]
    assert call.end == "half_open" and call.frames_sent == 20
    assert call.halfopen_detected_ms is not None
    # The watchdog's 300 ms count from the last frame, sent 20 ms before the caller froze.
    assert 250 <= call.halfopen_detected_ms <= 300 + scaled(150)
    call = unwatched.calls[0]
    assert call.end == "half_open" and call.halfopen_detected_ms is None
