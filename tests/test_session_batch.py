"""Batched resampling: the session's one path per direction, and the batcher.

Every resampler step of a session goes to its :class:`ResampleBatcher`, which converts
it at once or -- as in a server -- with other calls' steps at the end of the loop turn.
While a direction has a step out, what comes next in that direction waits in the
session, so the bot and the caller get everything in order either way. Real sessions,
real resamplers, a real event loop, real servers on 127.0.0.1: every result is compared
with what converting each step at once produces.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _util_server import echo_call, running_server

from audiocodecs.g711 import ulaw_encode
from audiocodecs.resample import StreamResampler
from mediastream.call import CallEnded, DtmfPressed, InboundAudio
from mediastream.echo import echo_bot
from mediastream.protocols.events import (
    AudioReceived,
    DtmfReceived,
    MediaFormat,
    SendAudio,
    StreamStopped,
)
from mediastream.server import server as server_module
from mediastream.session import CallSession, Conversion, ResampleBatcher
from tests._util_session import PCMU_8K, Recorder, call_info, end_turn, tone


def _media(n: int, seed: int = 0, fmt: MediaFormat = PCMU_8K) -> list[AudioReceived]:
    """``n`` provider frames of a tone (20 ms μ-law), numbered from chunk 1."""
    codes = ulaw_encode(tone(440.0 + 60 * seed, 0.02 * n, 8000)).tobytes()
    return [AudioReceived(codes[i * 160 : (i + 1) * 160], fmt, chunk=i + 1) for i in range(n)]


def _bot_pcm(n: int, seed: int = 0) -> list[bytes]:
    pcm = tone(300.0 + 50 * seed, 0.02 * n, 16000).tobytes()
    return [pcm[i * 640 : (i + 1) * 640] for i in range(n)]


def _wire(session: CallSession, now: float) -> bytes:
    return b"".join(c.payload for c in session.poll(now) if isinstance(c, SendAudio))


def _pair() -> tuple[CallSession, Recorder, CallSession, Recorder, list[Callable[[], None]]]:
    """A reference session (each step at once) and one whose steps wait for the end of a
    loop turn the test runs itself (``end_turn``)."""
    turns: list[Callable[[], None]] = []
    ref_host, host = Recorder(), Recorder()
    reference = CallSession(call_info(), ref_host, now=0.0)
    session = CallSession(call_info(), host, now=0.0, batcher=ResampleBatcher(turns.append))
    return reference, ref_host, session, host, turns


def test_steps_waiting_for_the_turn_give_the_bot_what_at_once_gives() -> None:
    reference, ref_host, session, host, turns = _pair()
    frames = _media(12)
    for i, event in enumerate(frames):
        reference.receive_event(event, i * 0.02)
        session.receive_event(event, i * 0.02)
        if i % 3 == 2:
            end_turn(turns)
    reference.receive_event(StreamStopped(), 1.0)
    session.receive_event(StreamStopped(), 1.0)
    end_turn(turns)
    assert host.events == ref_host.events
    assert host.events[-1] == CallEnded("stop")
    assert session.stats.frames_in == reference.stats.frames_in == 12
    assert session.stats.bot_frames_in == reference.stats.bot_frames_in


def test_what_comes_behind_a_step_out_waits_and_the_driver_is_told_when_to_go_on() -> None:
    _, _, session, host, turns = _pair()
    frames = _media(3)
    session.receive_event(frames[0], 0.0)
    assert not session.accepting  # the first frame's step is out
    session.receive_event(frames[1], 0.02)  # a driver that did not stop: it waits, in order
    session.receive_event(DtmfReceived("4"), 0.03)
    assert host.events == [] and host.resumes == 0
    end_turn(turns)
    assert [type(e) for e in host.events] == [InboundAudio, InboundAudio, DtmfPressed]
    assert session.accepting and host.resumes == 1


def test_a_step_converted_at_once_never_makes_the_driver_wait() -> None:
    host = Recorder()
    session = CallSession(call_info(), host, now=0.0)
    for i, event in enumerate(_media(5)):
        session.receive_event(event, i * 0.02)
        assert session.accepting
    assert len(host.events) == 5 and host.resumes == 0


def test_the_end_waits_for_the_steps_out_and_loses_nothing() -> None:
    reference, ref_host, session, host, turns = _pair()
    frames = _media(4)
    pcm = _bot_pcm(4)
    for i, event in enumerate(frames):
        end_turn(turns)  # a loop turn ends; the last one's steps stay out
        reference.receive_event(event, 0.0)
        session.receive_event(event, 0.0)
        reference.send_audio(pcm[i], 16000, 0.0)
        session.send_audio(pcm[i], 16000, 0.0)
    assert turns  # steps out in both directions
    reference.end("hangup", 0.1)
    session.end("hangup", 0.1)
    assert session.ended
    end_turn(turns)
    assert host.events == ref_host.events
    assert host.events[-1] == CallEnded("hangup")
    assert sum(isinstance(e, CallEnded) for e in host.events) == 1


@pytest.mark.parametrize("action", ["send_audio", "end_utterance", "clear"])
def test_bot_side_actions_behind_a_step_out_keep_their_order(action: str) -> None:
    reference, _, session, _, turns = _pair()
    pcm = _bot_pcm(4)
    for chunk in pcm[:3]:
        end_turn(turns)
        reference.send_audio(chunk, 16000, 0.0)
        session.send_audio(chunk, 16000, 0.0)
    assert turns  # the third chunk's step is out
    if action == "send_audio":
        reference.send_audio(pcm[3], 16000, 0.0)
        session.send_audio(pcm[3], 16000, 0.0)  # waits behind it
        assert session.queued_s == pytest.approx(reference.queued_s)
    elif action == "end_utterance":
        reference.end_utterance(0.0)
        session.end_utterance(0.0)
    else:
        assert reference.clear(0.0) == session.clear(0.0)  # at once, the step out voided
    end_turn(turns)
    assert _wire(session, 0.5) == _wire(reference, 0.5)
    assert session.all_played == reference.all_played


def test_bot_audio_converted_at_the_turn_is_paced_and_played_like_at_once() -> None:
    reference, _, session, host, turns = _pair()
    got, want = b"", b""
    for i, chunk in enumerate(_bot_pcm(30)):
        now = i * 0.02
        reference.send_audio(chunk, 16000, now)
        session.send_audio(chunk, 16000, now)
        end_turn(turns)
        got += _wire(session, now)
        want += _wire(reference, now)
    assert got == want and len(got) >= 25 * 160
    assert session.queued_s == pytest.approx(reference.queued_s)
    assert host.wakes >= 29  # the host was told each time audio became due


def test_bad_bot_audio_behind_a_step_out_is_refused_on_the_bots_stack() -> None:
    _, _, session, _, turns = _pair()
    pcm = _bot_pcm(2)
    session.send_audio(pcm[0], 16000, 0.0)
    session.send_audio(pcm[1], 16000, 0.0)
    assert turns
    with pytest.raises(ValueError, match="not supported"):
        session.send_audio(pcm[1], 22050, 0.0)
    with pytest.raises(TypeError, match="bytes-like"):
        session.send_audio("not audio", 16000, 0.0)  # type: ignore[arg-type]


class _FailsFor(ResampleBatcher):
    """Converts as usual, except one session's steps of one direction, which come back
    failed (what the batcher delivers when a conversion raises)."""

    def __init__(self, victim: list[CallSession], outbound: bool) -> None:
        super().__init__()
        self._victim = victim
        self._outbound = outbound

    def submit(self, rs: StreamResampler, kind: Conversion, data: bytes, done: Any) -> None:
        if getattr(done, "__self__", None) is self._victim[0] and kind.inbound != self._outbound:
            done(RuntimeError("the filter failed"))
            return
        super().submit(rs, kind, data, done)


@pytest.mark.parametrize("direction", ["inbound", "outbound"])
def test_a_step_that_fails_is_reported_to_the_host_and_nothing_is_delivered(
    direction: str,
) -> None:
    hosts = [Recorder(), Recorder()]
    sessions: list[CallSession] = []
    batcher = _FailsFor(sessions, outbound=direction == "outbound")
    sessions += [CallSession(call_info(), h, now=0.0, batcher=batcher) for h in hosts]
    for session in sessions:
        session.receive_event(_media(1)[0], 0.0)
        session.send_audio(_bot_pcm(1)[0], 16000, 0.0)
    bad, good = hosts
    assert len(bad.failures) == 1 and "filter failed" in str(bad.failures[0])
    assert good.failures == [] and len(good.events) == 1
    assert (bad.events == []) == (direction == "inbound")


# --------------------------------------------------------------------------- batcher


def _prepared(in_rate: int, out_rate: int, n: int, count: int) -> list[StreamResampler]:
    streams = [StreamResampler(in_rate, out_rate) for _ in range(count)]
    for s in streams:
        s.process(np.zeros(n, dtype=np.int16))
    return streams


def _codes(seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, 160, dtype=np.uint8).tobytes()


@pytest.mark.asyncio
async def test_the_batcher_converts_a_loop_turn_together_and_delivers_each_result() -> None:
    loop = asyncio.get_running_loop()
    batcher = ResampleBatcher(loop.call_soon, max_batch=4)
    assert batcher.batching and batcher.batching_now
    ups = _prepared(8000, 16000, 160, 6)
    twins = _prepared(8000, 16000, 160, 6)
    downs = _prepared(16000, 8000, 320, 3)
    down_twins = _prepared(16000, 8000, 320, 3)
    got: dict[str, bytes | Exception] = {}

    def keep(name: str) -> Any:
        return lambda data: got.__setitem__(name, data)

    for i, rs in enumerate(ups):
        batcher.submit(rs, Conversion.ULAW_IN, _codes(i), keep(f"in{i}"))
    pcm = [np.random.default_rng(i).integers(-9000, 9000, 320).astype(np.int16) for i in range(3)]
    for i, rs in enumerate(downs):
        kind = Conversion.ALAW_OUT if i == 2 else Conversion.ULAW_OUT
        batcher.submit(rs, kind, pcm[i].tobytes(), keep(f"out{i}"))
    assert batcher.pending and not got
    await asyncio.sleep(0)  # the end of this loop turn
    await asyncio.sleep(0)
    assert not batcher.pending
    for i, rs in enumerate(twins):
        assert got[f"in{i}"] == rs.process_ulaw(_codes(i)).tobytes()
    for i, rs in enumerate(down_twins):
        encode = rs.process_to_alaw if i == 2 else rs.process_to_ulaw
        assert got[f"out{i}"] == encode(pcm[i]).tobytes()
    # 6 inbound in products of at most 4; 2 μ-law and 1 A-law outbound (alone: one step)
    assert (batcher.frames, batcher.products) == (9, 4)


@pytest.mark.asyncio
async def test_batch_from_converts_at_once_while_turns_are_small_and_probes_for_load() -> None:
    """``batch_from``: a turn of one frame per product (small) makes the next
    ``probe_every`` steps convert at once; then one turn batches again, and a turn of
    many frames per product keeps it batching. Every result equals the stream's own."""
    loop = asyncio.get_running_loop()
    batcher = ResampleBatcher(loop.call_soon, batch_from=2.5, probe_every=4)
    ups = _prepared(8000, 16000, 160, 8)
    twins = _prepared(8000, 16000, 160, 8)
    got: list[bytes | Exception] = []
    want: list[bytes] = []

    def step(i: int, seed: int) -> None:
        batcher.submit(ups[i], Conversion.ULAW_IN, _codes(seed), got.append)
        want.append(twins[i].process_ulaw(_codes(seed)).tobytes())

    step(0, 1)  # a turn with one frame: 1 frame per product < 2.5
    assert batcher.pending and not got
    await asyncio.sleep(0)
    assert not batcher.batching_now and got == want
    for seed in range(4):  # probe_every steps convert at once: delivered before return
        step(seed % 2, 10 + seed)
        assert not batcher.pending and got == want
    assert batcher.batching_now  # the probe: this turn batches
    for i in range(8):  # a busy turn: 8 frames in one product, the average rises to 2.75
        step(i, 20 + i)
    assert batcher.pending and len(got) == 5
    await asyncio.sleep(0)
    assert got == want and batcher.batching_now
    assert (batcher.frames, batcher.products) == (13, 6)


