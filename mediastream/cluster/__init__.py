"""State shared between server processes: single-use stream tokens, the live-call
registry, and commands to the process holding a call.

One process needs none of it. Two kinds of sharing exist (docs/design.md, "Shared state"):

* :class:`~.files.WorkerDirectory` -- ``--workers N`` on one machine, no extra service:
  the workers share a private directory the supervisor creates (a file per spent token,
  created with ``O_CREAT|O_EXCL``; a JSON file per live call; a Unix socket per worker
  that takes commands for its calls).
* :class:`~.redis.RedisDirectory` -- several instances (machines, pods) on one Redis
  (``MEDIASTREAM_REDIS_URL``, extra ``[cluster]``): ``SET NX`` per spent token, a key
  per live call kept alive by heartbeats, commands over pub/sub.

Both implement :class:`~.base.CallDirectory`; the server (``mediastream.server.cluster``)
picks one from the configuration and never touches either's storage itself.
"""

from __future__ import annotations

from .base import (
    CallDirectory,
    CallRow,
    ClusterUnavailable,
    CommandResult,
    Executor,
    RowSource,
)

__all__ = [
    "CallDirectory",
    "CallRow",
    "ClusterUnavailable",
    "CommandResult",
    "Executor",
    "RowSource",
]
