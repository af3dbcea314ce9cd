"""Shared load-and-measure helpers for the benchmarks.

* :class:`ServerProcess` -- a server in its own process, pinned to one core
  (``os.sched_setaffinity`` in the child before exec), with its CPU time read from
  ``/proc/<pid>/stat`` (utime + stime of every thread, summed over the process tree so
  ``--workers`` children count; psutil is not needed).
* :func:`pin_cores` -- pick a server core and a load-generator core and pin this process
  to the latter, so the generator never steals the server's CPU.
* :func:`run_level` -- one level of simulated calls (:func:`mediastream.caller.run_calls`)
  with the server's CPU sampled over the steady part only (after the ramp, before the
  first hang-ups), as a fraction of one core.
* :func:`median_levels`, :func:`level_table`, :func:`print_table`, :func:`fmt` --
  repetitions and tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "LOST_FRAME_MS",
    "ROOT",
    "LevelResult",
    "ServerProcess",
    "fmt",
    "free_port",
    "level_table",
    "log",
    "median_levels",
    "pin_cores",
    "print_table",
    "process_tree_cpu",
    "run_level",
]

#: A probe call has lost audio when this much of its tone (ms) did not come back: a lost
#: 20 ms frame inside a tone costs at least this. Less is no lost frame: under CPU
#: starvation the outbound encoder flushes (pads) mid-tone after 100 ms without bot
#: audio, and the resampler's restart leaves a few samples under the detection threshold.
#: bench_soak and bench_hostile (and their tests) judge good calls by this one rule.
LOST_FRAME_MS = 10.0

ROOT = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(line: str) -> None:
    """Progress for a person watching: stderr, so stdout stays the result."""
    print(line, file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ CPU from /proc


def _stat_cpu(pid: int) -> float:
    # Field 2 (comm) may hold spaces and parentheses: split after the last ")".
    rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / _CLK_TCK  # utime, stime (fields 14, 15)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            kids.extend(int(k) for k in text.split())
    except OSError:
        pass
    return kids


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of ``pid`` and its live descendants."""
    total = 0.0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            total += _stat_cpu(p)
        except (OSError, IndexError, ValueError):
            continue
        stack.extend(_children(p))
    return total


# ------------------------------------------------------------------ processes


def pin_cores(server_core: int | None = None, client_core: int | None = None
              ) -> tuple[int | None, int | None]:
    """Choose distinct cores for the server and the load generator, and pin this process
    (the generator) to its core. Returns ``(server_core, client_core)``; ``None`` where
    pinning is impossible (one core, or the core is not ours)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        log("note: one core only: server and load generator share it")
        return None, None
    server = server_core if server_core in cores else cores[-1]
    client = client_core if client_core in cores and client_core != server else next(
        c for c in cores if c != server)
    os.sched_setaffinity(0, {client})
    return server, client


class ServerProcess:
    """A server command in its own process, pinned to ``core``; use as a context manager.

    ``argv`` follows ``python``; ``{port}`` in it is replaced by a free port. Provider
    credentials and ``MEDIASTREAM_*`` settings are removed from its environment so a
    developer's shell cannot change what is measured.
    """

    def __init__(self, name: str, argv: Sequence[str], *, core: int | None = None,
                 env: Mapping[str, str] | None = None, root: Path | None = None) -> None:
        self.name = name
        #: The source tree the command runs from (another checkout: an earlier commit).
        self.root = ROOT if root is None else root
        self.port = free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.core = core
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("MEDIASTREAM_", "TWILIO_", "TELNYX_", "PLIVO_"))}
        clean["PYTHONPATH"] = str(self.root) + os.pathsep + clean.get("PYTHONPATH", "")
        clean.update(env or {})
        self._env = clean
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 30.0) -> ServerProcess:
        """Start the process and wait until its port accepts connections."""
        core = self.core
        self.proc = subprocess.Popen(
            [sys.executable, *self.argv], cwd=self.root, env=self._env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=(lambda: os.sched_setaffinity(0, {core})) if core is not None else None,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"{self.name} exited at start: {err[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen within {ready_timeout:.0f} s")

    def url(self, path: str, scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server (its whole process tree)."""
        assert self.proc is not None
        return process_tree_cpu(self.proc.pid)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (graceful), then SIGKILL after ``timeout``."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------ one load level


@dataclass
class LevelResult:
    """The figures of one level (one run of N calls against one server)."""

    stack: str
    calls: int
    p50: float | None = None
    p99: float | None = None
    audible_p50: float | None = None
    audible_p99: float | None = None
    lost: float | None = None
    lost_max: float | None = None
    jitter: float | None = None
    underruns: int = 0
    cpu: float | None = None  # fraction of one core, steady state
    gen_cpu: float | None = None  # the load generator's own CPU, same window
    lag_p99: float | None = None
    lag_max: float | None = None
    failures: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


