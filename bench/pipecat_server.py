"""The benchmark's reference: Pipecat's own telephony stack, built as its Twilio guide does.

FastAPI + uvicorn; per call ``parse_telephony_websocket`` -> ``TwilioFrameSerializer`` ->
``FastAPIWebsocketTransport`` -> the same echo pipeline as mediastream's ``bot.echo``
(:func:`bot.echo.build_worker`, 16 kHz), so only the transport differs. Auto hang-up is
off: there is no Twilio REST API here. ``--bot voice_agent`` runs mediastream's voice
agent instead (:func:`bot.voice_agent.build_worker`, keys and endpoints from the
environment, 16 kHz in, 8 kHz out as on mediastream), for ``bench voice``.

Run as a process of its own (the benchmark pins it to one core)::

    python -m bench.pipecat_server --port 8766 [--bot voice_agent]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner

from bot.echo import build_worker
from mediastream.protocols.events import CallInfo, MediaFormat

__all__ = ["PIPELINE_RATE", "create_app", "main"]

#: The pipeline rate of the guide's STT-ready bots, and of mediastream's bot.echo.
PIPELINE_RATE = 16000


def _voice_agent_worker(transport: FastAPIWebsocketTransport, call_data: dict[str, Any]) -> Any:
    from bot import voice_agent

    mulaw = MediaFormat("pcmu", 8000)
    body = call_data.get("body") or {}
    info = CallInfo(provider="twilio", call_id=call_data["call_id"],
                    stream_id=call_data["stream_id"], inbound_format=mulaw,
                    outbound_format=mulaw, custom_parameters=dict(body))
    return voice_agent.build_worker(transport, voice_agent.Keys.from_env(), info=info,
                                    in_rate=PIPELINE_RATE, out_rate=8000)


def create_app(bot: str = "echo") -> FastAPI:
    """The FastAPI app: one media WebSocket endpoint at ``/ws``."""
    app = FastAPI()

    @app.websocket("/ws")
    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        _, call_data = await parse_telephony_websocket(websocket)
        serializer = TwilioFrameSerializer(
            stream_sid=call_data["stream_id"],
            call_sid=call_data["call_id"],
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
        )
        transport = FastAPIWebsocketTransport(
            websocket,
            FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                serializer=serializer,
            ),
        )
        if bot == "voice_agent":
            worker = _voice_agent_worker(transport, call_data)
        else:
            worker = build_worker(transport, PIPELINE_RATE)

        @transport.event_handler("on_client_disconnected")
        async def disconnected(_transport: object, _ws: object) -> None:
            await worker.cancel(reason="client disconnected")

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()

    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the reference stack until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m bench.pipecat_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--bot", choices=("echo", "voice_agent"), default="echo")
    args = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    # uvicorn's defaults, as the guide runs it.
    uvicorn.run(create_app(args.bot), host=args.host, port=args.port,
                log_level=args.log_level.lower())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
