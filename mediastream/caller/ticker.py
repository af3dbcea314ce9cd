"""One 20 ms clock for every simulated call.

A provider captures 20 ms of the caller's audio and sends it, 50 times a second. The
ticker does that for all calls at once: each call ticks every 20 ms on absolute due
times (``t0 + k × 20 ms`` plus the call's phase), so lateness never accumulates into
drift, and at each tick the call sends its frame and advances its playout. Real calls
start at random moments, so their 20 ms clocks are out of phase with each other: the
calls are spread over :data:`PHASES` phases 4 ms apart (each new call joins the least
used one) instead of all sending in the same instant, which would hand a server every
call's frame in one burst and measure the burst rather than the server. When the loop
is late, ticks are processed back to back (no frame is skipped) with a yield between
them so reads are not starved; the lateness is what each call records as its send lag.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

__all__ = ["PHASES", "TICK", "Ticker"]

TICK = 0.02
#: Phases of the 20 ms clock the calls are spread over.
PHASES = 5


class Member(Protocol):
    def tick(self, k: int, due: float) -> None: ...


class Ticker:
    """The shared 20 ms ticker. Members join with :meth:`add` and leave with :meth:`remove`."""

    def __init__(self, period: float = TICK, phases: int = PHASES) -> None:
        if phases < 1:
            raise ValueError(f"phases must be >= 1, got {phases}")
        self.period = period
        self.phases = phases
        self._members: list[dict[int, Member]] = [{} for _ in range(phases)]
        self._phase_of: dict[int, int] = {}
        self._snapshots: list[tuple[Member, ...]] = [() for _ in range(phases)]
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def add(self, member: Member) -> None:
        """Start ticking ``member`` from its phase's next tick on."""
        key = id(member)
        if key in self._phase_of:
            return
        phase = min(range(self.phases), key=lambda p: len(self._members[p]))
        self._phase_of[key] = phase
        self._members[phase][key] = member
        self._snapshots[phase] = tuple(self._members[phase].values())

    def remove(self, member: Member) -> bool:
        """Stop ticking ``member`` (safe to call from inside its own tick).

        Returns whether it was ticking.
        """
        phase = self._phase_of.pop(id(member), None)
        if phase is None:
            return False
        del self._members[phase][id(member)]
        self._snapshots[phase] = tuple(self._members[phase].values())
        return True

    def __len__(self) -> int:
        return len(self._phase_of)

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
        phases = self.phases
        step = self.period / phases
        snapshots = self._snapshots
        n = 0  # sub-ticks: tick n // phases of phase n % phases
        while not self._stopped:
            k, phase = divmod(n, phases)
            n += 1
            if not snapshots[phase] and self._phase_of:
                continue  # an empty phase while others tick: no wake-up for it
            due = t0 + (k * phases + phase) * step
            if due > loop.time():
                waiter: asyncio.Future[None] = loop.create_future()
                handle = loop.call_at(due, _wake, waiter)
                try:
                    await waiter
                finally:
                    handle.cancel()
            else:
                await asyncio.sleep(0)
            for member in snapshots[phase]:
                member.tick(k, due)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
