"""``--workers 2`` without Redis: the workers share spent tokens, the live-call list and
commands through the supervisor's state directory (mediastream/cluster/files.py).

The kernel (``SO_REUSEPORT``) picks the worker for each connection; the tests open
enough connections that both workers get some, and read which worker holds what from
``GET /calls`` (``instance`` is ``host:pid``) and from the workers' logs.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import pytest
from _util_cluster import Instance, api, call_ids, provider_call
from _util_server import ulaw_payload

CALLS = 8
#: The kernel spreads connections over the workers by a hash of the addresses: with a few
#: calls all may land on one worker, so calls (and replays) go on until both have had
#: some, up to this many (all on one worker: about 2**-47).
MAX_TRIES = 48


@pytest.mark.asyncio
async def test_workers_share_tokens_calls_and_commands(tmp_path: Path) -> None:
    server = Instance(tmp_path, "workers", "--workers", "2")
    try:
        await server.ready(listening=2)
        fakes: list[Any] = []
        async with contextlib.AsyncExitStack() as stack:
            holders: dict[str, str] = {}
            while len(fakes) < CALLS or len(set(holders.values())) < 2:
                assert len(fakes) < MAX_TRIES, holders  # both workers must hold calls
                fake = provider_call("twilio")
                fakes.append(fake)
                await stack.enter_async_context(fake.connect(server))  # type: ignore[arg-type]
                await fake.open()
                fake.start_pump()
                await fake.send(fake.media(ulaw_payload(1)))
                await fake.wait_audio(160)
                status, body = await api(server.port, "GET", "/calls")
                holders = {row["call_id"]: row["instance"] for row in body["calls"]}

            # Every worker's calls, whichever worker answers.
            everyone = {fake.call_id for fake in fakes}
            for _ in range(4):
                assert await call_ids(server.port) == everyone
            status, body = await api(server.port, "GET", "/calls")
            holders = {row["call_id"]: row["instance"] for row in body["calls"]}
            assert len(set(holders.values())) == 2, holders  # both workers hold calls

            # A message reaches each call, whichever worker takes the request.
            for index, fake in enumerate(fakes):
                status, reply = await api(server.port, "POST", f"/calls/{fake.call_id}/message",
                                          {"n": index})
                assert status == 200, reply
            delivered = {(m["call_id"], m["message"]["n"]) for m in server.messages()}
            assert delivered == {(fake.call_id, i) for i, fake in enumerate(fakes)}
            pids = {str(m["pid"]) for m in server.messages()}
            assert pids == {holder.rsplit(":", 1)[1] for holder in holders.values()}

            # Spent tokens are spent for both workers: replays are refused wherever the
            # kernel sends them, and some land on the worker that did not take the call.
            token = fakes[0].params["_token"]
            holder_pid = holders[fakes[0].call_id].rsplit(":", 1)[1]
            refused: list[str] = []
            for tries in range(MAX_TRIES):
                replay = provider_call("twilio", token=token, call_id=fakes[0].call_id)
                async with replay.connect(server):  # type: ignore[arg-type]
                    await replay.open()
                    code, _ = await replay.closed()
                assert code == 1008
                text = server.text()
                index_of = {pid: index for index, pid in
                            re.findall(r"worker (\d) started \(pid (\d+)\)", text)}
                [other] = [i for pid, i in index_of.items() if pid != holder_pid]
                refused = re.findall(rf"\[worker {other}\].*already used \(spent in the "
                                     r"shared state\)", text)
                if refused and tries >= 11:
                    break
            assert refused, text

            # Hang-up through either worker ends the call; the list follows.
            status, _ = await api(server.port, "POST", f"/calls/{fakes[1].call_id}/hangup", {})
            assert status == 200
            assert (await fakes[1].closed())[0] == 1000
            assert fakes[1].call_id not in await call_ids(server.port)
    finally:
        await server.stop()
        server.kill()
