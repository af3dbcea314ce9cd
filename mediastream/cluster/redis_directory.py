"""Several instances on one Redis (``MEDIASTREAM_REDIS_URL``, extra ``[cluster]``).

Keys and channels (``P`` is ``Config.redis_prefix``)::

    P:token:<nonce>        SET NX EX <token's remaining lifetime>: spent stream tokens
    P:call:<call id>       the call's JSON row, SET EX <call_registry_ttl>, re-set by the
                           holder's heartbeat every third of the TTL
    P:cmd:<instance>       pub/sub: commands for the calls <instance> holds
    P:reply:<instance>     pub/sub: results of the commands <instance> forwarded

**Pub/sub, not streams, for commands.** A command is only meaningful to the process
holding the call, at the moment it is sent: if that process is gone, the call is gone
with it and nothing should run the command later. Pub/sub has exactly that semantics:
``PUBLISH`` answers how many subscribers received the message, so "0" tells the sender
at once that the holder is gone (404) -- a stream would keep the command for a consumer
that may never come (or, worse, for a restarted instance that then acts on a stale
hang-up) and need consumer groups, acknowledgements and trimming to clean up. Pub/sub's
"at most once, to whoever listens now" loses a command only when the holder's Redis
connection drops at that instant, and then the sender gets no reply and answers 504.
The result goes back the same way, on the sender's own reply channel, matched by a
request id.

**Redis unreachable.** Nothing on a live call's path waits for Redis: registry writes
are tasks that log and count their failure (``mediastream_cluster_errors_total``), and
heartbeats re-announce every live call once Redis is back. A stream's start waits for
its token's ``SET NX`` (bounded by the client's socket timeout); when Redis cannot
answer, the token is refused (close 1008) unless ``redis_fail_open`` is set. The API
answers 503 for what needs Redis (``GET /calls``, a command for a call held elsewhere);
a command for a call held by the instance asked still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from .base import CallDirectory, CallRow, ClusterUnavailable, CommandResult, Executor, RowSource

__all__ = ["RedisDirectory"]

logger = logging.getLogger(__name__)

#: Bound on one Redis round trip: a stream's start may wait this long for its token.
_SOCKET_TIMEOUT_S = 1.0
_RESUBSCRIBE_S = 0.5
_MAX_WRITES = 10_000


def _import_redis() -> tuple[Any, tuple[type[BaseException], ...]]:
    """The asyncio client module and the errors that mean "Redis did not answer"."""
    try:
        import redis.asyncio as redis_asyncio
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "MEDIASTREAM_REDIS_URL needs the redis package: pip install 'mediastream[cluster]'"
        ) from None
    return redis_asyncio, (RedisError, OSError, TimeoutError)


class RedisDirectory(CallDirectory):
    """Shared state on Redis (see the module docstring).

    ``on_error(operation)`` is called for each failed Redis operation (the server counts
    them in a metric); the first failure after a success, and the recovery, are logged.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "mediastream",
        registry_ttl: float = 15.0,
        command_timeout: float = 10.0,
        fail_open: bool = False,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        redis_asyncio, self._redis_errors = _import_redis()
        self._fail_open = fail_open
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": _SOCKET_TIMEOUT_S,
            "socket_connect_timeout": _SOCKET_TIMEOUT_S,
        }
        self._redis = redis_asyncio.Redis.from_url(url, **options)
        self._url = url
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._prefix = prefix
        self._ttl = max(1.0, registry_ttl)
        self._timeout = command_timeout
        self._on_error = on_error
        self._executor: Executor | None = None
        self._rows: RowSource = list
        self._pending: dict[str, asyncio.Future[CommandResult]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._healthy = True
        self._subscribed = asyncio.Event()
        #: Registry writes waiting, oldest first (bounded: during an outage the oldest
        #: go, and the heartbeats re-announce every live call once Redis is back).
        self._writes: deque[tuple[str, CallRow | None]] = deque(maxlen=_MAX_WRITES)
        self._write_wake = asyncio.Event()
        self._written = asyncio.Event()  # set while no write waits or runs
        self._written.set()

    # ------------------------------------------------------------------ names

    def _k(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    @property
    def _cmd_channel(self) -> str:
        return self._k("cmd", self.instance)

    @property
    def _reply_channel(self) -> str:
        return self._k("reply", self.instance)

    # ------------------------------------------------------------------ health

    def _failed(self, operation: str, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(operation)
        if self._healthy:
            self._healthy = False
            logger.error("redis unreachable (%s at %s): %s; live calls go on, stream tokens "
                         "are %s, the call API answers 503 for other instances' calls",
                         operation, _safe_url(self._url), str(exc) or type(exc).__name__,
                         "accepted on the local check alone" if self._fail_open else "refused")
        else:
            logger.debug("redis %s failed: %s", operation, exc)

    def _succeeded(self) -> None:
        if not self._healthy:
            self._healthy = True
            logger.warning("redis reachable again at %s", _safe_url(self._url))

    # ------------------------------------------------------------------ lifecycle

    async def start(self, executor: Executor, rows: RowSource) -> None:
        self._executor = executor
        self._rows = rows
        self._loops = [
            asyncio.create_task(self._listen(), name="mediastream-redis-commands"),
            asyncio.create_task(self._heartbeat(), name="mediastream-redis-heartbeat"),
            asyncio.create_task(self._writer(), name="mediastream-redis-registry"),
        ]
        # Up before we take calls, when Redis is there; never blocks start when it is not.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2 * _SOCKET_TIMEOUT_S):
                await self._subscribed.wait()

    async def stop(self) -> None:
        # The calls that ended during the drain leave the registry now, not in a TTL.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2 * _SOCKET_TIMEOUT_S):
                await self._written.wait()
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=_SOCKET_TIMEOUT_S)
        rows = self._rows()
        if rows:
            with contextlib.suppress(*self._redis_errors):
                await self._redis.delete(*(self._k("call", str(r["call_id"])) for r in rows))
        with contextlib.suppress(*self._redis_errors):
            await self._redis.aclose()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ tokens

    async def claim_token(self, nonce: str, expires_at: float) -> bool:
        ttl = max(1, math.ceil(expires_at - time.time()))
        try:
            won = await self._redis.set(self._k("token", nonce), self.instance, nx=True, ex=ttl)
        except self._redis_errors as exc:
            self._failed("token", exc)
            raise ClusterUnavailable(f"redis unreachable: {exc}") from exc
        self._succeeded()
        return bool(won)

    # ------------------------------------------------------------------ registry

    def call_started(self, row: CallRow) -> None:
        self._queue_write(str(row["call_id"]), {**row, "instance": self.instance})

    def call_ended(self, call_id: str) -> None:
        self._queue_write(call_id, None)

    def _queue_write(self, call_id: str, row: CallRow | None) -> None:
        """Registry writes go out one at a time, in order: a call's removal never
        overtakes its announcement (two tasks could, on two pooled connections)."""
        self._writes.append((call_id, row))
        self._written.clear()
        self._write_wake.set()

    async def _writer(self) -> None:
        while True:
            await self._write_wake.wait()
            self._write_wake.clear()
            while self._writes:
                call_id, row = self._writes.popleft()
                key = self._k("call", call_id)
                try:
                    if row is None:
                        await self._redis.delete(key)
                    else:
                        await self._redis.set(key, json.dumps(row), ex=math.ceil(self._ttl))
                except self._redis_errors as exc:
                    # Either way the heartbeats put it right within the TTL.
                    self._failed("register" if row is not None else "unregister", exc)
            self._written.set()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            # Calls are (re-)announced only while commands can reach us: a call listed
            # after an outage is a call whose commands arrive.
            rows = self._rows() if self._subscribed.is_set() else []
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for row in rows:
                        pipe.set(self._k("call", str(row["call_id"])),
                                 json.dumps({**row, "instance": self.instance}),
                                 ex=math.ceil(self._ttl))
                    pipe.ping()
                    await pipe.execute()
                # A call that ended while the pipeline was out may have had its DEL
                # overtaken by our SET: delete it again rather than list it for a TTL.
                now_live = {str(row["call_id"]) for row in self._rows()}
                gone = [str(r["call_id"]) for r in rows if str(r["call_id"]) not in now_live]
                if gone:
                    await self._redis.delete(*(self._k("call", c) for c in gone))
            except self._redis_errors as exc:
                self._failed("heartbeat", exc)
            else:
                self._succeeded()

    async def calls(self) -> list[CallRow]:
        pattern = _glob_escape(self._k("call", "")) + "*"
        try:
            keys = [key async for key in self._redis.scan_iter(match=pattern, count=1000)]
            values = await self._redis.mget(keys) if keys else []
        except self._redis_errors as exc:
            self._failed("list", exc)
            raise ClusterUnavailable(f"redis unreachable: {exc}") from exc
        self._succeeded()
        rows = []
        for value in values:
            if value is None:
                continue  # expired or ended between SCAN and MGET
            with contextlib.suppress(ValueError):
                rows.append(json.loads(value))
        return rows

    # ------------------------------------------------------------------ commands

    async def forward(self, call_id: str, action: str, body: dict[str, Any]) -> CommandResult:
        try:
            raw = await self._redis.get(self._k("call", call_id))
        except self._redis_errors as exc:
            self._failed("lookup", exc)
            raise ClusterUnavailable(f"redis unreachable: {exc}") from exc
        if raw is None:
            return CommandResult(404, {"error": f"no live call {call_id}"})
        try:
            holder = str(json.loads(raw)["instance"])
        except (ValueError, KeyError, TypeError):
            return CommandResult(502, {"error": "malformed registry entry"})
        if holder == self.instance:
            assert self._executor is not None
            return await self._executor(call_id, action, body)
        if not self._subscribed.is_set():  # the answer could not reach us
            raise ClusterUnavailable("redis unreachable: not subscribed to our reply channel")
        request_id = secrets.token_hex(8)
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        message = json.dumps({"id": request_id, "reply_to": self._reply_channel,
                              "call_id": call_id, "action": action, "body": body})
        try:
            try:
                receivers = await self._redis.publish(self._k("cmd", holder), message)
            except self._redis_errors as exc:
                self._failed("command", exc)
                raise ClusterUnavailable(f"redis unreachable: {exc}") from exc
            if not receivers:
                # The holder is gone (its entry will expire within the TTL).
                return CommandResult(404, {"error": f"no live call {call_id} (instance "
                                           f"{holder} is gone)"})
            try:
                async with asyncio.timeout(self._timeout):
                    return await future
            except TimeoutError:
                return CommandResult(504, {"error": f"instance {holder} did not answer "
                                           f"within {self._timeout:g}s"})
        finally:
            self._pending.pop(request_id, None)

    async def _listen(self) -> None:
        """Subscribe to our command and reply channels; resubscribe after an outage."""
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._cmd_channel, self._reply_channel)
                self._subscribed.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._on_message(str(message["channel"]), str(message["data"]))
            except self._redis_errors as exc:
                self._subscribed.clear()
                self._failed("subscribe", exc)
                await asyncio.sleep(_RESUBSCRIBE_S)
            finally:
                with contextlib.suppress(*self._redis_errors, RuntimeError):
                    await pubsub.aclose()

    def _on_message(self, channel: str, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            logger.warning("malformed message on %s ignored", channel)
            return
        if not isinstance(message, dict):
            return
        if channel == self._reply_channel:
            future = self._pending.get(str(message.get("id")))
            if future is not None and not future.done():
                future.set_result(CommandResult.from_json(message.get("result")))
        elif channel == self._cmd_channel:
            self._spawn(self._run_command(message))

    async def _run_command(self, message: dict[str, Any]) -> None:
        assert self._executor is not None
        body = message.get("body")
        if not isinstance(body, dict):
            result = CommandResult(400, {"error": "bad command"})
        else:
            result = await self._executor(str(message.get("call_id")),
                                          str(message.get("action")), body)
        reply = json.dumps({"id": message.get("id"), "result": result.to_json()})
        try:
            await self._redis.publish(str(message.get("reply_to")), reply)
        except self._redis_errors as exc:
            self._failed("reply", exc)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _safe_url(url: str) -> str:
    """The URL without a password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