@pytest.mark.asyncio
async def test_a_server_at_low_load_converts_at_once_with_the_same_audio() -> None:
    """Two calls on the server's own policy (``BATCH_FROM``): turns hold a frame or two,
    so nearly every step converts at once, and the audio is the unbatched server's."""
    seeds = [1, 2]
    async with (
        running_server(echo_bot, bot_sample_rate=16000) as adaptive,
        running_server(echo_bot, bot_sample_rate=16000, batch_resampling=False) as single,
    ):
        got, want = await asyncio.gather(
            _echo_calls(adaptive.port, seeds, 60), _echo_calls(single.port, seeds, 60))
        frames, products = _batch_counts(adaptive.metrics.render()[0].decode())
    assert got == want
    assert frames >= len(seeds) * 50 * 2
    assert products > 0.9 * frames


def test_without_defer_every_step_is_a_batch_of_one_delivered_at_once() -> None:
    batcher = ResampleBatcher()
    assert not batcher.batching and not batcher.batching_now
    rs, twin = _prepared(8000, 16000, 160, 2)
    got: list[bytes | Exception] = []
    batcher.submit(rs, Conversion.ULAW_IN, _codes(1), got.append)
    assert got == [twin.process_ulaw(_codes(1)).tobytes()] and not batcher.pending
    assert (batcher.frames, batcher.products) == (1, 1)


