"""The simulated caller: ``mediastream call`` and :func:`run_calls`.

It plays the provider's part of a phone call against any server that speaks the Twilio,
Telnyx or Plivo media-stream dialect: dial-in through the webhook and answer document,
the WebSocket stream with faithful opening messages, 20 ms frames on a drift-free clock,
DTMF, marks/checkpoints acknowledged after playout, clear handling, network faults, and
measurements of what the caller heard.
"""

from __future__ import annotations

from .audio import ProbeConfig
from .faults import Fault, parse_fault
from .report import CallReport, RunReport
from .runner import run_calls

__all__ = ["CallReport", "Fault", "ProbeConfig", "RunReport", "parse_fault", "run_calls"]