async def run_level(server: ServerProcess, url: str, *, calls: int, seconds: float,
                    ramp: float, provider: str = "twilio", **kwargs: Any) -> LevelResult:
    """Run ``calls`` simulated calls against ``url`` and sample the server's CPU over the
    steady part of the run (everyone connected, nobody hung up yet)."""
    # The generator must not pause: a full collection scanning everything this process
    # has kept (earlier levels' reports) stalls every simulated call, and a stall is
    # heard as latency for the rest of each call. What exists now leaves the collector's
    # view for the run (gen_quiet); only what the run allocates is scanned.
    with gen_quiet():
        return await _run_level(server, url, calls=calls, seconds=seconds, ramp=ramp,
                                provider=provider, **kwargs)


_END_MARGIN_S = 0.25  # the CPU window closes this long before the first call ends
_MIN_WINDOW_S = 1.0  # shorter steady states give no CPU figure


@contextlib.contextmanager
def gen_quiet() -> Iterator[None]:
    """Collect, then ``gc.freeze()`` for the duration; unfreeze and collect after."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.collect()


async def _run_level(server: ServerProcess, url: str, *, calls: int, seconds: float,
                     ramp: float, provider: str, **kwargs: Any) -> LevelResult:
    from mediastream.caller import run_calls

    task = asyncio.create_task(run_calls(url, provider=provider,  # type: ignore[arg-type]
                                         calls=calls, seconds=seconds, ramp=ramp, **kwargs))
    # CPU over the steady state only: every call connected (the ramp plus half a second)
    # and none ended yet (the first call ends ``seconds`` after it started). Call set-up
    # and tear-down cost differs between stacks; counting a varying share of them would
    # make the figure depend on --seconds and --ramp.
    settle = ramp + 0.5
    window = seconds - _END_MARGIN_S - settle
    cpu = gen_cpu = None
    if window >= _MIN_WINDOW_S:
        await asyncio.sleep(settle)
        c0, g0, t0 = server.cpu_seconds(), time.process_time(), time.monotonic()
        await asyncio.sleep(window)
        c1, g1, t1 = server.cpu_seconds(), time.process_time(), time.monotonic()
        if not task.done():
            cpu = (c1 - c0) / (t1 - t0)
            gen_cpu = (g1 - g0) / (t1 - t0)
    report = await task
    d = report.to_dict()
    failures = d["handshake_failures"] + sum(
        n for end, n in d["ends"].items() if end not in ("completed", "failed"))
    return LevelResult(
        stack=server.name, calls=calls,
        p50=d["latency_ms"]["p50"], p99=d["latency_ms"]["p99"],
        audible_p50=d["audible_latency_ms"]["p50"], audible_p99=d["audible_latency_ms"]["p99"],
        lost=d["lost_ms_per_call"], lost_max=d["lost_ms_max"], jitter=d["jitter_ms"],
        underruns=d["underruns"], cpu=cpu, gen_cpu=gen_cpu,
        lag_p99=d["send_lag_ms"]["p99"], lag_max=d["send_lag_ms"]["max"],
        failures=failures,
        extra={"probes": d["probes"], "probes_returned": d["probes_returned"],
               "protocol_errors": d["protocol_errors"],
               "clear_to_silence_p50": d["clear_to_silence_ms"]["p50"],
               "clear_to_silence_max": d["clear_to_silence_ms"]["max"],
               "clears": d["clear_to_silence_ms"]["count"]},
    )


def median_levels(results: Sequence[LevelResult]) -> LevelResult:
    """Field-wise median of repetitions (worst case for failures, loss and lag)."""
    first = results[0]
    out = replace(first, extra=dict(first.extra))
    worst = {"failures", "lost_max", "lag_max", "underruns"}
    for f in fields(LevelResult):
        if f.name in ("stack", "calls", "extra"):
            continue
        values = [getattr(r, f.name) for r in results if getattr(r, f.name) is not None]
        if not values:
            continue
        setattr(out, f.name, max(values) if f.name in worst else statistics.median(values))
    out.extra["reps"] = len(results)
    return out


# ------------------------------------------------------------------ tables


def fmt(value: float | None, width: int = 6, digits: int = 1) -> str:
    """``value`` right-aligned, or ``-`` when there is none."""
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]],
                out: TextIO | None = None) -> None:
    """A plain aligned table (columns sized to their widest cell)."""
    stream = out or sys.stdout
    table = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for n, row in enumerate(table):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)), file=stream)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=stream)


#: A table column: its header and the cell it shows for one result.
Column = tuple[str, Callable[[LevelResult], str]]


def level_table(by_stack: Mapping[str, Sequence[LevelResult]], columns: Sequence[Column]
                ) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of a side-by-side table: a row per level, ``columns`` per stack.

    The stack's name heads its first column; ``-`` fills the cells of a level a stack
    did not run.
    """
    headers = ["calls"]
    for name in by_stack:
        headers += [f"{name} {columns[0][0]}", *(header for header, _ in columns[1:])]
    rows = []
    for calls in sorted({r.calls for results in by_stack.values() for r in results}):
        row = [str(calls)]
        for results in by_stack.values():
            r = next((x for x in results if x.calls == calls), None)
            row += ["-"] * len(columns) if r is None else [cell(r) for _, cell in columns]
        rows.append(row)
    return headers, rows