@pytest.mark.asyncio
async def test_results_submitted_while_flushing_and_a_flush_from_a_receiver_keep_order() -> None:
    batcher = ResampleBatcher(asyncio.get_running_loop().call_soon)
    ups = _prepared(8000, 16000, 160, 3)
    downs = _prepared(16000, 8000, 320, 3)
    order: list[str] = []

    def inbound_done(i: int) -> Any:
        def done(pcm: bytes | Exception) -> None:
            assert isinstance(pcm, bytes)
            order.append(f"in{i}")
            # A bot answering at once: its audio joins the outbound groups of this flush.
            batcher.submit(downs[i], Conversion.ULAW_OUT, pcm, lambda _: order.append(f"out{i}"))
            if i == 1:
                batcher.flush()  # a flush from inside a delivery (a shutdown settling)
        return done

    for i, rs in enumerate(ups):
        batcher.submit(rs, Conversion.ULAW_IN, _codes(i), inbound_done(i))
    batcher.flush()
    assert order[:2] == ["in0", "in1"]
    assert sorted(order) == ["in0", "in1", "in2", "out0", "out1", "out2"]
    assert order.index("in2") < order.index("out2") and not batcher.pending


@pytest.mark.asyncio
async def test_a_receiver_that_raises_harms_no_other_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batcher = ResampleBatcher(asyncio.get_running_loop().call_soon)
    ups = _prepared(8000, 16000, 160, 3)
    got: list[int] = []

    def bad(_: bytes | Exception) -> None:
        raise ValueError("a broken receiver")

    batcher.submit(ups[0], Conversion.ULAW_IN, _codes(0), lambda _: got.append(0))
    batcher.submit(ups[1], Conversion.ULAW_IN, _codes(1), bad)
    batcher.submit(ups[2], Conversion.ULAW_IN, _codes(2), lambda _: got.append(2))
    with caplog.at_level(logging.ERROR, logger="mediastream.session"):
        batcher.flush()
    assert got == [0, 2]
    assert "delivering a result failed" in caplog.text


