"""Batched resampling: the session's hand-out contract and the server's batcher.

The session hands the common-case conversion of a frame out (``defer_audio``,
``defer_send``) and settles before anything that must come after it; the batcher
converts what was handed out together, once per loop turn, and delivers each result to
its own receiver. Real sessions, real resamplers, a real event loop, real servers on
127.0.0.1: every result is compared with what converting frame by frame produces.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest
from _util_server import FakeProvider, running_server, ulaw_payload

from audiocodecs.g711 import ulaw_encode
from audiocodecs.resample import StreamResampler
from mediastream.call import CallEnded, CallEvent, DtmfPressed, InboundAudio
from mediastream.echo import echo_bot
from mediastream.protocols.events import (
    AudioReceived,
    DtmfReceived,
    MediaFormat,
    SendAudio,
    StreamStopped,
)
from mediastream.server.batch import ResampleBatcher
from mediastream.session import CallSession
from tests._util_session import PCMU_8K, call_info, tone

PCMA_8K = MediaFormat("pcma", 8000)


def _media(n: int, seed: int = 0, fmt: MediaFormat = PCMU_8K) -> list[AudioReceived]:
    """``n`` provider frames of a tone (20 ms μ-law), numbered from chunk 1."""
    codes = ulaw_encode(tone(440.0 + 60 * seed, 0.02 * n, 8000)).tobytes()
    return [AudioReceived(codes[i * 160 : (i + 1) * 160], fmt, chunk=i + 1) for i in range(n)]


def _bot_pcm(n: int, seed: int = 0) -> list[bytes]:
    pcm = tone(300.0 + 50 * seed, 0.02 * n, 16000).tobytes()
    return [pcm[i * 640 : (i + 1) * 640] for i in range(n)]


def _wire(session: CallSession, now: float) -> bytes:
    commands, _ = session.poll(now)
    return b"".join(c.payload for c in commands if isinstance(c, SendAudio))


class Settler:
    """What the server's batcher does for a session, in the simplest form: hold the
    handed-out conversions and complete them, one by one, when told (or settled)."""

    def __init__(self, session: CallSession) -> None:
        self.session = session
        self.inbound: list[tuple[StreamResampler, bytes]] = []
        self.outbound: list[tuple[StreamResampler, bytes]] = []
        self.delivered: list[CallEvent] = []
        self.settles = 0
        session.attach_batcher(self.settle)

    def settle(self) -> None:
        self.settles += 1
        for rs, payload in self.inbound:
            self.delivered += self.session.receive_converted(rs.process_ulaw(payload).tobytes())
        for rs, pcm in self.outbound:
            self.session.send_converted(rs.process_to_ulaw(pcm).tobytes(), 0.0)
        self.inbound.clear()
        self.outbound.clear()

    def feed(self, event: AudioReceived | DtmfReceived | StreamStopped, now: float) -> None:
        if isinstance(event, AudioReceived):
            step = self.session.defer_audio(event)
            if step is not None:
                assert step[1] == "pcmu"
                self.inbound.append((step[0], event.payload))
                return
        self.delivered += self.session.receive_event(event, now)

    def send(self, pcm: bytes, now: float) -> None:
        step = self.session.defer_send(pcm, 16000, now)
        if step is not None:
            self.outbound.append((step[0], pcm))
            return
        self.session.send_audio(pcm, 16000, now)


def test_handed_out_frames_give_the_bot_what_per_frame_conversion_gives() -> None:
    reference = CallSession(call_info(), now=0.0)
    session = CallSession(call_info(), now=0.0)
    settler = Settler(session)
    want: list[CallEvent] = []
    frames = _media(12)
    for i, event in enumerate(frames):
        want += reference.receive_event(event, i * 0.02)
        settler.feed(event, i * 0.02)
        if i % 3 == 2:
            settler.settle()
    want += reference.receive_event(StreamStopped(), 1.0)
    settler.feed(StreamStopped(), 1.0)
    assert settler.delivered == want
    assert session.stats.frames_in == reference.stats.frames_in == 12
    assert session.stats.bot_frames_in == reference.stats.bot_frames_in


def test_the_first_frame_and_odd_cases_are_converted_on_the_spot() -> None:
    session = CallSession(call_info(), now=0.0)
    Settler(session)
    first, second = _media(2)
    assert session.defer_audio(first) is None  # a fresh filter: the general path, padded
    session.receive_event(first, 0.0)
    assert session.defer_audio(AudioReceived(second.payload[:80], PCMU_8K, chunk=2)) is None
    out_of_order = AudioReceived(second.payload, PCMU_8K, chunk=5)
    assert session.defer_audio(out_of_order) is None  # the reorder buffer decides
    outbound_track = AudioReceived(second.payload, PCMU_8K, track="outbound", chunk=2)
    assert session.defer_audio(outbound_track) is None
    other_codec = AudioReceived(second.payload, PCMA_8K, chunk=2)
    assert session.defer_audio(other_codec) is None  # a format change is handled in place
    assert session.defer_audio(second) is not None
    assert session.defer_audio(second) is None  # one pending per direction at a time


def test_nothing_is_handed_out_without_a_batcher() -> None:
    session = CallSession(call_info(), now=0.0)
    first, second = _media(2)
    session.receive_event(first, 0.0)
    assert session.defer_audio(second) is None


def test_the_next_inbound_event_settles_first_so_the_bot_sees_the_order_it_came_in() -> None:
    session = CallSession(call_info(), now=0.0)
    settler = Settler(session)
    frames = _media(3)
    settler.feed(frames[0], 0.0)
    settler.feed(frames[1], 0.02)
    assert settler.inbound and settler.settles == 0
    settler.feed(DtmfReceived("4"), 0.03)  # must come after the frame before it
    assert settler.settles == 1
    kinds = [type(e) for e in settler.delivered]
    assert kinds == [InboundAudio, InboundAudio, DtmfPressed]


def test_the_end_settles_both_directions_and_loses_nothing() -> None:
    reference = CallSession(call_info(), now=0.0)
    session = CallSession(call_info(), now=0.0)
    settler = Settler(session)
    frames = _media(4)
    pcm = _bot_pcm(4)
    for i, event in enumerate(frames):
        settler.settle()  # a loop turn ends; the last one's frames stay handed out
        reference.receive_event(event, 0.0)
        settler.feed(event, 0.0)
        reference.send_audio(pcm[i], 16000, 0.0)
        settler.send(pcm[i], 0.0)
    assert settler.inbound and settler.outbound
    want = reference.end("hangup", 0.1)
    got = session.end("hangup", 0.1)
    assert settler.inbound == [] and settler.outbound == []
    assert [e for e in settler.delivered + got if not isinstance(e, InboundAudio)] == [
        CallEnded("hangup")
    ]
    ref_audio = b"".join(e.pcm for e in reference_audio(frames) if isinstance(e, InboundAudio))
    got_audio = b"".join(e.pcm for e in settler.delivered + got if isinstance(e, InboundAudio))
    assert got_audio == ref_audio
    assert want[-1] == CallEnded("hangup")


def reference_audio(frames: list[AudioReceived]) -> list[CallEvent]:
    session = CallSession(call_info(), now=0.0)
    out: list[CallEvent] = []
    for event in frames:
        out += session.receive_event(event, 0.0)
    return out + session.end("hangup", 0.1)


@pytest.mark.parametrize("action", ["send_audio", "end_utterance", "clear"])
def test_bot_side_actions_settle_pending_audio_first(action: str) -> None:
    reference = CallSession(call_info(), now=0.0)
    session = CallSession(call_info(), now=0.0)
    settler = Settler(session)
    pcm = _bot_pcm(4)
    for chunk in pcm[:3]:
        settler.settle()
        reference.send_audio(chunk, 16000, 0.0)
        settler.send(chunk, 0.0)
    assert settler.outbound and settler.settles == 3
    if action == "send_audio":
        reference.send_audio(pcm[3], 16000, 0.0)
        settler.send(pcm[3], 0.0)  # one pending per direction: this one settles
    elif action == "end_utterance":
        reference.end_utterance(0.0)
        session.end_utterance(0.0)
    else:
        assert reference.clear(0.0) == session.clear(0.0)
    assert settler.settles == 4 and not settler.outbound
    assert _wire(session, 0.5) == _wire(reference, 0.5)


def test_handed_out_bot_audio_is_paced_and_played_like_sent_audio() -> None:
    reference = CallSession(call_info(), now=0.0)
    session = CallSession(call_info(), now=0.0)
    settler = Settler(session)
    got, want = b"", b""
    for i, chunk in enumerate(_bot_pcm(30)):
        now = i * 0.02
        reference.send_audio(chunk, 16000, now)
        settler.send(chunk, now)
        settler.settle()
        got += _wire(session, now)
        want += _wire(reference, now)
    assert got == want and len(got) >= 25 * 160
    assert session.queued_s == pytest.approx(reference.queued_s)


def test_a_settle_that_leaves_work_pending_is_an_error_not_a_reordering() -> None:
    session = CallSession(call_info(), now=0.0)
    session.attach_batcher(lambda: None)
    first, second = _media(2)
    session.receive_event(first, 0.0)
    assert session.defer_audio(second) is not None
    with pytest.raises(RuntimeError, match="settle"):
        session.receive_event(DtmfReceived("1"), 0.02)


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
    batcher = ResampleBatcher(asyncio.get_running_loop(), max_batch=4)
    ups = _prepared(8000, 16000, 160, 6)
    twins = _prepared(8000, 16000, 160, 6)
    downs = _prepared(16000, 8000, 320, 3)
    down_twins = _prepared(16000, 8000, 320, 3)
    got: dict[str, bytes] = {}

    def keep(name: str) -> Any:
        return lambda data: got.__setitem__(name, data)

    for i, rs in enumerate(ups):
        batcher.add_inbound((rs, "pcmu"), _codes(i), keep(f"in{i}"))
    pcm = [np.random.default_rng(i).integers(-9000, 9000, 320).astype(np.int16) for i in range(3)]
    for i, rs in enumerate(downs):
        batcher.add_outbound((rs, "pcma" if i == 2 else "pcmu"), pcm[i].tobytes(), keep(f"out{i}"))
    assert batcher.pending and not got
    await asyncio.sleep(0)  # the end of this loop turn
    await asyncio.sleep(0)
    assert not batcher.pending
    for i, rs in enumerate(twins):
        assert got[f"in{i}"] == rs.process_ulaw(_codes(i)).tobytes()
    for i, rs in enumerate(down_twins):
        encode = rs.process_to_alaw if i == 2 else rs.process_to_ulaw
        assert got[f"out{i}"] == encode(pcm[i]).tobytes()
    # 6 inbound in products of at most 4, 2 μ-law + 1 A-law outbound (alone: per stream)
    assert batcher.frames == 9 and batcher.products == 4


@pytest.mark.asyncio
async def test_results_added_while_flushing_and_a_flush_from_a_receiver_keep_order() -> None:
    batcher = ResampleBatcher(asyncio.get_running_loop())
    ups = _prepared(8000, 16000, 160, 3)
    downs = _prepared(16000, 8000, 320, 3)
    order: list[str] = []

    def inbound_done(i: int) -> Any:
        def done(pcm: bytes) -> None:
            order.append(f"in{i}")
            # A bot answering at once: its audio joins the outbound batch of this flush.
            batcher.add_outbound((downs[i], "pcmu"), pcm, lambda _: order.append(f"out{i}"))
            if i == 1:
                batcher.flush()  # a session settling from inside a delivery
        return done

    for i, rs in enumerate(ups):
        batcher.add_inbound((rs, "pcmu"), _codes(i), inbound_done(i))
    batcher.flush()
    assert order[:2] == ["in0", "in1"]
    assert sorted(order) == ["in0", "in1", "in2", "out0", "out1", "out2"]
    assert order.index("in2") < order.index("out2") and not batcher.pending


@pytest.mark.asyncio
async def test_a_receiver_that_raises_harms_no_other_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batcher = ResampleBatcher(asyncio.get_running_loop())
    ups = _prepared(8000, 16000, 160, 3)
    got: list[int] = []

    def bad(_: bytes) -> None:
        raise ValueError("a broken receiver")

    batcher.add_inbound((ups[0], "pcmu"), _codes(0), lambda _: got.append(0))
    batcher.add_inbound((ups[1], "pcmu"), _codes(1), bad)
    batcher.add_inbound((ups[2], "pcmu"), _codes(2), lambda _: got.append(2))
    with caplog.at_level(logging.ERROR, logger="mediastream.server"):
        batcher.flush()
    assert got == [0, 2]
    assert "delivering a result failed" in caplog.text


@pytest.mark.asyncio
async def test_a_batch_that_cannot_run_falls_back_frame_by_frame(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Sessions never hand out such frames; if one came anyway, only its own frame may
    be lost: the rest of its batch is converted one by one, other groups as usual."""
    batcher = ResampleBatcher(asyncio.get_running_loop())
    ups = _prepared(8000, 16000, 160, 3)
    twins = _prepared(8000, 16000, 160, 3)
    ups[1] = StreamResampler(8000, 16000)  # not prepared: the batch refuses the group
    fresh_twin = StreamResampler(8000, 16000)
    downs = _prepared(16000, 8000, 320, 2)
    got: dict[str, bytes] = {}
    for i, rs in enumerate(ups):
        batcher.add_inbound((rs, "pcmu"), _codes(i), lambda d, i=i: got.__setitem__(f"in{i}", d))
    odd = b"\x01" * 641  # an odd byte count: no conversion can take it
    for i, rs in enumerate(downs):
        batcher.add_outbound((rs, "pcmu"), odd, lambda d, i=i: got.__setitem__(f"x{i}", d))
    with caplog.at_level(logging.ERROR, logger="mediastream.server"):
        batcher.flush()
    assert got["in0"] == twins[0].process_ulaw(_codes(0)).tobytes()
    assert got["in1"] == fresh_twin.process_ulaw(_codes(1)).tobytes()
    assert got["in2"] == twins[2].process_ulaw(_codes(2)).tobytes()
    assert "x0" not in got and "x1" not in got and not batcher.pending
    assert "converting its frames one by one" in caplog.text
    assert caplog.text.count("converting a frame failed") == 2


