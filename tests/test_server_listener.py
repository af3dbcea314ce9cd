"""Call.set_listener: events handed to the bot synchronously instead of queued.

Unit tests drive a real :class:`LiveCall` (its connection side is a recorder of what the
call asks of it); the end-to-end tests run the server with a real websockets client
(the built-in echo consumes calls through a listener, so every echo test covers the
happy path too).
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from _util_server import failing_call_beside_a_good_one, running_server, scaled

from mediastream.call import (
    Call,
    CallEnded,
    CallEvent,
    DtmfPressed,
    InboundAudio,
    PlayoutStarted,
)
from mediastream.protocols.events import CallInfo, Capabilities, Command, MediaFormat
from mediastream.server.live import LiveCall
from mediastream.server.log import CallLogger


class Link:
    """The connection side of a LiveCall, recording what the call asks of it."""

    def __init__(self) -> None:
        self.listener_errors: list[Exception] = []
        self.dropped = 0

    def wake(self) -> None:
        pass

    def send_now(self, commands: list[Command]) -> None:
        pass

    async def hangup(self, reason: str) -> None:
        pass

    def on_bot_events_dropped(self, count: int) -> None:
        self.dropped += count

    def on_bot_audio_overflow(self, queued_s: float, limit_s: float) -> None:
        pass

    def on_listener_error(self, exc: Exception) -> None:
        self.listener_errors.append(exc)


def make_call(max_events: int = 100) -> tuple[LiveCall, Link]:
    fmt = MediaFormat("pcmu", 8000)
    info = CallInfo(provider="twilio", call_id="CA1", stream_id="MZ1",
                    inbound_format=fmt, outbound_format=fmt)
    link = Link()
    log = CallLogger(logging.getLogger("test.listener"), "CA1")
    call = LiveCall(info, None, Capabilities(), link, log,  # type: ignore[arg-type]
                    sample_rate=8000, max_events=max_events)
    return call, link


def audio(n: int) -> InboundAudio:
    return InboundAudio(bytes([n]) * 320, 8000)


@pytest.mark.asyncio
async def test_queued_events_reach_the_listener_first_then_new_ones_in_order() -> None:
    call, _ = make_call()
    call.push([audio(1), DtmfPressed("5"), audio(2)])
    got: list[CallEvent] = []
    call.set_listener(got.append)
    assert got == [audio(1), DtmfPressed("5"), audio(2)]
    call.push([audio(3), PlayoutStarted()])
    call.push([audio(4), CallEnded("stop")])
    assert got == [audio(1), DtmfPressed("5"), audio(2), audio(3), PlayoutStarted(),
                   audio(4), CallEnded("stop")]
    # receive() has nothing but the end, and keeps returning it.
    assert await call.receive() == CallEnded("stop")
    assert await call.receive() == CallEnded("stop")
    # Told once; nothing after the end reaches the listener.
    call.end("later")
    call.push([audio(5)])
    assert got[-1] == CallEnded("stop") and got.count(CallEnded("stop")) == 1


@pytest.mark.asyncio
async def test_a_listener_set_after_the_end_is_told_the_end_and_let_go() -> None:
    call, _ = make_call()
    first: list[CallEvent] = []
    call.set_listener(first.append)
    call.end("stop")
    assert first == [CallEnded("stop")]
    call.push([audio(1)])  # after the end: queued, the first listener is gone
    late: list[CallEvent] = []
    call.set_listener(late.append)  # a second consumer: it sees the end too
    assert late == [audio(1), CallEnded("stop")]
    assert first == [CallEnded("stop")]
    call.push([audio(2)])
    assert late == [audio(1), CallEnded("stop")]
    assert call._listener is None  # not held: a finished call keeps no cycle through it


@pytest.mark.asyncio
async def test_receive_sleeps_through_listened_events_and_wakes_for_the_end() -> None:
    call, _ = make_call()
    got: list[CallEvent] = []
    call.set_listener(got.append)
    waiting = asyncio.ensure_future(call.receive())
    await asyncio.sleep(0)
    for n in range(10):
        call.push([audio(n)])
        await asyncio.sleep(0)
        assert not waiting.done()
    call.end("hangup")
    assert await asyncio.wait_for(waiting, scaled(1.0)) == CallEnded("hangup")
    assert len(got) == 11 and got[-1] == CallEnded("hangup")


@pytest.mark.asyncio
async def test_no_listener_means_the_bounded_queue_again() -> None:
    call, link = make_call(max_events=3)
    got: list[CallEvent] = []
    call.set_listener(got.append)
    call.push([audio(1)])
    call.set_listener(None)
    call.push([audio(n) for n in range(2, 7)])  # five into a bound of three
    assert got == [audio(1)]
    assert [await call.receive() for _ in range(3)] == [audio(4), audio(5), audio(6)]
    assert link.dropped == 2


@pytest.mark.asyncio
async def test_a_raising_listener_is_dropped_and_reported_once() -> None:
    call, link = make_call()
    seen: list[CallEvent] = []

    def listener(event: CallEvent) -> None:
        seen.append(event)
        if type(event) is DtmfPressed:
            raise ValueError("bad key handling")

    call.set_listener(listener)
    call.push([audio(1), DtmfPressed("1"), audio(2)])
    assert seen == [audio(1), DtmfPressed("1")]
    assert [type(e) for e in link.listener_errors] == [ValueError]
    # The listener is gone: later events queue (the connection is ending the call).
    call.push([audio(3)])
    assert seen == [audio(1), DtmfPressed("1")]
    assert await call.receive() == audio(3)


class RaisingListenerBot:
    def __init__(self) -> None:
        self.frames = 0

    async def __call__(self, call: Call) -> None:
        def on_event(event: CallEvent) -> None:
            if type(event) is InboundAudio:
                self.frames += 1
                if self.frames == 3:
                    raise RuntimeError("secret internals /etc/passwd")
                call.send_audio(event.pcm, event.sample_rate)

        call.set_listener(on_event)
        await call.receive()


@pytest.mark.asyncio
async def test_a_listener_that_raises_ends_only_its_call_with_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from mediastream.agents import AgentRegistry
    from mediastream.echo import echo_bot

    bad_bot = RaisingListenerBot()
    registry = AgentRegistry(echo_bot, {"bad": bad_bot})
    async with running_server(registry) as server:
        bad, closed = await failing_call_beside_a_good_one(
            server, "bad", bad_frames=5, good="plivo")
    assert closed == (1011, "bot error")  # no internals on the wire
    assert bad_bot.frames == 3  # nothing reached it after it raised
    failures = [r for r in caplog.records if "event listener raised" in r.getMessage()]
    assert len(failures) == 1 and bad.call_id in failures[0].getMessage()
    assert failures[0].exc_info is not None
