"""Helpers for the reliability tests (hostile input, faults, soak).

* :func:`settled` -- wait until a server has no handler, connection, call or pending head
  left, and say what is left if it does not get there (a leak).
* :func:`mediastream_errors` -- ERROR records a test run logged (peer misbehaviour is a
  warning at most; an error or traceback means a bug of ours).
* :class:`ServeProcess` -- ``mediastream serve`` as an operator runs it: its own process,
  its log read continuously, real signals.
* :func:`call_ends` -- the ``call ended`` lines of a server log, by call id (frames in and
  out per call), to compare with what the simulated caller received.
* :func:`rss_kb`, :func:`open_fds` -- read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

from _util_timing import scaled as scaled  # re-exported for the tests

from mediastream.server import MediaStreamServer

ROOT = Path(__file__).resolve().parent.parent


async def settled(server: MediaStreamServer, timeout: float = 5.0) -> None:
    """Wait until every media connection's task returned, every socket is closed and
    every registry is empty again."""
    async with asyncio.timeout(scaled(timeout)):
        while server._tasks:
            await asyncio.wait(set(server._tasks))
        listener = server._listener
        while server.media_connections or (
            listener is not None and (listener.pending_heads or listener.media_sockets)
        ):
            await asyncio.sleep(0.01)
    assert server.media_connections == 0
    assert server.active_calls == 0
    assert server._listener is None or not server._listener.pending_heads


def mediastream_errors(records: Iterable[logging.LogRecord]) -> list[str]:
    """ERROR (and worse) records, and any record carrying a traceback."""
    return [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in records
        if r.levelno >= logging.ERROR or r.exc_info
    ]


def rss_kb(pid: int | str = "self") -> int:
    """Resident set size in kB (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds(pid: int | str = "self") -> int:
    """Open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


_CALL_ENDED = re.compile(
    r"\[call (?P<call>[^\]]+)\] call ended: (?P<outcome>\S+) \(close (?P<code>\S+) .*"
    r"frames in (?P<fin>\d+) out (?P<fout>\d+)"
)


@dataclass(frozen=True)
class CallEnd:
    """One ``call ended`` log line: how the call ended and the frames it moved."""

    outcome: str
    code: str
    frames_in: int
    frames_out: int


def call_ends(lines: Iterable[str]) -> dict[str, CallEnd]:
    """The ``call ended`` lines of a server log, by call id."""
    out: dict[str, CallEnd] = {}
    for line in lines:
        m = _CALL_ENDED.search(line)
        if m:
            out[m["call"]] = CallEnd(m["outcome"], m["code"], int(m["fin"]), int(m["fout"]))
    return out


class ServeProcess:
    """``python -m mediastream serve ARGS`` with its stderr read as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.port = 0
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def run(
        cls, *argv: str, env: dict[str, str] | None = None
    ) -> AsyncIterator[ServeProcess]:
        """Start it, wait for ``listening on``; kill it on the way out if still running."""
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("MEDIASTREAM_", "TWILIO_", "TELNYX_", "PLIVO_",
                                     "PROMETHEUS_"))}
        base["PYTHONPATH"] = str(ROOT)
        base.update(env or {})
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mediastream", "serve", "--host", "127.0.0.1", "--port", "0",
            *argv, cwd=ROOT, env=base, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        serve = cls(process)
        try:
            match = await serve.wait_for(r"listening on 127\.0\.0\.1:(\d+)")
            serve.port = int(match.group(1))
            yield serve
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            serve._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serve._reader

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.lines.append(line.decode(errors="replace"))
            self._changed.set()
        self._changed.set()

    async def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first log line matching ``pattern`` (waiting for it)."""
        regex = re.compile(pattern)
        async with asyncio.timeout(scaled(timeout)):
            while True:
                for line in self.lines:
                    if m := regex.search(line):
                        return m
                assert not self._reader.done(), "server exited:\n" + self.text
                self._changed.clear()
                await self._changed.wait()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Send a signal (SIGTERM: graceful shutdown)."""
        self.process.send_signal(signum)

    async def exit_code(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit and its log to be read to the end."""
        async with asyncio.timeout(scaled(timeout)):
            code = await self.process.wait()
            await self._reader
        return code

    @property
    def text(self) -> str:
        return "".join(self.lines)
