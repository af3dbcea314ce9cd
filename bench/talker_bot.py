"""A bot that talks and is interrupted: the barge-in half of ``bench latency --leads``.

It speaks a steady tone, two seconds at a time, as fast as a TTS service would hand it
over (all at once, so the server's pacer decides how far ahead of real time it goes:
``playout_lead``). Each DTMF key the caller presses is a barge-in: the bot clears what
the caller has not heard yet, listens for a moment (the caller is talking), then starts
a new utterance. The caller measures clear -> silence: how long it still heard the bot
after the clear arrived.
"""

from __future__ import annotations

import asyncio

import numpy as np

from mediastream.call import Call, DtmfPressed

__all__ = ["run_bot"]

_RATE = 8000
#: How long the bot stays quiet after a barge-in.
_LISTEN_S = 0.5
_TONE = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(2 * _RATE) / _RATE)).astype(
    "<i2").tobytes()


async def run_bot(call: Call) -> None:
    """Talk; on every key, clear and talk again."""
    call.send_audio(_TONE, _RATE)
    call.end_utterance()
    async for event in call:
        if isinstance(event, DtmfPressed):
            call.clear()
            await asyncio.sleep(_LISTEN_S)  # the caller's turn
            call.send_audio(_TONE, _RATE)
            call.end_utterance()
