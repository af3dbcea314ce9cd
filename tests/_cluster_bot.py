"""The bot of the cluster tests' ``mediastream serve`` processes.

It echoes the caller's audio (so a test can check no audio was lost) and appends every
:class:`~mediastream.call.BotMessage` it gets, with its call id and process id, as a JSON
line to ``$CLUSTER_BOT_LOG`` (so a test can see a message sent to one instance reach the
bot on another).
"""

from __future__ import annotations

import json
import os

from mediastream.call import BotMessage, Call, CallEvent, InboundAudio


async def bot(call: Call) -> None:
    log = os.environ["CLUSTER_BOT_LOG"]

    def on_event(event: CallEvent) -> None:
        if type(event) is InboundAudio:
            call.send_audio(event.pcm, event.sample_rate)
        elif type(event) is BotMessage:
            line = {"call_id": call.info.call_id, "pid": os.getpid(), "message": event.data}
            with open(log, "a", encoding="utf-8") as file:
                file.write(json.dumps(line) + "\n")

    call.set_listener(on_event)
    await call.receive()
