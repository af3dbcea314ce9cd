"""This process's live calls, and the shared state that makes several processes one.

:class:`CallTable` is what the server keeps per process: call id -> the connection
holding it, and its row for ``GET /calls``. With a :class:`~mediastream.cluster.CallDirectory`
(``--workers`` without Redis: :class:`~mediastream.cluster.files.WorkerDirectory`; any
deployment with ``redis_url``: :class:`~mediastream.cluster.redis_directory.RedisDirectory`)
it also:

* announces each call at its start and withdraws it at its end (never waiting);
* spends each stream token in the shared state before the local check (:meth:`claim`),
  so a token used on one worker or instance is refused (1008) by every other;
* runs commands for its calls that arrive from other processes, and forwards commands
  for calls it does not hold.

A command is always tried here first: a call held by the process asked works even when
Redis is down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import Counter

from mediastream.cluster import CallDirectory, CallRow, ClusterUnavailable, CommandResult
from mediastream.config import Config
from mediastream.control.clients import ProviderClients
from mediastream.control.routes import plivo_transfer_url
from mediastream.errors import AuthenticationError
from mediastream.protocols.events import CallInfo

from . import control
from .calls import CallBook, LocalDirectory
from .calls import CallDirectory as ListingDirectory
from .commands import CommandTarget, run_command
from .metrics import ServerMetrics
from .start import Started

__all__ = ["CallTable", "ClusterListing", "directory_from_config"]

logger = logging.getLogger(__name__)


class _Holdable(Protocol):
    """The media socket, as far as a token claim goes (:class:`~.host.CallSocket`)."""

    def hold(self) -> None: ...


def directory_from_config(config: Config, on_error: Any = None) -> CallDirectory | None:
    """Redis when ``redis_url`` is set, the workers' directory under ``--workers``, else none."""
    if config.redis_url:
        from mediastream.cluster.redis_directory import RedisDirectory

        return RedisDirectory(
            config.redis_url, prefix=config.redis_prefix, registry_ttl=config.call_registry_ttl,
            command_timeout=config.command_timeout, fail_open=config.redis_fail_open,
            on_error=on_error)
    if config.workers_state_dir:
        from mediastream.cluster.files import WorkerDirectory

        return WorkerDirectory(config.workers_state_dir, command_timeout=config.command_timeout)
    return None