@pytest.mark.asyncio
async def test_streams_that_cannot_be_batched_are_converted_one_by_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fresh stream (not in its steady state) is converted on its own, its group still
    batched; a step whose conversion raises comes back as the exception, to its own
    receiver only."""
    batcher = ResampleBatcher(asyncio.get_running_loop().call_soon)
    ups = _prepared(8000, 16000, 160, 3)
    twins = _prepared(8000, 16000, 160, 3)
    ups[1] = StreamResampler(8000, 16000)  # not prepared: converted alone
    fresh_twin = StreamResampler(8000, 16000)
    downs = _prepared(16000, 8000, 320, 2)
    got: dict[str, bytes | Exception] = {}
    for i, rs in enumerate(ups):
        batcher.submit(rs, Conversion.ULAW_IN, _codes(i),
                       lambda d, i=i: got.__setitem__(f"in{i}", d))
    odd = b"\x01" * 641  # an odd byte count: no conversion can take it
    for i, rs in enumerate(downs):
        batcher.submit(rs, Conversion.ULAW_OUT, odd, lambda d, i=i: got.__setitem__(f"x{i}", d))
    with caplog.at_level(logging.ERROR, logger="mediastream.session"):
        batcher.flush()
    assert got["in0"] == twins[0].process_ulaw(_codes(0)).tobytes()
    assert got["in1"] == fresh_twin.process_ulaw(_codes(1)).tobytes()
    assert got["in2"] == twins[2].process_ulaw(_codes(2)).tobytes()
    assert isinstance(got["x0"], Exception) and isinstance(got["x1"], Exception)
    assert not batcher.pending
    assert caplog.text.count("resampling a frame failed") == 2


async def _echo_calls(port: int, seeds: list[int], frames: int) -> dict[int, bytes]:
    """Concurrent echo calls, one per seed; the audio each one got back."""
    got = await asyncio.gather(*(echo_call(port, frames, seed) for seed in seeds))
    return dict(zip(seeds, got, strict=True))


@pytest.mark.asyncio
async def test_batched_resampling_sends_every_call_exactly_the_unbatched_audio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Twelve concurrent 16 kHz echo calls on a batching server and on one that converts
    frame by frame: each call gets back the same bytes from both, and the batching
    server did convert many calls' frames in one product. (Batching forced: at this
    load the server's own policy may convert at once, tested below.)"""
    monkeypatch.setattr(server_module, "BATCH_FROM", None)
    seeds = list(range(12))
    async with (
        running_server(echo_bot, bot_sample_rate=16000) as batched,
        running_server(echo_bot, bot_sample_rate=16000, batch_resampling=False) as single,
    ):
        assert batched.batcher.batching and not single.batcher.batching
        got, want = await asyncio.gather(
            _echo_calls(batched.port, seeds, 40), _echo_calls(single.port, seeds, 40)
        )
        frames, products = _batch_counts(batched.metrics.render()[0].decode())
        single_frames, single_products = _batch_counts(single.metrics.render()[0].decode())
    for seed in seeds:
        assert got[seed] == want[seed], seed
    assert len({want[seed] for seed in seeds}) == len(seeds)  # distinct calls, distinct audio
    assert frames >= len(seeds) * 30 * 2  # both directions, nearly every frame
    assert products < frames  # several calls per product
    assert single_products == single_frames >= len(seeds) * 30 * 2  # each step alone


def _batch_counts(exposition: str) -> tuple[float, float]:
    values = {}
    for line in exposition.splitlines():
        if line.startswith("mediastream_resample_batch_"):
            name, value = line.split()
            values[name] = float(value)
    return (values["mediastream_resample_batch_frames_total"],
            values["mediastream_resample_batch_products_total"])


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        ResampleBatcher(max_batch=0)
