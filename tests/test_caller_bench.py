"""The benchmark harness: a pinned server process, CPU from /proc, the bare echo floor."""

from __future__ import annotations

import asyncio
import io
import os
import time

import pytest
from _util_caller import scaled

from bench.bench_latency import STACKS
from bench.harness import (
    LevelResult,
    ServerProcess,
    fmt,
    level_table,
    median_levels,
    print_table,
    process_tree_cpu,
)
from mediastream.caller import run_calls


def test_process_tree_cpu_counts_threads_and_children() -> None:
    before = process_tree_cpu(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert process_tree_cpu(os.getpid()) - before >= 0.15


@pytest.mark.asyncio
async def test_bare_echo_floor_speaks_all_three_dialects() -> None:
    core = sorted(os.sched_getaffinity(0))[-1]
    server = ServerProcess("bare", STACKS["bare"], core=core)
    await asyncio.to_thread(server.start)
    try:
        assert server.proc is not None
        assert os.sched_getaffinity(server.proc.pid) == {core}
        reports = await asyncio.wait_for(asyncio.gather(*(
            run_calls(server.url(f"/ws/{p}"), provider=p, seconds=1.0)  # type: ignore[arg-type]
            for p in ("twilio", "telnyx", "plivo"))), scaled(15))
        assert server.cpu_seconds() > 0
    finally:
        await asyncio.to_thread(server.stop)
    for report in reports:
        call = report.calls[0]
        assert call.probes_returned == call.probes > 0 and call.lost_ms == 0
        assert call.protocol_errors == 0, call.protocol_error_samples


def test_median_of_repetitions_and_table() -> None:
    reps = [LevelResult("x", 10, p50=1.0, lost_max=0.0, failures=0),
            LevelResult("x", 10, p50=3.0, lost_max=20.0, failures=1),
            LevelResult("x", 10, p50=2.0, lost_max=0.0, failures=0)]
    m = median_levels(reps)
    assert m.p50 == 2.0 and m.lost_max == 20.0 and m.failures == 1
    out = io.StringIO()
    print_table(["calls", "p50"], [["10", "2.0"], ["200", "12.5"]], out)
    assert out.getvalue().splitlines() == ["calls   p50", "-----  ----", "   10   2.0",
                                           "  200  12.5"]


def test_level_table_puts_stacks_side_by_side() -> None:
    by_stack = {"a": [LevelResult("a", 1, p50=1.0), LevelResult("a", 10, p50=2.5)],
                "b": [LevelResult("b", 1, p50=0.5, failures=2)]}
    headers, rows = level_table(by_stack, [("p50", lambda r: fmt(r.p50, 0)),
                                           ("failed", lambda r: str(r.failures))])
    assert headers == ["calls", "a p50", "failed", "b p50", "failed"]
    assert rows == [["1", "1.0", "0", "0.5", "2"], ["10", "2.5", "0", "-", "-"]]
