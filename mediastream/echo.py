"""The built-in echo bot: the caller hears themselves, through the whole server path.

``mediastream serve --bot echo`` runs it. It uses nothing but the :class:`~mediastream.call.Call`
API (no Pipecat), so a call through it measures the server's own floor: provider JSON in,
decode and resample to the bot rate, resample and encode back, paced playout out. Each
20 ms frame goes back as it arrives; gap-filled frames (silence the session synthesised
for lost packets) go back too, so the returned stream keeps the caller's timing.
"""

from __future__ import annotations

from .call import Call, InboundAudio

__all__ = ["echo_bot"]


async def echo_bot(call: Call) -> None:
    """Send every inbound audio frame straight back until the call ends."""
    async for event in call:
        if type(event) is InboundAudio:
            call.send_audio(event.pcm, event.sample_rate)
