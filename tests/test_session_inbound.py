"""Call session, inbound: decode, resample once, 20 ms frames, reordering, DTMF, stop.

Real audiocodecs and real protocol events; the clock is passed in, nothing sleeps.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from audiocodecs.g711 import alaw_encode, ulaw_decode, ulaw_encode
from audiocodecs.pcm import l16be_encode, l16le_encode
from audiocodecs.resample import StreamResampler, resample
from mediastream.call import CallEnded, CallEvent, DtmfPressed, InboundAudio
from mediastream.errors import InvalidMessageError, UnsupportedDataError
from mediastream.protocols.events import (
    AudioReceived,
    DtmfReceived,
    MarkPlayed,
    MediaFormat,
    StreamStopped,
)
from tests._util_session import (
    PCMU_8K,
    RecordedSession,
    call_info,
    dominant_frequency,
    rms,
    tone,
    tone_purity_db,
)

Int16 = npt.NDArray[np.int16]


@pytest.fixture(autouse=True)
def _both_modes(batching: str) -> str:
    """Every test here runs converting each step at once and batched per loop turn."""
    return batching


def _pcm(events: list[CallEvent]) -> Int16:
    frames = [e.pcm for e in events if isinstance(e, InboundAudio)]
    return np.frombuffer(b"".join(frames), dtype="<i2").astype(np.int16)


def _frames(x: Int16, n: int) -> list[Int16]:
    return [x[i : i + n] for i in range(0, len(x), n)]


def _feed(session: RecordedSession, payloads: list[bytes], fmt: MediaFormat,
          keys: list[int] | None = None, t0: float = 0.0) -> list[list[CallEvent]]:
    """Feed payloads (in the given key order) 20 ms apart; returns each call's output."""
    keys = keys if keys is not None else list(range(1, len(payloads) + 1))
    out = []
    for i, key in enumerate(keys):
        event = AudioReceived(payloads[key - 1], fmt, chunk=key, sequence=key + 1)
        out.append(session.receive_event(event, t0 + 0.02 * i))
    return out


def _delay(in_rate: int, out_rate: int) -> int:
    return StreamResampler(in_rate, out_rate).delay_samples if in_rate != out_rate else 0


# ------------------------------------------------------------------------ codecs, tones


@pytest.mark.parametrize(
    ("fmt", "encode"),
    [
        (MediaFormat("pcmu", 8000), lambda x: ulaw_encode(x).tobytes()),
        (MediaFormat("pcma", 8000), lambda x: alaw_encode(x).tobytes()),
        (MediaFormat("l16", 16000, byteorder="big"), l16be_encode),  # Telnyx L16
        (MediaFormat("l16", 16000, byteorder="little"), l16le_encode),  # Plivo L16
        (MediaFormat("l16", 8000, byteorder="little"), l16le_encode),
    ],
    ids=["pcmu", "pcma", "l16be16k", "l16le16k", "l16le8k"],
)
def test_a_tone_reaches_the_bot_at_the_right_frequency_and_level(fmt, encode) -> None:
    x = tone(1000, 1.0, fmt.sample_rate, amplitude=8000)
    n = fmt.sample_rate // 50
    session = RecordedSession(call_info("telnyx", inbound=fmt), now=0.0)
    per_frame = _feed(session, [encode(f) for f in _frames(x, n)], fmt)
    # Each 20 ms payload yields exactly one 20 ms bot frame, at once (no added latency).
    assert all(len(out) == 1 for out in per_frame)
    assert all(len(out[0].pcm) == 640 and out[0].sample_rate == 16000 for out in per_frame)
    y = _pcm([e for out in per_frame for e in out])[400:]
    assert dominant_frequency(y, 16000) == pytest.approx(1000, abs=2)
    # A byte-order or codec mix-up turns the tone into loud noise: purity and level catch it.
    assert tone_purity_db(y, 16000, 1000) > 30
    assert 20 * np.log10(rms(y) / (8000 / np.sqrt(2))) == pytest.approx(0, abs=0.3)


