"""``--workers N``: N server processes on one port (``SO_REUSEPORT``, Linux/BSD).

Each worker is a full, independent server (its own event loop, calls and bot tasks);
the kernel spreads new connections across the listening sockets. A call lives on one
worker from upgrade to close. The workers share the port, the metrics directory and,
without Redis, a state directory (:mod:`mediastream.cluster.files`): spent stream
tokens, the live-call list, and a command socket per worker, so ``GET /calls`` and
call commands on any worker reach every worker's calls and a token is single-use on
the machine.

The supervisor (this module, in the parent process):

* checks the bot SPECs load before starting anything;
* gives the workers a fresh prometheus-client multiprocess directory
  (``PROMETHEUS_MULTIPROC_DIR``, read by prometheus-client when a worker imports it), so
  ``/metrics`` on any worker reports the whole server;
* forwards SIGTERM/SIGINT to the workers (a second signal cuts their drain short); the
  workers run in their own process group so a terminal's Ctrl-C reaches them only
  through the supervisor, once;
* restarts a worker that died unexpectedly (at most once per second), and marks dead
  workers in the metrics directory so their live gauges drop out.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from mediastream.agents import BotLoadError
from mediastream.config import Config

__all__ = ["run_workers"]

logger = logging.getLogger(__name__)

_RESTART_DELAY_S = 1.0
#: A worker's exit code when its port is taken (not restarted).
_CANNOT_LISTEN = 3


def _worker_main(config: Config, index: int, log_level: int) -> None:
    os.setpgrp()
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s [worker {index}] %(name)s: %(message)s",
    )
    import asyncio

    from mediastream.agents import registry_from_config

    from .serve import serve

    try:
        asyncio.run(serve(config, registry_from_config(config), reuse_port=True))
    except OSError as exc:
        # The port went to someone else between the supervisor's check and now: one
        # line, and an exit code that tells the supervisor not to restart us.
        print(_cannot_listen(config, exc), file=sys.stderr)
        sys.exit(_CANNOT_LISTEN)


def _cannot_listen(config: Config, exc: OSError) -> str:
    """The line a single process prints when its port is taken (server/cli.py)."""
    return f"mediastream serve: cannot listen on {config.host}:{config.port}: {exc}"


def _check_port(config: Config) -> OSError | None:
    """Bind the port once, as the workers will (``SO_REUSEPORT``): a port already taken
    is one line now, not workers restarting for ever with tracebacks."""
    try:
        infos = socket.getaddrinfo(config.host or None, config.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if hasattr(socket, "SO_REUSEPORT"):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(address)
    except OSError as exc:
        return exc
    return None


def run_workers(config: Config) -> int:
    """Run ``config.workers`` server processes until SIGTERM/SIGINT; returns an exit code."""
    count = config.workers
    if config.port == 0:
        print("mediastream serve: --workers needs a fixed --port", file=sys.stderr)
        return 2
    from mediastream.agents import registry_from_config

    try:
        registry_from_config(config)  # fail fast, before any process starts
    except BotLoadError as exc:
        print(f"mediastream serve: {exc}", file=sys.stderr)
        return 2
    taken = _check_port(config)
    if taken is not None:
        print(_cannot_listen(config, taken), file=sys.stderr)
        return 1
    metrics_dir = tempfile.mkdtemp(prefix="mediastream-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Spent tokens, live calls and command sockets, shared by the workers (without Redis;
    # with it every worker is an instance of the cluster): mediastream.cluster.files.
    state_dir = None if config.redis_url else tempfile.mkdtemp(prefix="mediastream-state-")
    worker_config = config.with_overrides(workers=1, metrics_multiproc_dir=metrics_dir,
                                          workers_state_dir=state_dir)
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    signals_seen: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals_seen.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def start(index: int) -> BaseProcess:
        process = context.Process(
            target=_worker_main,
            args=(worker_config, index, level),
            name=f"mediastream-worker-{index}",
        )
        process.start()
        logger.info("worker %d started (pid %s)", index, process.pid)
        return process

    workers: dict[int, BaseProcess] = {}
    forwarded = 0
    code = 0
    try:
        for index in range(count):
            workers[index] = start(index)
        logger.info(
            "%d workers on %s:%d (SO_REUSEPORT)", count, worker_config.host, worker_config.port
        )
        while workers:
            multiprocessing.connection.wait([p.sentinel for p in workers.values()], timeout=0.2)
            while forwarded < len(signals_seen):
                forwarded += 1
                for process in workers.values():
                    if process.pid is not None and process.is_alive():
                        os.kill(process.pid, signal.SIGTERM)
            for index, process in list(workers.items()):
                if process.is_alive():
                    continue
                _mark_dead(process, metrics_dir, state_dir)
                del workers[index]
                if process.exitcode == _CANNOT_LISTEN:
                    code = 1  # it said why; restarting would say it again, for ever
                    signals_seen.append(signal.SIGTERM)
                elif not signals_seen:
                    logger.error(
                        "worker %d exited unexpectedly (code %s); restarting",
                        index,
                        process.exitcode,
                    )
                    time.sleep(_RESTART_DELAY_S)
                    workers[index] = start(index)
        return code
    finally:
        for process in workers.values():
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
            process.join(timeout=worker_config.drain_timeout + 10)
            if process.is_alive():
                process.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)


def _mark_dead(process: BaseProcess, metrics_dir: str, state_dir: str | None) -> None:
    if process.pid is None:
        return
    if state_dir is not None:  # its calls died with it
        from mediastream.cluster.files import forget_worker

        forget_worker(state_dir, process.pid)
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(process.pid, metrics_dir)  # type: ignore[no-untyped-call]
