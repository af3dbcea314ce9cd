"""The interface every kind of shared state offers the server (see the package doc)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from mediastream.errors import MediaStreamError

__all__ = [
    "CallDirectory",
    "CallRow",
    "ClusterUnavailable",
    "CommandResult",
    "Executor",
    "RowSource",
]

#: One live call as the API lists it (JSON-ready): ``call_id``, ``provider``, ``agent``,
#: ``instance``, ``started`` (Unix time) and whatever else the server adds.
CallRow: TypeAlias = dict[str, Any]


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a call command came to: the HTTP status the API answers, and its JSON body."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "body": self.body}

    @classmethod
    def from_json(cls, data: Any) -> CommandResult:
        """A result sent back by another process; a malformed one is a 502."""
        if (
            isinstance(data, dict)
            and isinstance(data.get("status"), int)
            and isinstance(data.get("body"), dict)
        ):
            return cls(data["status"], data["body"])
        return cls(502, {"error": "malformed answer from the instance holding the call"})


#: Runs a command on a call held by this process: ``(call_id, action, body)``; answers
#: 404 when the call is not (or no longer) here.
Executor: TypeAlias = Callable[[str, str, dict[str, Any]], Awaitable[CommandResult]]
#: The rows of the calls this process holds right now (heartbeats re-announce them).
RowSource: TypeAlias = Callable[[], list[CallRow]]


class ClusterUnavailable(MediaStreamError):
    """The shared state cannot be reached (Redis down): the API answers 503, a stream
    token check fails closed unless configured open. Calls in progress never see it."""


class CallDirectory(ABC):
    """Shared state between the processes of one deployment.

    The live-call path never waits for it: :meth:`call_started`/:meth:`call_ended` only
    schedule work. Only a stream's start waits, for :meth:`claim_token`.
    """

    #: This process's name in the registry (``host:pid`` or similar).
    instance: str

    @abstractmethod
    async def start(self, executor: Executor, rows: RowSource) -> None:
        """Begin taking commands for this process's calls (``executor`` runs them)."""

    @abstractmethod
    async def stop(self) -> None:
        """Withdraw this process's calls and stop taking commands."""

    @abstractmethod
    async def claim_token(self, nonce: str, expires_at: float) -> bool:
        """Spend a stream token's nonce for the whole deployment: True for the first
        claim, False when some process already spent it. Raises
        :class:`ClusterUnavailable` when the shared state cannot say."""

    @abstractmethod
    def call_started(self, row: CallRow) -> None:
        """Announce a live call held here (at once, without waiting)."""

    @abstractmethod
    def call_ended(self, call_id: str) -> None:
        """Withdraw a call held here (at once, without waiting)."""

    @abstractmethod
    async def calls(self) -> list[CallRow]:
        """Every live call of the deployment (ClusterUnavailable when it cannot say)."""

    @abstractmethod
    async def forward(self, call_id: str, action: str, body: dict[str, Any]) -> CommandResult:
        """Run a command on the process holding ``call_id`` and return its result: 404
        when no process holds it, 504 when the holder did not answer in time."""
