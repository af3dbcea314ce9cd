"""Several ``mediastream serve`` instances on one real ``redis-server`` (loopback).

Needs the redis-server binary (Debian package ``redis-server``): ``make test-cluster``
installs it and runs these; without it they are skipped. Each test starts its own Redis
on a free port (no persistence) and its own instances.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from _util_cluster import (
    REDIS,
    Instance,
    RedisServer,
    api,
    call_ids,
    eventually,
    free_port,
    instances,
    provider_call,
)
from _util_server import FakeProvider, ulaw_payload
from aiohttp import web

if REDIS is None:
    pytest.skip("redis-server is not installed (make test-cluster installs it and runs "
                "these)", allow_module_level=True)

TTL = "1.5"


@contextlib.asynccontextmanager
async def cluster(tmp: Path, count: int) -> AsyncIterator[tuple[RedisServer, list[Instance]]]:
    redis = RedisServer()
    try:
        await redis.ready()
        async with instances(tmp, count, "--redis-url", redis.url,
                             "--call-registry-ttl", TTL, "--command-timeout", "5") as started:
            yield redis, started
    finally:
        redis.stop()


async def _live(fake: FakeProvider, instance: Instance) -> None:
    """Open the stream on ``instance`` and check the call is up (one frame echoed)."""
    await fake.open()
    fake.start_pump()
    await fake.send(fake.media(ulaw_payload(1)))
    await fake.wait_audio(160)


@pytest.mark.asyncio
async def test_a_token_used_on_one_instance_is_refused_by_the_others(tmp_path: Path) -> None:
    async with cluster(tmp_path, 3) as (_redis, (a, b, c)):
        first = provider_call("twilio")
        token = first.params["_token"]
        async with first.connect(a):  # type: ignore[arg-type]
            await _live(first, a)
            for other in (b, c, a):
                replay = provider_call("twilio", token=token, call_id=first.call_id)
                async with replay.connect(other):  # type: ignore[arg-type]
                    await replay.open()
                    code, reason = await replay.closed()
                assert code == 1008, (code, reason)
            # The peer reads "authentication failed"; the log names the reason.
            for other in (b, c):
                assert "already used (spent in the shared state)" in other.text()
            # A fresh token is fine anywhere.
            fresh = provider_call("twilio")
            async with fresh.connect(b):  # type: ignore[arg-type]
                await _live(fresh, b)


@pytest.mark.asyncio
async def test_any_instance_lists_and_commands_every_call(tmp_path: Path) -> None:
    async with cluster(tmp_path, 2) as (_redis, (a, b)):
        t1, p1, t2 = provider_call("twilio"), provider_call("plivo"), provider_call("twilio")
        async with t1.connect(a), p1.connect(a), t2.connect(b):  # type: ignore[arg-type]
            await asyncio.gather(_live(t1, a), _live(p1, a), _live(t2, b))
            everyone = {t1.call_id, p1.call_id, t2.call_id}

            async def listed_everywhere() -> bool:  # registering is a task: it may trail
                return all([await call_ids(i.port) == everyone for i in (a, b)])

            await eventually(listed_everywhere)
            status, body = await api(b.port, "GET", "/calls")
            holders = {row["call_id"]: row["instance"] for row in body["calls"]}
            assert holders[t1.call_id] == holders[p1.call_id] != holders[t2.call_id]
            assert sorted(body["instances"]) == sorted(set(holders.values()))

            async def full_row() -> bool:
                """After A's next heartbeat B lists t1 with the book's full row."""
                _, body = await api(b.port, "GET", "/calls")
                row = next(r for r in body["calls"] if r["call_id"] == t1.call_id)
                return row.get("frames_in", 0) >= 1 and row["state"] == "live"

            await eventually(full_row)

            # Sent to B, run on A.
            news = {"event": "order_shipped", "order": 7}
            status, body = await api(b.port, "POST", f"/calls/{t1.call_id}/message", news)
            assert status == 200, body
            assert [m["message"] for m in a.messages()] == [news]
            assert a.messages()[0]["call_id"] == t1.call_id and b.messages() == []

            for _ in range(25):  # the bot echoes half a second: something to clear
                await t1.send(t1.media(ulaw_payload(1)))
            await t1.wait_audio(160 * 10)
            assert (await api(b.port, "POST", f"/calls/{t1.call_id}/clear", {}))[0] == 200
            await t1.wait_until(lambda f: "clear" in f.kinds())

            status, body = await api(b.port, "POST", f"/calls/{p1.call_id}/dtmf",
                                     {"digits": "42#"})
            assert (status, body.get("via")) == (200, "stream"), body
            await p1.wait_until(lambda f: "dtmf" in f.kinds())
            # A's answer travels back as it is: Twilio cannot (409); bad digits: 400.
            assert (await api(b.port, "POST", f"/calls/{t1.call_id}/dtmf",
                              {"digits": "1"}))[0] == 409
            assert (await api(b.port, "POST", f"/calls/{t1.call_id}/dtmf",
                              {"digits": "?"}))[0] == 400
            assert (await api(b.port, "POST", "/calls/CAunknown/hangup", {}))[0] == 404

            status, body = await api(b.port, "POST", f"/calls/{t1.call_id}/hangup", {})
            assert status == 200, body
            assert (await t1.closed())[0] == 1000

            async def t1_gone() -> bool:
                return await call_ids(b.port) == {p1.call_id, t2.call_id}

            await eventually(t1_gone)


@pytest.mark.asyncio
async def test_a_killed_instances_calls_leave_the_registry(tmp_path: Path) -> None:
    async with cluster(tmp_path, 2) as (_redis, (a, b)):
        doomed, kept = provider_call("telnyx"), provider_call("twilio")
        async with kept.connect(b):  # type: ignore[arg-type]
            await _live(kept, b)
            fake = doomed
            async with fake.connect(a):  # type: ignore[arg-type]
                await _live(fake, a)

                async def listed() -> bool:  # registration is a task: it may trail the echo
                    return await call_ids(b.port) == {doomed.call_id, kept.call_id}

                await eventually(listed)
                a.kill()  # SIGKILL: no goodbye, its entries just stop being renewed

                async def expired() -> bool:
                    return await call_ids(b.port) == {kept.call_id}

                await eventually(expired, timeout=10 * float(TTL))
                status, _ = await api(b.port, "POST", f"/calls/{doomed.call_id}/hangup", {})
                assert status == 404


@pytest.mark.asyncio
async def test_redis_stopping_mid_call_loses_no_audio(tmp_path: Path) -> None:
    async with cluster(tmp_path, 2) as (redis, (a, b)):
        calls = [(provider_call("twilio"), a), (provider_call("plivo"), b)]
        async with contextlib.AsyncExitStack() as stack:
            for fake, instance in calls:
                await stack.enter_async_context(fake.connect(instance))  # type: ignore[arg-type]
                await fake.open()
                fake.start_pump()
            frames = 100
            sent = ulaw_payload(frames, seed=5)
            for i in range(frames):
                if i == frames // 2:
                    redis.stop()
                for fake, _ in calls:
                    await fake.send(fake.media(sent[i * 160:(i + 1) * 160]))
                await asyncio.sleep(0.01)
            for fake, _ in calls:
                assert (await fake.wait_audio(len(sent)))[:len(sent)] == sent

            # The API says 503 for what needs Redis, and still serves a local call.
            status, body = await api(a.port, "GET", "/calls")
            assert status == 503 and "redis" in body["error"]
            own, other = calls[0][0].call_id, calls[1][0].call_id
            assert (await api(a.port, "POST", f"/calls/{own}/message", {"n": 1}))[0] == 200
            assert (await api(a.port, "POST", f"/calls/{other}/message", {"n": 1}))[0] == 503
            # A new stream's token cannot be checked: refused (fail closed).
            late = provider_call("twilio")
            async with late.connect(a):  # type: ignore[arg-type]
                await late.open()
                code, reason = await late.closed()
            assert code == 1008, reason
            await _metrics_count_the_refusal(a)

            # Redis back (empty: a restart without persistence): the heartbeats put every
            # live call back and the subscriptions come back, so commands cross again.
            again = RedisServer(redis.port)
            try:
                await again.ready()

                async def relisted() -> bool:
                    status, body = await api(b.port, "GET", "/calls")
                    return status == 200 and {r["call_id"] for r in body["calls"]} == {
                        own, other}

                await eventually(relisted)
                status, body = await api(b.port, "POST", f"/calls/{own}/message", {"n": 2})
                assert status == 200, body
            finally:
                again.stop()
    assert "shared state is unreachable (failing closed)" in a.text()
    assert "redis unreachable" in a.text() and "redis reachable again" in a.text()


async def _metrics_count_the_refusal(a: Instance) -> None:
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{a.port}/metrics") as response:
        metrics = await response.text()
    assert 'mediastream_cluster_tokens_refused_total{reason="unreachable"} 1.0' in metrics
    assert "mediastream_cluster_errors_total" in metrics


@pytest.mark.asyncio
async def test_a_holder_that_does_not_answer_in_time_is_a_504(tmp_path: Path) -> None:
    """B waits ``command_timeout`` for A's answer, then says 504 (A's provider REST API
    here takes longer than that to answer a transfer)."""
    slow_hits: list[str] = []

    async def slow(request: web.Request) -> web.Response:
        slow_hits.append(request.path)
        await asyncio.sleep(5)
        return web.json_response({"data": {"result": "ok"}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    rest_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", rest_port).start()
    redis = RedisServer()
    a = b = None
    try:
        await redis.ready()
        common = ("--redis-url", redis.url, "--command-timeout", "1")
        a = Instance(tmp_path, "a", *common, env={
            "TELNYX_API_KEY": "KEY", "TELNYX_API_BASE_URL": f"http://127.0.0.1:{rest_port}"})
        b = Instance(tmp_path, "b", *common)
        await asyncio.gather(a.ready(), b.ready())
        fake = provider_call("telnyx")
        async with fake.connect(a):  # type: ignore[arg-type]
            await _live(fake, a)

            async def listed() -> bool:
                return fake.call_id in await call_ids(b.port)

            await eventually(listed)
            status, body = await api(b.port, "POST", f"/calls/{fake.call_id}/transfer",
                                     {"to": "+15551230000"})
            assert status == 504, body
            assert slow_hits and slow_hits[0].endswith("/actions/transfer")
    finally:
        for instance in (a, b):
            if instance is not None:
                instance.kill()
        redis.stop()
        await runner.cleanup()