async def _echo_calls(port: int, seeds: list[int], frames: int) -> dict[int, bytes]:
    """Concurrent echo calls, one per seed; the audio each one got back."""

    async def one(seed: int) -> tuple[int, bytes]:
        provider = FakeProvider("twilio")
        sent = ulaw_payload(frames, seed=seed)

        class _Server:  # FakeProvider.connect wants something with a port
            pass

        server: Any = _Server()
        server.port = port
        async with provider.connect(server):
            await provider.open()
            provider.start_pump()
            for i in range(frames):
                await provider.send(provider.media(sent[i * 160 : (i + 1) * 160]))
                await asyncio.sleep(0.002)
            audio = await provider.wait_audio(len(sent), timeout=20)
            await provider.send(provider.stop())
            await provider.closed()
        return seed, audio[: len(sent)]

    return dict(await asyncio.gather(*(one(seed) for seed in seeds)))


@pytest.mark.asyncio
async def test_batched_resampling_sends_every_call_exactly_the_unbatched_audio() -> None:
    """Twelve concurrent 16 kHz echo calls on a batching server and on one that converts
    frame by frame: each call gets back the same bytes from both, and the batching
    server did convert many calls' frames in one product."""
    seeds = list(range(12))
    async with (
        running_server(echo_bot, bot_sample_rate=16000) as batched,
        running_server(echo_bot, bot_sample_rate=16000, batch_resampling=False) as single,
    ):
        assert batched.batcher is not None and single.batcher is None
        got, want = await asyncio.gather(
            _echo_calls(batched.port, seeds, 40), _echo_calls(single.port, seeds, 40)
        )
        frames, products = batched.batcher.frames, batched.batcher.products
        exposition = batched.metrics.render()[0].decode()
    for seed in seeds:
        assert got[seed] == want[seed], seed
    assert len({want[seed] for seed in seeds}) == len(seeds)  # distinct calls, distinct audio
    assert frames >= len(seeds) * 30 * 2  # both directions, nearly every frame
    assert products < frames  # several calls per product
    assert f"mediastream_resample_batch_frames_total {float(frames)}" in exposition
    assert f"mediastream_resample_batch_products_total {float(products)}" in exposition


@pytest.mark.asyncio
async def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        ResampleBatcher(asyncio.get_running_loop(), max_batch=0)
