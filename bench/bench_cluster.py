"""100 calls over two ``mediastream serve`` instances on one Redis, commands flying.

``make bench-cluster`` (or ``python -m bench cluster [--calls N] [--seconds S]``): starts a
``redis-server`` on a free loopback port and two instances sharing it, then opens
``--calls`` streams alternately on the two (Twilio and Plivo), each sending ``--seconds``
of μ-law at real-time pace to an echo bot, while a client sends every call, through the
instance that does NOT hold it, a ``message`` and a ``clear`` (a ``dtmf`` too on Plivo
calls), and reads ``GET /calls`` from both instances now and then.

"Nothing lost" is checked, not timed: the two instances' ``/metrics`` count every media
frame every caller sent (``mediastream_frames_in_total``), none filled in as missing or
dropped as late, and no event dropped on its way to a bot; every command answers 200;
every message reaches the right bot exactly once; every call ends with 1000. (The echo
coming back is cut by the clears, by design, so it is not compared byte for byte here;
tests/test_cluster_redis.py does that.) It prints the counts and the command latency
percentiles (a figure, not a pass mark). Skips, saying so, without redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


_COUNTED = ("mediastream_frames_in_total", "mediastream_frames_filled_total",
            "mediastream_frames_late_dropped_total", "mediastream_bot_events_dropped_total")


async def _metrics(port: int) -> dict[str, float]:
    """The sums of the :data:`_COUNTED` series on one instance's ``/metrics``."""
    import aiohttp

    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    sums = dict.fromkeys(_COUNTED, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cluster")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(list(argv or []))
    sys.path.insert(0, str(ROOT / "tests"))
    from _util_cluster import REDIS

    if REDIS is None:
        print("bench cluster: skipped, redis-server is not installed (make bench-cluster "
              "installs it)")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        return asyncio.run(_run(Path(tmp), args.calls, args.seconds))


async def _run(tmp: Path, calls: int, seconds: float) -> int:
    from _util_cluster import RedisServer, api, instances, provider_call
    from _util_server import ulaw_payload

    redis = RedisServer()
    failures: list[str] = []
    latencies: list[float] = []
    listed: list[int] = []
    try:
        await redis.ready()
        async with instances(tmp, 2, "--redis-url", redis.url, "--max-calls", "200") as pair:
            frames = round(seconds / 0.02)
            fakes = [(provider_call("plivo" if i % 2 else "twilio"), pair[i % 2], pair[1 - i % 2])
                     for i in range(calls)]
            sent = ulaw_payload(frames, seed=11)

            async def command(port: int, call_id: str, action: str, body: dict[str, Any]) -> None:
                began = time.perf_counter()
                status, reply = await api(port, "POST", f"/calls/{call_id}/{action}", body)
                latencies.append(time.perf_counter() - began)
                if status != 200:
                    failures.append(f"{action} {call_id}: {status} {reply}")

            async def one(index: int) -> None:
                fake, holder, other = fakes[index]
                async with fake.connect(holder):  # type: ignore[arg-type]
                    await fake.open()
                    fake.start_pump()
                    start = time.perf_counter()
                    for i in range(frames):
                        await fake.send(fake.media(sent[i * 160:(i + 1) * 160]))
                        if i == frames // 3:
                            await command(other.port, fake.call_id, "message", {"n": index})
                        if i == frames // 2 and fake.provider == "plivo":
                            await command(other.port, fake.call_id, "dtmf", {"digits": "1"})
                        if i == 2 * frames // 3:
                            await command(other.port, fake.call_id, "clear", {})
                        delay = start + (i + 1) * 0.02 - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    await fake.wait_until(lambda f: len(f.audio) > 0, timeout=10)
                    await fake.send(fake.stop())
                    code, _ = await fake.closed(timeout=10)
                    if code != 1000:
                        failures.append(f"{fake.call_id}: closed {code}")

            async def watch() -> None:
                while True:
                    await asyncio.sleep(0.5)
                    for instance in pair:
                        status, body = await api(instance.port, "GET", "/calls")
                        if status != 200:
                            failures.append(f"GET /calls: {status}")
                        else:
                            listed.append(len(body["calls"]))

            began = time.perf_counter()
            watcher = asyncio.create_task(watch())
            await asyncio.gather(*(one(i) for i in range(calls)))
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            wall = time.perf_counter() - began
            totals = {name: 0.0 for name in _COUNTED}
            for instance in pair:
                for name, value in (await _metrics(instance.port)).items():
                    totals[name] += value
            if totals["mediastream_frames_in_total"] != calls * frames:
                failures.append(f"frames in: {totals['mediastream_frames_in_total']:.0f}, "
                                f"sent {calls * frames}")
            for name in _COUNTED[1:]:
                if totals[name]:
                    failures.append(f"{name}: {totals[name]:.0f}")
            delivered = [m for instance in pair for m in instance.messages()]
            got = sorted((m["call_id"], m["message"]["n"]) for m in delivered)
            want = sorted((fake.call_id, i) for i, (fake, _h, _o) in enumerate(fakes))
            if got != want:
                failures.append(f"messages: {len(got)} delivered, {len(want)} sent; "
                                f"mismatched: {len(set(got) ^ set(want))}")
            wrong_place = [m for instance, other in (pair, pair[::-1])
                           for m in instance.messages()
                           if m["call_id"] not in {f.call_id for f, h, _o in fakes
                                                   if h is instance}]
            if wrong_place:
                failures.append(f"{len(wrong_place)} messages reached the wrong instance")
    finally:
        redis.stop()
    ms = sorted(1000 * x for x in latencies)
    print(f"calls {calls} over 2 instances, {seconds:g}s each, wall {wall:.1f}s")
    print(f"commands {len(ms)} (message, clear, dtmf on Plivo) through the other instance: "
          f"p50 {statistics.median(ms):.1f} ms, p95 {ms[int(0.95 * (len(ms) - 1))]:.1f} ms, "
          f"max {ms[-1]:.1f} ms")
    print(f"GET /calls samples {len(listed)}, most listed at once {max(listed, default=0)}")
    print(f"messages delivered {len(got)}/{len(want)}; media frames received "
          f"{totals['mediastream_frames_in_total']:.0f}/{calls * frames}")
    for line in failures[:20]:
        print("FAILED", line)
    print("nothing lost" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