class CallTable:
    """The calls this process holds, and the shared state (see the module docstring)."""

    def __init__(self, config: Config, metrics: ServerMetrics, book: CallBook) -> None:
        self._config = config
        self._book = book
        #: call id -> its streams here, oldest first: one call may have two (a
        #: listen-only fork beside the talking stream); commands go to the newest.
        self._held: dict[str, list[CommandTarget]] = {}
        self._claims: set[asyncio.Task[None]] = set()
        self._clients: ProviderClients | None = None
        self.errors = Counter(
            "mediastream_cluster_errors",
            "Operations on the shared state (Redis) that failed, by operation.",
            ["operation"], registry=metrics.registry)
        self.tokens_refused = Counter(
            "mediastream_cluster_tokens_refused",
            "Stream tokens refused by the shared state: spent elsewhere, or unreachable.",
            ["reason"], registry=metrics.registry)
        self.directory = directory_from_config(config, self._count_error)
        self.instance = (self.directory.instance if self.directory is not None
                         else f"{socket.gethostname()}:{os.getpid()}")
        #: What ``GET /calls`` reads (``server.call_directory``): this process's book,
        #: merged with every other process's rows when there is shared state.
        self.listing: ListingDirectory = (
            ClusterListing(self) if self.directory is not None
            else LocalDirectory(book, instance=self.instance))

    def _count_error(self, operation: str) -> None:
        self.errors.labels(operation).inc()

    async def start(self, clients: ProviderClients | None) -> None:
        self._clients = clients
        if self.directory is not None:
            await self.directory.start(self.execute, self.rows)
            logger.info("shared state: %s as %s", type(self.directory).__name__,
                        self.directory.instance)

    async def stop(self) -> None:
        if self.directory is not None:
            await self.directory.stop()

    # ------------------------------------------------------------------ calls

    def add(self, target: CommandTarget) -> None:
        """A call started here (its ``info`` is set)."""
        info = target.info
        assert info is not None
        self._held.setdefault(info.call_id, []).append(target)
        if self.directory is not None:
            # The book's row exists once the call's parts do, later in this same step.
            asyncio.get_running_loop().call_soon(self._announce, target)

    def _announce(self, target: CommandTarget) -> None:
        call = target.live_call
        row = self._book.row_of(call) if call is not None and not target.done else None
        if row is not None and self.directory is not None:
            row["instance"] = self.instance
            self.directory.call_started(row)

    def remove(self, target: CommandTarget) -> None:
        """A call held here ended."""
        info = target.info
        streams = self._held.get(info.call_id) if info is not None else None
        if info is None or streams is None or target not in streams:
            return
        streams.remove(target)
        if streams:
            return  # another stream of the same call goes on
        del self._held[info.call_id]
        if self.directory is not None:
            self.directory.call_ended(info.call_id)

    def rows(self) -> list[CallRow]:
        """This process's live calls as the book lists them (the heartbeats' rows)."""
        live, _ended = self._book.rows()
        for row in live:
            row["instance"] = self.instance
        return live

    # ------------------------------------------------------------------ tokens

    def claim(
        self,
        started: Started,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        socket: _Holdable,
        go_live: Callable[[], None],
        fail: Callable[[Exception], None],
    ) -> bool:
        """Spend the stream's token in the shared state before the call goes live.

        False when there is nothing to wait for (one process, or no token verifies and
        the local check will say why). Else True: ``socket`` is held (nothing read) until
        the shared state answered, then ``go_live()`` -- or ``fail(AuthenticationError)``
        (1008) when the token was spent elsewhere or cannot be checked (fail closed).
        """
        if self.directory is None:
            return False
        info = started.start.call
        spend = control.token_to_claim(self._config, info, started.protocol, query=query,
                                       headers=headers)
        if spend is None:
            return False
        socket.hold()
        task = asyncio.get_running_loop().create_task(self._claim(info, *spend))
        self._claims.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._claims.discard(task)
            if task.cancelled():
                return
            try:
                task.result()
                go_live()
            except Exception as exc:
                fail(exc)

        task.add_done_callback(done)
        return True

    async def _claim(self, info: CallInfo, nonce: str, expiry: int) -> None:
        assert self.directory is not None
        try:
            won = await self.directory.claim_token(nonce, expiry)
        except ClusterUnavailable as exc:
            if self._config.redis_fail_open:
                logger.warning("[call %s] shared state unreachable: stream token accepted on "
                               "the local check alone (redis_fail_open)", info.call_id)
                return
            self.tokens_refused.labels("unreachable").inc()
            raise AuthenticationError(
                f"{info.provider} call {info.call_id}: stream token cannot be checked, the "
                f"shared state is unreachable (failing closed): {exc}") from exc
        if not won:
            self.tokens_refused.labels("spent").inc()
            raise AuthenticationError(
                f"{info.provider} call {info.call_id}: stream token already used "
                "(spent in the shared state)")

    # ------------------------------------------------------------------ commands

    async def execute(self, call_id: str, action: str, body: dict[str, Any]) -> CommandResult:
        """Run a command on a call held here (404 when it is not)."""
        streams = self._held.get(call_id)
        if not streams:
            return CommandResult(404, {"error": f"no live call {call_id}"})
        config = self._config
        return await run_command(
            streams[-1], action, body, config=config, clients=self._clients,
            plivo_transfer_url=lambda to: plivo_transfer_url(config, to))

    async def command(self, call_id: str, action: str, body: dict[str, Any]) -> CommandResult:
        """Run a command wherever the call is: here, else through the shared state
        (ClusterUnavailable when it is down)."""
        if call_id in self._held or self.directory is None:
            return await self.execute(call_id, action, body)
        return await self.directory.forward(call_id, action, body)


class ClusterListing:
    """``GET /calls`` for a deployment (a :class:`~.calls.CallDirectory`): this process's
    rows fresh from its book, the other processes' as their last heartbeat left them
    (every third of ``call_registry_ttl``), ``ended`` from this process only.

    Shared state unreachable: 503 (an aiohttp error, answered as it is), never a listing
    that silently leaves the other instances out.
    """

    def __init__(self, table: CallTable) -> None:
        self._table = table

    async def listing(self) -> CallRow:
        table = self._table
        live, ended = table._book.rows()
        for row in (*live, *ended):
            row["instance"] = table.instance
        instances = {table.instance}
        if table.directory is not None:
            try:
                shared = await table.directory.calls()
            except ClusterUnavailable as exc:
                raise web.HTTPServiceUnavailable(
                    text=json.dumps({"error": str(exc)}), content_type="application/json"
                ) from exc
            others = [r for r in shared if r.get("instance") != table.instance]
            instances.update(str(r.get("instance")) for r in others)
            live = sorted([*live, *others], key=lambda r: (r.get("started_at") or 0,
                                                           str(r.get("call_id"))))
        return {"at": round(time.time(), 3), "instances": sorted(instances),
                "calls": live, "ended": ended}