def test_swapped_byte_order_would_be_noise() -> None:
    """The tone checks above can fail: big-endian bytes read as little-endian are noise."""
    fmt_claimed = MediaFormat("l16", 16000, byteorder="little")
    x = tone(1000, 0.5, 16000)
    session = RecordedSession(call_info("telnyx", inbound=fmt_claimed), now=0.0)
    out = _feed(session, [l16be_encode(f) for f in _frames(x, 320)], fmt_claimed)
    y = _pcm([e for o in out for e in o])
    assert tone_purity_db(y, 16000, 1000) < 10


@pytest.mark.parametrize("bot_rate", [8000, 16000, 24000, 44100, 48000])
def test_resampled_once_and_exact_in_duration(bot_rate: int) -> None:
    """Streaming output equals a one-shot resample of the whole call, behind the lead pad."""
    x = tone(440, 0.5, 8000, amplitude=12000) + tone(2500, 0.5, 8000, amplitude=4000)
    payloads = [ulaw_encode(f).tobytes() for f in _frames(x, 160)]
    session = RecordedSession(call_info(), bot_sample_rate=bot_rate, now=0.0)
    per_frame = _feed(session, payloads, PCMU_8K)
    frame = bot_rate // 50
    assert all(len(out) == 1 and len(out[0].pcm) == 2 * frame for out in per_frame)
    end = session.receive_event(StreamStopped(), 1.0)
    assert isinstance(end[-1], CallEnded)
    y = _pcm([e for out in per_frame for e in out] + end)
    decoded = ulaw_decode(b"".join(payloads))
    d = _delay(8000, bot_rate)
    expected = np.concatenate([np.zeros(d, np.int16), resample(decoded, 8000, bot_rate)])
    assert len(y) == d + len(x) * bot_rate // 8000
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("chunk_ms", [10, 30, 40, 100])
def test_provider_frames_of_other_sizes_are_rechunked_to_20_ms(chunk_ms: int) -> None:
    x = tone(700, 0.6, 8000)
    n = 8 * chunk_ms
    payloads = [ulaw_encode(f).tobytes() for f in _frames(x, n)]
    session = RecordedSession(call_info(), now=0.0)
    out = [e for o in _feed(session, payloads, PCMU_8K) for e in o]
    out += session.receive_event(StreamStopped(), 1.0)
    audio = [e for e in out if isinstance(e, InboundAudio)]
    assert all(len(a.pcm) == 640 for a in audio[:-1])
    expected = np.concatenate([np.zeros(_delay(8000, 16000), np.int16),
                               resample(ulaw_decode(b"".join(payloads)), 8000, 16000)])
    np.testing.assert_array_equal(_pcm(audio), expected)


def test_unsupported_formats_are_refused_clearly() -> None:
    with pytest.raises(UnsupportedDataError, match="sample rate 11025"):
        RecordedSession(call_info(inbound=MediaFormat("l16", 11025)), now=0.0)
    with pytest.raises(UnsupportedDataError, match="channels"):
        RecordedSession(call_info(inbound=MediaFormat("pcmu", 8000, channels=2)), now=0.0)
    with pytest.raises(ValueError, match="bot sample rate"):
        RecordedSession(call_info(), bot_sample_rate=22050, now=0.0)


def test_odd_l16_payload_is_an_invalid_message() -> None:
    fmt = MediaFormat("l16", 16000, byteorder="big")
    session = RecordedSession(call_info("telnyx", inbound=fmt), now=0.0)
    with pytest.raises(InvalidMessageError, match="odd byte count"):
        session.receive_event(AudioReceived(b"\x00" * 641, fmt, chunk=1), 0.0)


def test_other_tracks_are_ignored() -> None:
    session = RecordedSession(call_info(), now=0.0)
    payload = ulaw_encode(tone(500, 0.02, 8000)).tobytes()
    outbound = AudioReceived(payload, PCMU_8K, track="outbound", chunk=1)
    assert session.receive_event(outbound, 0.0) == []
    assert session.stats.frames_ignored == 1 and session.stats.frames_in == 0
    out = session.receive_event(AudioReceived(payload, PCMU_8K, track="inbound", chunk=1), 0.0)
    assert len(out) == 1


# ---------------------------------------------------------------------------- reordering


def _numbered_payloads(count: int) -> tuple[list[bytes], Int16]:
    x = tone(300, 0.02 * count, 8000, amplitude=10000) + tone(1700, 0.02 * count, 8000, 3000)
    return [ulaw_encode(f).tobytes() for f in _frames(x, 160)], x


