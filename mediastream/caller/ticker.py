"""One 20 ms clock for every simulated call.

A provider captures 20 ms of the caller's audio and sends it, 50 times a second. The
ticker does that for all calls at once: tick ``k`` is due at ``t0 + k × 20 ms`` (absolute
times, so lateness never accumulates into drift), and at each tick every member sends its
frame and advances its playout. When the loop is late, ticks are processed back to back
(no frame is skipped) with a yield between them so reads are not starved; the lateness is
what each call records as its send lag.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

__all__ = ["TICK", "Ticker"]

TICK = 0.02


class Member(Protocol):
    def tick(self, k: int, due: float) -> None: ...


class Ticker:
    """The shared 20 ms ticker. Members join with :meth:`add` and leave with :meth:`remove`."""

    def __init__(self, period: float = TICK) -> None:
        self.period = period
        self._members: dict[int, Member] = {}
        self._snapshot: tuple[Member, ...] = ()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def add(self, member: Member) -> None:
        """Start ticking ``member`` from the next tick on."""
        self._members[id(member)] = member
        self._snapshot = tuple(self._members.values())

    def remove(self, member: Member) -> bool:
        """Stop ticking ``member`` (safe to call from inside its own tick).

        Returns whether it was ticking.
        """
        if self._members.pop(id(member), None) is None:
            return False
        self._snapshot = tuple(self._members.values())
        return True

    def __len__(self) -> int:
        return len(self._members)

    def start(self) -> None:
        """Run the clock on the current event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ticker")

    async def stop(self) -> None:
        """Stop the clock."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        k = 0
        while not self._stopped:
            due = t0 + k * self.period
            if due > loop.time():
                waiter: asyncio.Future[None] = loop.create_future()
                handle = loop.call_at(due, _wake, waiter)
                try:
                    await waiter
                finally:
                    handle.cancel()
            else:
                await asyncio.sleep(0)
            for member in self._snapshot:
                member.tick(k, due)
            k += 1


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
