"""A bot for the browser tests (``mediastream serve --agent clearer=<this file>:clear_bot``).

It speaks a steady 600 Hz tone, several seconds of it queued at once; key ``1`` clears it
(a barge-in, as a bot does when the caller starts talking): the softphone must go silent
at once and echo the pending marks (Twilio, Telnyx). Key ``2`` speaks again.
"""

from __future__ import annotations

import math
from array import array

from mediastream.call import Call, DtmfPressed

RATE = 16000


def _tone(seconds: float, hz: float = 600.0) -> bytes:
    samples = array("h", (round(9000 * math.sin(2 * math.pi * hz * i / RATE))
                          for i in range(round(seconds * RATE))))
    return samples.tobytes()


async def clear_bot(call: Call) -> None:
    tone = _tone(8.0)
    call.send_audio(tone, RATE)
    async for event in call:  # ends with the call
        if isinstance(event, DtmfPressed):
            if event.digit == "1":
                call.clear()
            elif event.digit == "2":
                call.send_audio(tone, RATE)