def _expected(payloads: list[bytes], order: list[int | None]) -> Int16:
    """One-shot resample of the payloads in ``order`` (None = a 20 ms silence fill)."""
    parts = [ulaw_decode(payloads[k - 1]) if k else np.zeros(160, np.int16) for k in order]
    y = resample(np.concatenate(parts), 8000, 16000)
    return np.concatenate([np.zeros(_delay(8000, 16000), np.int16), y])


def _run(session: RecordedSession, payloads: list[bytes], keys: list[int]) -> list[list[CallEvent]]:
    out = _feed(session, payloads, PCMU_8K, keys)
    out.append(session.receive_event(StreamStopped(), 10.0))
    return out


def test_a_swap_is_put_back_in_order_without_filling() -> None:
    payloads, _ = _numbered_payloads(6)
    session = RecordedSession(call_info("telnyx"), reorder_window=3, now=0.0)
    out = _run(session, payloads, [1, 3, 2, 4, 5, 6])
    assert [len(o) for o in out[:6]] == [1, 0, 2, 1, 1, 1]  # only the early frame waits
    np.testing.assert_array_equal(
        _pcm([e for o in out for e in o]), _expected(payloads, [1, 2, 3, 4, 5, 6])
    )
    assert session.stats.frames_reordered == 1
    assert session.stats.frames_filled == session.stats.frames_late_dropped == 0


def test_a_true_gap_is_filled_with_counted_silence_and_a_late_frame_dropped() -> None:
    payloads, _ = _numbered_payloads(8)
    session = RecordedSession(call_info("telnyx"), reorder_window=3, now=0.0)
    out = _run(session, payloads, [1, 2, 4, 5, 6, 7, 3, 8])
    # 4, 5, 6 wait (window 3); 7 overflows it: 3 is given up, silence stands in for it.
    assert [len(o) for o in out[:8]] == [1, 1, 0, 0, 0, 5, 0, 1]
    filled = [e.filled for o in out[:8] for e in o if isinstance(e, InboundAudio)]
    assert filled == [False, False, True, False, False, False, False, False]
    np.testing.assert_array_equal(
        _pcm([e for o in out for e in o]), _expected(payloads, [1, 2, None, 4, 5, 6, 7, 8])
    )
    assert session.stats.frames_filled == 1
    assert session.stats.frames_late_dropped == 1  # 3 came after its slot was given up


def test_duplicates_are_dropped_and_counted() -> None:
    payloads, _ = _numbered_payloads(4)
    session = RecordedSession(call_info("telnyx"), now=0.0)
    out = _run(session, payloads, [1, 2, 2, 3, 1, 4])
    np.testing.assert_array_equal(
        _pcm([e for o in out for e in o]), _expected(payloads, [1, 2, 3, 4])
    )
    assert session.stats.frames_late_dropped == 2
    assert session.stats.frames_in == 6


def test_a_held_frame_waits_at_most_the_window_in_time() -> None:
    payloads, _ = _numbered_payloads(3)
    session = RecordedSession(call_info("telnyx"), reorder_window=3, now=0.0)
    assert len(session.receive_event(AudioReceived(payloads[0], PCMU_8K, chunk=1), 0.0)) == 1
    assert session.receive_event(AudioReceived(payloads[2], PCMU_8K, chunk=3), 0.02) == []
    assert session.next_deadline() == pytest.approx(0.02 + 3 * 0.02)
    assert session.poll(0.07) == ([], [])
    commands, events = session.poll(0.08)
    assert commands == [] and [e.filled for e in events] == [True, False]  # type: ignore[union-attr]
    assert session.next_deadline() is None
    assert session.stats.frames_filled == 1


def test_sequence_numbers_of_other_messages_are_not_gaps() -> None:
    """Twilio/Plivo number every message; without chunk numbers, dtmf/mark take slots."""
    payloads, _ = _numbered_payloads(4)
    session = RecordedSession(call_info("twilio"), now=0.0)

    def media(i: int, seq: int, now: float) -> list[CallEvent]:
        return session.receive_event(AudioReceived(payloads[i], PCMU_8K, sequence=seq), now)

    assert len(media(0, 2, 0.00)) == 1
    assert len(media(1, 3, 0.02)) == 1
    assert session.receive_event(DtmfReceived("5", sequence=4), 0.03) == [DtmfPressed("5")]
    assert len(media(2, 5, 0.04)) == 1  # no gap for the dtmf's slot: passes straight through
    # Out of order across a non-media message: the media waits for the mark's slot.
    assert media(3, 7, 0.06) == []
    released = session.receive_event(MarkPlayed("m-unknown", sequence=6), 0.065)
    assert len(released) == 1 and isinstance(released[0], InboundAudio)
    assert session.stats.frames_filled == 0 and session.stats.frames_reordered == 0


