"""Pipecat's log lines through stdlib ``logging``: one format, one level, the call id.

Pipecat logs with loguru, whose default handler prints every DEBUG line to stderr in a
format of its own, whatever ``mediastream serve --log-level`` says (~25 lines per call).
:func:`route_pipecat_logs` replaces that default handler with a bridge into stdlib
``logging``: each record goes to the logger named after its module (``pipecat.*``), so
``--log-level`` (or your own logging configuration: uvicorn's, ``logging.basicConfig``)
decides what is shown and how, and records logged while a call's bot runs carry
``[call <id>]`` and ``call_id`` like ours (:mod:`mediastream.server.log`).

An application that configured loguru itself (removed the default handler) is left
alone unless it asks (``force=True``).
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from loguru import logger as _loguru

__all__ = ["CALL_ID", "route_pipecat_logs"]

#: The call whose bot is running in this context (set by ``pipecat_runner``; the
#: pipeline's tasks inherit it).
CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mediastream_call_id", default=None)

_routed: int | None = None


def route_pipecat_logs(*, force: bool = False) -> bool:
    """Send loguru's records to stdlib ``logging`` (see the module docstring); returns
    True when the bridge is (now) installed. Idempotent."""
    global _routed
    if _routed is not None:
        return True
    try:
        _loguru.remove(0)  # loguru's default stderr handler, if nobody removed it yet
    except ValueError:
        if not force:
            return False
    _routed = _loguru.add(_to_logging, level=0, filter=_enabled, format="{message}")
    return True


def _enabled(record: Any) -> bool:
    return logging.getLogger(_name(record)).isEnabledFor(record["level"].no)


def _name(record: Any) -> str:
    name = str(record["name"] or "pipecat")
    return name if name.startswith("pipecat") else "pipecat." + name


def _to_logging(message: Any) -> None:
    record = message.record
    call_id = CALL_ID.get()
    exception = record["exception"]
    exc_info = (exception.type, exception.value, exception.traceback) if exception else None
    logging.getLogger(_name(record)).log(
        record["level"].no, "%s%s", f"[call {call_id}] " if call_id else "", record["message"],
        exc_info=exc_info, extra={"call_id": call_id or "-"})
