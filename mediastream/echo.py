"""The built-in echo bot: the caller hears themselves, through the whole server path.

``mediastream serve --bot echo`` runs it. It uses nothing but the :class:`~mediastream.call.Call`
API (no Pipecat), so a call through it measures the server's own floor: provider JSON in,
decode and resample to the bot rate, resample and encode back, paced playout out. Each
20 ms frame goes back as it arrives; gap-filled frames (silence the session synthesised
for lost packets) go back too, so the returned stream keeps the caller's timing.

It consumes the call through :meth:`~mediastream.call.Call.set_listener`: each frame is
sent back from the server's read callback, with no task wake-up per frame. A bot that
needs to await things per frame iterates the call instead (``async for event in call``).

Keys the caller presses are logged (INFO, with the call id): there is no audio to send
back for them, and the log is how a test through ``mediastream serve`` -- the softphone's
in a browser -- sees that a key reached the bot.
"""

from __future__ import annotations

import logging

from .call import Call, CallEvent, DtmfPressed, InboundAudio

__all__ = ["echo_bot"]

logger = logging.getLogger(__name__)


async def echo_bot(call: Call) -> None:
    """Send every inbound audio frame straight back until the call ends."""
    send = call.send_audio

    def on_event(event: CallEvent) -> None:
        if type(event) is InboundAudio:
            send(event.pcm, event.sample_rate)
        elif type(event) is DtmfPressed:
            logger.info("[call %s] echo bot: DTMF %s", call.info.call_id, event.digit)

    call.set_listener(on_event)
    await call.receive()  # nothing but the final CallEnded while a listener is set