def test_chunk_numbers_win_over_sequence_numbers() -> None:
    payloads, _ = _numbered_payloads(3)
    session = RecordedSession(call_info("twilio"), now=0.0)
    for i, seq in enumerate([2, 4, 7]):  # sequence gaps from other messages; chunks contiguous
        ev = AudioReceived(payloads[i], PCMU_8K, chunk=i + 1, sequence=seq)
        assert len(session.receive_event(ev, 0.02 * i)) == 1
    assert session.stats.frames_filled == 0


def test_a_long_jump_fills_at_most_one_second_and_resyncs() -> None:
    payloads, _ = _numbered_payloads(2)
    session = RecordedSession(call_info("telnyx"), reorder_window=0, now=0.0)
    session.receive_event(AudioReceived(payloads[0], PCMU_8K, chunk=1), 0.0)
    out = session.receive_event(AudioReceived(payloads[1], PCMU_8K, chunk=1000), 0.02)
    assert len(out) == 51 and sum(isinstance(e, InboundAudio) and e.filled for e in out) == 50
    assert session.stats.sequence_resyncs == 1
    # A counter reset far behind is followed, not dropped as "late" forever.
    out = session.receive_event(AudioReceived(payloads[0], PCMU_8K, chunk=5), 0.04)
    assert len(out) == 1 and session.stats.sequence_resyncs == 2


# ------------------------------------------------------------------------ dtmf and stop


def test_dtmf_reaches_the_bot() -> None:
    session = RecordedSession(call_info("plivo"), now=0.0)
    assert session.receive_event(DtmfReceived("#"), 0.0) == [DtmfPressed("#")]


def test_stop_flushes_the_tail_and_ends_the_call_once() -> None:
    payloads, _x = _numbered_payloads(5)
    session = RecordedSession(call_info(), now=0.0)
    out = [e for o in _feed(session, payloads, PCMU_8K, [1, 3]) for e in o]
    end = session.receive_event(StreamStopped(reason="hangup"), 0.1)
    assert end[-1] == CallEnded("hangup")
    # The held frame 3 comes out (with its gap filled), then the resampler tail.
    audio = [e for e in end if isinstance(e, InboundAudio)]
    assert [a.filled for a in audio[:2]] == [True, False]
    assert len(audio[-1].pcm) == 2 * _delay(8000, 16000)
    assert len(_pcm(out + end)) == 3 * 320 + _delay(8000, 16000)
    assert session.ended
    assert session.receive_event(StreamStopped(), 0.2) == []
    assert session.receive_event(AudioReceived(payloads[3], PCMU_8K, chunk=4), 0.2) == []
    assert session.end("again", 0.3) == []


def test_a_mid_stream_format_change_is_followed() -> None:
    session = RecordedSession(call_info("telnyx"), now=0.0)
    l16 = MediaFormat("l16", 16000, byteorder="big")
    out: list[CallEvent] = []
    for i, f in enumerate(_frames(tone(1000, 0.4, 8000), 160)):
        payload = ulaw_encode(f).tobytes()
        out += session.receive_event(AudioReceived(payload, PCMU_8K, chunk=i + 1), 0.0)
    for i, f in enumerate(_frames(tone(1000, 0.4, 16000), 320)):
        out += session.receive_event(AudioReceived(l16be_encode(f), l16, chunk=21 + i), 0.4)
    audio = [e for e in out if isinstance(e, InboundAudio)]
    assert all(len(a.pcm) == 640 for a in audio) and len(audio) == 40
    y = _pcm(audio)
    assert dominant_frequency(y[800:6000], 16000) == pytest.approx(1000, abs=3)
    assert dominant_frequency(y[7000:], 16000) == pytest.approx(1000, abs=3)
    assert tone_purity_db(y[7000:], 16000, 1000) > 30
