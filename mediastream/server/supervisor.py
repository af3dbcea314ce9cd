"""The bot of one call, run as a task that cannot harm other calls or outlive its own.

If the bot raises, only its call ends (1011, reason ``bot error``, the traceback in the
log with the call id). If it returns, the call ends once the caller heard the rest
(1000). Once the call is over the bot gets ``exit_timeout`` to return, is then
cancelled, and is abandoned (logged, referenced until it ends) if it ignores that too:
no bot can hold a connection or a server's drain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final, Protocol

from mediastream.call import BotRunner
from mediastream.errors import BotError

from .live import LiveCall

__all__ = ["BotSupervisor"]

#: Extra wait for the provider's last mark echo after the audio should have played
#: (protocols.md §5.2: "expected duration + ~2 s").
PLAYOUT_GRACE_S: Final = 2.0

#: Bots that ignored cancellation, referenced until they end (a task needs an owner).
_abandoned: set[asyncio.Task[None]] = set()


class BotOwner(Protocol):
    """What the supervisor tells the connection."""

    @property
    def done(self) -> bool:
        """The call is over (by whatever means)."""

    def fail(self, exc: BaseException, *, log: bool = True) -> None:
        """End the call with the ending ``exc`` calls for."""

    async def hangup(self, reason: str) -> None:
        """End the call as the bot's own decision (1000)."""


class BotSupervisor:
    """Runs one call's bot (see the module docstring)."""

    def __init__(
        self,
        runner: BotRunner,
        call: LiveCall,
        owner: BotOwner,
        log: logging.LoggerAdapter[logging.Logger],
        *,
        exit_timeout: float,
        playout_timeout: Callable[[], float],
    ) -> None:
        self._runner = runner
        self._call = call
        self._owner = owner
        self._log = log
        self._exit_timeout = exit_timeout
        self._playout_timeout = playout_timeout
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the bot. It runs outside the connection's own task: a bot that ignores
        cancellation must not keep the connection (and a server drain) waiting."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        owner = self._owner
        try:
            await self._runner(self._call)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if owner.done or (task is not None and task.cancelling()):
                raise
            # The bot raised CancelledError of its own (a cancelled inner task leaking
            # out): without this the call would go on with nobody answering.
            self._log.error("bot raised CancelledError; ending the call", exc_info=True)
            owner.fail(BotError("bot failed"), log=False)
            return
        except Exception:
            if owner.done:
                self._log.warning("bot raised after the call ended", exc_info=True)
                return
            self._log.error("bot failed; ending the call", exc_info=True)
            owner.fail(BotError("bot failed"), log=False)
            return
        if owner.done:
            return
        timeout = self._playout_timeout() + PLAYOUT_GRACE_S
        if not await self._call.wait_played(timeout):
            if owner.done:
                return
            self._log.info("bot finished; playout not confirmed within %.1fs", timeout)
        await owner.hangup("bot finished")

    async def stop(self) -> None:
        """Give the bot ``exit_timeout`` to return, then cancel it; abandon it (with an
        error in the log) if it ignores the cancellation as long again."""
        bot = self._task
        self._task = None
        if bot is None or bot.done():
            return
        timeout = self._exit_timeout
        try:
            await asyncio.wait({bot}, timeout=timeout)
            if bot.done():
                return
            self._log.warning("bot still running %.1fs after the call ended; cancelling it",
                              timeout)
            bot.cancel()
            await asyncio.wait({bot}, timeout=timeout)
            if not bot.done():
                self._log.error(
                    "bot ignored cancellation for %.1fs; abandoning it (a bot must not "
                    "swallow CancelledError)",
                    timeout,
                )
                _abandoned.add(bot)
                bot.add_done_callback(_abandoned.discard)
        except BaseException:
            bot.cancel()  # we are being cancelled ourselves: do not leave the bot behind
            raise
