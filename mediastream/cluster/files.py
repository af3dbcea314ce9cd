"""``--workers N`` without Redis: the workers share one private directory.

The supervisor creates it (``mkdtemp``: mode 0700, removed at exit) and passes it as
``Config.workers_state_dir``; each worker is identified by its pid::

    tokens/<nonce>              one file per spent stream token (content: its expiry)
    calls/<pid>/<key>.json      one JSON row per live call held by worker <pid>
    sockets/<pid>.sock          worker <pid>'s command socket (HTTP over a Unix socket)

Why files rather than the parent process: single use needs one atomic step, and
``open(O_CREAT|O_EXCL)`` is exactly that -- the kernel guarantees one creator per name,
across processes, with no lock, no round trip through the parent and nothing new in the
supervisor (which stays a plain process babysitter and keeps no state a restart would
lose). A worker that dies holds no lock and leaves no half-written row (rows are
written to a temporary name and renamed); the supervisor removes its ``calls/<pid>``
and socket when it reaps it. The files live on the machine's temp directory (tmpfs on
most systems): each operation is one small local syscall, cheap enough to run on the
event loop at a call's start and end.

Commands reach the worker holding a call over its Unix socket: the socket's directory
is private to the user, so only this server's processes can connect, and the request is
the same HTTP the public API takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from .base import CallDirectory, CallRow, CommandResult, Executor, RowSource

__all__ = ["WorkerDirectory", "forget_worker"]

logger = logging.getLogger(__name__)

#: Spent-token files are swept for expired ones after this many claims.
_SWEEP_EVERY = 1000
#: How often a worker rewrites its calls' rows.
_REFRESH_S = 2.0


def _key(call_id: str) -> str:
    """A file name for any call id (ids are the provider's, any text)."""
    return hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def forget_worker(state_dir: str, pid: int) -> None:
    """Remove a dead worker's calls and socket (the supervisor, when it reaps it)."""
    root = Path(state_dir)
    calls = root / "calls" / str(pid)
    if calls.is_dir():
        for path in calls.iterdir():
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            calls.rmdir()
    with contextlib.suppress(OSError):
        (root / "sockets" / f"{pid}.sock").unlink()


class WorkerDirectory(CallDirectory):
    """The workers' shared directory (see the module docstring)."""

    def __init__(self, state_dir: str, *, command_timeout: float = 10.0) -> None:
        self._root = Path(state_dir)
        self._pid = os.getpid()
        self.instance = f"{os.uname().nodename}:{self._pid}"
        self._tokens = self._root / "tokens"
        self._calls = self._root / "calls"
        self._mine = self._calls / str(self._pid)
        self._sockets = self._root / "sockets"
        self._timeout = command_timeout
        self._claims = 0
        self._runner: web.AppRunner | None = None
        self._executor: Executor | None = None
        self._rows: RowSource = list
        self._refresh: asyncio.Task[None] | None = None

    def _socket_of(self, pid: str) -> Path:
        return self._sockets / f"{pid}.sock"

    async def start(self, executor: Executor, rows: RowSource) -> None:
        self._executor = executor
        self._rows = rows
        for path in (self._tokens, self._mine, self._sockets):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        app = web.Application()
        app.router.add_post("/command", self._serve)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        path = self._socket_of(str(self._pid))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a previous worker with our pid (pids are reused)
        await web.UnixSite(self._runner, str(path)).start()
        self._refresh = asyncio.create_task(self._refresh_rows(), name="mediastream-rows")

    async def _refresh_rows(self) -> None:
        """Rewrite this worker's rows every few seconds: the other workers then list its
        calls with current figures (levels, counters), as Redis heartbeats do."""
        while True:
            await asyncio.sleep(_REFRESH_S)
            for row in self._rows():
                self.call_started(row)

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        forget_worker(str(self._root), self._pid)

    async def _serve(self, request: web.Request) -> web.Response:
        assert self._executor is not None
        try:
            request_json = await request.json()
            call_id, action, body = (request_json[k] for k in ("call_id", "action", "body"))
        except (ValueError, KeyError, TypeError):
            return web.json_response({"status": 400, "body": {"error": "bad command"}})
        result = await self._executor(str(call_id), str(action), body)
        return web.json_response(result.to_json())

    # ------------------------------------------------------------------ tokens

    async def claim_token(self, nonce: str, expires_at: float) -> bool:
        if not nonce.isalnum():  # our nonces are hex; anything else is no file name
            return False
        self._claims += 1
        if self._claims % _SWEEP_EVERY == 0:
            self._sweep(time.time())
        try:
            fd = os.open(self._tokens / nonce, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return False
        try:
            os.write(fd, f"{expires_at:.0f}".encode("ascii"))
        finally:
            os.close(fd)
        return True

    def _sweep(self, now: float) -> None:
        """Forget spent tokens past their expiry (they would be refused as expired)."""
        for path in self._tokens.iterdir():
            try:
                if float(path.read_text() or 0) < now:
                    path.unlink()
            except (OSError, ValueError):
                continue

    # ------------------------------------------------------------------ registry

    def call_started(self, row: CallRow) -> None:
        path = self._mine / (_key(str(row["call_id"])) + ".json")
        temporary = path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(row), encoding="utf-8")
            os.replace(temporary, path)
        except OSError:
            logger.warning("cannot record call %s in %s", row.get("call_id"), self._mine,
                           exc_info=True)

    def call_ended(self, call_id: str) -> None:
        with contextlib.suppress(OSError):
            (self._mine / (_key(call_id) + ".json")).unlink()

    async def calls(self) -> list[CallRow]:
        rows: list[CallRow] = []
        for path in self._calls.glob("*/*.json"):
            try:
                rows.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue  # ended (or being replaced) while we looked
        return rows

    # ------------------------------------------------------------------ commands

    async def forward(self, call_id: str, action: str, body: dict[str, Any]) -> CommandResult:
        name = _key(call_id) + ".json"
        holders = [p.parent.name for p in self._calls.glob(f"*/{name}")]
        if not holders:
            return CommandResult(404, {"error": f"no live call {call_id}"})
        holder = holders[0]
        if holder == str(self._pid):
            assert self._executor is not None
            return await self._executor(call_id, action, body)
        connector = aiohttp.UnixConnector(path=str(self._socket_of(holder)))
        try:
            async with aiohttp.ClientSession(connector=connector) as session:
                async with asyncio.timeout(self._timeout):
                    command = {"call_id": call_id, "action": action, "body": body}
                    response = await session.post("http://worker/command", json=command)
                    return CommandResult.from_json(await response.json())
        except TimeoutError:
            return CommandResult(504, {"error": f"worker {holder} did not answer in time"})
        except (aiohttp.ClientError, OSError, ValueError):
            # The worker died between our look and the request: its calls went with it.
            return CommandResult(404, {"error": f"no live call {call_id}"})
