"""The one state machine every provider protocol shares.

Rules of this file (as in h11's ``_state.py``):

* Every state change of a protocol object goes through :func:`next_state`; nothing else
  assigns a new state, except :data:`State.FAILED`, which the error boundary in
  ``base.py`` sets after any :class:`~mediastream.errors.RemoteProtocolError`.
* The table lists what is allowed; anything not in it is out of order
  (:class:`~mediastream.errors.OutOfOrderError`, close code 1002).
* ``FAILED`` has no way out: a failed protocol rejects all further input.
* Inputs are classified by what they mean, not by provider spelling: Twilio ``mark``,
  Plivo ``playedStream`` and Plivo ``clearedAudio`` are all ``CALL_EVENT``.

The machine::

    IDLE --connected--> CONNECTED --start--> STARTED --stop--> STOPPED
      \\______________________start_____________^
    any state but FAILED --notice (unknown event, provider error)--> same state
    STOPPED --call event / stop--> STOPPED   (late frames are discarded, see below)
    any state --RemoteProtocolError--> FAILED  (terminal)

Plivo sends no ``connected`` frame, so ``start`` is accepted from ``IDLE``; doing so for
every provider costs nothing and tolerates emulators that skip ``connected``. A ``stop``
before ``start`` ends a stream that never started (the call hung up during setup).
Telnyx does not guarantee frame order (protocols.md §2.2), so a media or mark frame that
arrives after ``stop`` is discarded rather than treated as an error: the stream is over
and the connection is about to close with 1000.
"""

from __future__ import annotations

import enum

__all__ = ["DISCARDED", "Input", "State", "next_state"]


class State(enum.Enum):
    """Where a protocol object is in the life of one media stream."""

    IDLE = "IDLE"
    CONNECTED = "CONNECTED"
    STARTED = "STARTED"
    STOPPED = "STOPPED"
    FAILED = "FAILED"


class Input(enum.Enum):
    """What kind of message arrived, independent of the provider's spelling."""

    CONNECTED = "connected"
    START = "start"
    #: media, dtmf, mark/playedStream echoes, clearedAudio: only meaningful once started.
    CALL_EVENT = "call event"
    STOP = "stop"
    #: unknown event types and provider error reports: accepted in any live state.
    NOTICE = "notice"


#: (state, input) -> next state. Anything missing is out of order.
_TRANSITIONS: dict[tuple[State, Input], State] = {
    (State.IDLE, Input.CONNECTED): State.CONNECTED,
    (State.IDLE, Input.START): State.STARTED,
    (State.CONNECTED, Input.START): State.STARTED,
    (State.STARTED, Input.CALL_EVENT): State.STARTED,
    (State.IDLE, Input.STOP): State.STOPPED,
    (State.CONNECTED, Input.STOP): State.STOPPED,
    (State.STARTED, Input.STOP): State.STOPPED,
    (State.STOPPED, Input.CALL_EVENT): State.STOPPED,
    (State.STOPPED, Input.STOP): State.STOPPED,
    (State.IDLE, Input.NOTICE): State.IDLE,
    (State.CONNECTED, Input.NOTICE): State.CONNECTED,
    (State.STARTED, Input.NOTICE): State.STARTED,
    (State.STOPPED, Input.NOTICE): State.STOPPED,
}

#: Pairs that are allowed but produce no events: frames arriving after the stream ended.
DISCARDED: frozenset[tuple[State, Input]] = frozenset(
    {(State.STOPPED, Input.CALL_EVENT), (State.STOPPED, Input.STOP)}
)


def next_state(state: State, received: Input) -> State | None:
    """The state after receiving ``received`` in ``state``, or ``None`` if out of order."""
    return _TRANSITIONS.get((state, received))
