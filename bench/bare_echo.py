"""The floor the benchmarks compare against: a bare websockets + JSON echo.

Each media message's payload goes straight back in the provider's reply form (Twilio
``media``, Telnyx ``media``, Plivo ``playAudio``; the dialect is the last segment of the
URL path): no codec, no resampling, no pacing, no marks, no bot. Nothing useful can be
cheaper, so it is the reference for ``bench latency`` and ``bench server``.

    python -m bench.bare_echo --port 8768
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Sequence

__all__ = ["main", "serve_bare"]


async def serve_bare(port: int) -> None:
    """Echo for all three dialects on 127.0.0.1:``port`` until SIGINT/SIGTERM."""
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        provider = ws.request.path.rstrip("/").rsplit("/", 1)[-1] if ws.request else ""
        loads, dumps = json.loads, json.dumps
        sid = ""
        async for raw in ws:
            message = loads(raw)
            event = message.get("event")
            if event == "media":
                payload = message["media"]["payload"]
                if provider == "plivo":
                    reply = {"event": "playAudio", "media": {
                        "contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": payload}}
                elif provider == "telnyx":
                    reply = {"event": "media", "media": {"payload": payload}}
                else:
                    reply = {"event": "media", "streamSid": sid, "media": {"payload": payload}}
                await ws.send(dumps(reply))
            elif event == "start":
                sid = message.get("streamSid") or ""
            elif event == "stop":
                return

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None,
                     max_size=2**20):
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_echo")
    parser.add_argument("--port", type=int, default=8768)
    args = parser.parse_args(argv)
    asyncio.run(serve_bare(args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
