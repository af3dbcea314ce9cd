"""Call session, outbound: resample once, encode, whole 20 ms frames, pacing, no loss.

The clock is simulated by ``drive`` (which wakes the session at ``next_deadline()`` as
the server does); a local provider model plays what it receives in real time.
"""

from __future__ import annotations

import random

import numpy as np
import numpy.typing as npt
import pytest

from audiocodecs.g711 import alaw_decode, ulaw_decode, ulaw_encode
from audiocodecs.pcm import l16be_decode, l16le_decode
from audiocodecs.resample import StreamResampler, resample
from mediastream.protocols.events import MediaFormat, SendAudio, SendMark
from mediastream.session.session import DEFAULT_IDLE_FLUSH
from tests._util_session import (
    FakeProvider,
    RecordedSession,
    call_info,
    clear,
    dominant_frequency,
    drive,
    end_utterance,
    rms,
    send,
    tone,
    tone_purity_db,
)

Int16 = npt.NDArray[np.int16]
WIRE = {
    "pcmu": (MediaFormat("pcmu", 8000), ulaw_decode),
    "pcma": (MediaFormat("pcma", 8000), alaw_decode),
    "l16be16k": (MediaFormat("l16", 16000, byteorder="big"), l16be_decode),
    "l16le16k": (MediaFormat("l16", 16000, byteorder="little"), l16le_decode),
    "l16le8k": (MediaFormat("l16", 8000, byteorder="little"), l16le_decode),
}


@pytest.fixture(autouse=True)
def _both_modes(batching: str) -> str:
    """Every test here runs converting each step at once and batched per loop turn."""
    return batching


def _chunks(data: bytes, rng: random.Random, max_len: int = 3000) -> list[bytes]:
    """Split at random byte offsets (odd ones too: a sample may straddle two calls)."""
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, max_len)
        out.append(data[i : i + n])
        i += n
    return out


def _spurt_on_wire(x: Int16, rate: int, wire_rate: int = 8000) -> bytes:
    """What one talk spurt must become on a μ-law wire: lead pad, one resample, padded frame."""
    d = StreamResampler(rate, wire_rate).delay_samples if rate != wire_rate else 0
    y = np.concatenate([np.zeros(d, np.int16), resample(x, rate, wire_rate)])
    data = ulaw_encode(y).tobytes()
    return data + b"\xff" * (-len(data) % 160)


def _sent_frames(fake: FakeProvider) -> list[bytes]:
    return [c.payload for _, c in fake.received if isinstance(c, SendAudio)]


# ------------------------------------------------------------------------------- no loss


def test_no_audio_is_lost_across_pauses_and_the_tail_is_flushed() -> None:
    rng = random.Random(7)
    a = tone(440, 0.537, 24000, amplitude=9000)
    b = tone(880, 0.311, 24000, amplitude=9000)
    actions = []
    for i, piece in enumerate(_chunks(a.tobytes(), rng)):
        actions.append((0.01 * i / 10, send(piece, 24000)))
    for i, piece in enumerate(_chunks(b.tobytes(), rng)):
        actions.append((1.5 + 0.004 * i, send(piece, 24000)))
    # No end_utterance at all: the bot simply stops; the session flushes each tail itself.
    session = RecordedSession(call_info(), now=0.0)
    fake = FakeProvider()
    drive(session, fake, actions, until=4.0)
    assert fake.audio_sent() == _spurt_on_wire(a, 24000) + _spurt_on_wire(b, 24000)
    assert all(len(f) == 160 for f in _sent_frames(fake))
    assert session.stats.idle_flushes == 2
    assert session.all_played


def test_chunking_does_not_change_the_wire_audio() -> None:
    x = tone(1234, 0.77, 16000) + tone(300, 0.77, 16000, amplitude=3000)
    results = []
    for max_len in (2, 7, 641, 10**6):
        session = RecordedSession(call_info(), now=0.0)
        fake = FakeProvider()
        pieces = _chunks(x.tobytes(), random.Random(max_len), max_len)
        actions = [(0.0, send(p, 16000)) for p in pieces] + [(0.0, end_utterance)]
        drive(session, fake, actions, until=2.0)
        results.append(fake.audio_sent())
    assert results[0] == _spurt_on_wire(x, 16000)
    assert all(r == results[0] for r in results)


def test_a_rate_change_mid_utterance_loses_nothing() -> None:
    a, b = tone(500, 0.2, 16000), tone(500, 0.3, 48000, phase=0.0)
    session = RecordedSession(call_info(), now=0.0)
    fake = FakeProvider()
    actions = [(0.0, send(a, 16000)), (0.0, send(b, 48000)), (0.0, end_utterance)]
    drive(session, fake, actions, until=2.0)
    d16 = StreamResampler(16000, 8000).delay_samples
    expected_samples = d16 + len(a) // 2 + len(b) // 6  # second filter continues, no new pad
    assert len(fake.audio_sent()) == expected_samples + (-expected_samples % 160)


def test_end_utterance_pads_the_last_frame_with_codec_silence() -> None:
    for fmt, silence in ((MediaFormat("pcmu", 8000), b"\xff"), (MediaFormat("pcma", 8000), b"\xd5"),
                         (MediaFormat("l16", 8000), b"\x00")):
        session = RecordedSession(call_info("telnyx", inbound=fmt), now=0.0)
        x = tone(1000, 0.03, 8000)  # 1.5 frames at the wire rate: no resampler involved
        session.send_audio(x.tobytes(), 8000, 0.0)
        session.end_utterance(0.0)
        commands, _ = session.poll(0.0)
        audio = [c.payload for c in commands if isinstance(c, SendAudio)]
        assert len(audio) == 2 and all(len(p) == fmt.frame_bytes() for p in audio)
        half = fmt.frame_bytes() // 2
        assert audio[1][half:] == silence * (len(audio[1]) - half)
        assert audio[1][:half] != silence * half


def test_unsupported_bot_rates_are_refused() -> None:
    session = RecordedSession(call_info(), now=0.0)
    with pytest.raises(ValueError, match="22050"):
        session.send_audio(b"\x00\x00" * 10, 22050, 0.0)
    with pytest.raises(TypeError):
        session.send_audio("not bytes", 16000, 0.0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- tones


@pytest.mark.parametrize("wire", list(WIRE))
@pytest.mark.parametrize("bot_rate", [16000, 24000, 44100])
def test_a_bot_tone_reaches_the_wire_at_the_right_frequency_and_level(
    wire: str, bot_rate: int
) -> None:
    fmt, decode = WIRE[wire]
    session = RecordedSession(call_info("telnyx", inbound=fmt), now=0.0)
    fake = FakeProvider("telnyx")
    drive(session, fake, [(0.0, send(tone(1000, 0.6, bot_rate), bot_rate)), (0.0, end_utterance)],
          until=1.5)
    frames = _sent_frames(fake)
    assert all(len(f) == fmt.frame_bytes() for f in frames)
    y = decode(b"".join(frames))[fmt.sample_rate // 50 : -fmt.sample_rate // 25]
    assert dominant_frequency(y, fmt.sample_rate) == pytest.approx(1000, abs=2)
    assert tone_purity_db(y, fmt.sample_rate, 1000) > 30
    assert 20 * np.log10(rms(y) / (8000 / np.sqrt(2))) == pytest.approx(0, abs=0.3)


# ------------------------------------------------------------------------------- pacing


@pytest.mark.parametrize("lead", [0.04, 0.08, 0.2])
def test_pacing_keeps_a_bounded_lead_and_never_runs_the_provider_dry(lead: float) -> None:
    session = RecordedSession(call_info(), playout_lead=lead, now=0.0)
    fake = FakeProvider(latency=0.03 if lead > 0.03 else 0.01)
    x = tone(440, 3.0, 24000)
    trace = drive(session, fake, [(0.0, send(x, 24000)), (0.0, end_utterance)], until=4.0)
    released = 0
    first_batch = sum(1 for t, c in trace.commands if t == 0.0 and isinstance(c, SendAudio))
    assert first_batch == round(lead / 0.02) + 1
    for t, c in trace.commands:
        if isinstance(c, SendAudio):
            released += 1
            # Released audio never runs more than the lead (plus the frame) ahead of time.
            assert released * 0.02 - t <= lead + 0.02 + 1e-9
    # The provider played every frame back to back: it never ran dry.
    starts = [f.start for f in fake.frames]
    ends = [f.end for f in fake.frames]
    assert all(abs(s - e) < 1e-9 for s, e in zip(starts[1:], ends[:-1], strict=True))
    assert session.stats.max_queue_depth == len(fake.frames)  # all queued at once
    assert session.stats.underruns == 0


def test_next_deadline_tells_the_server_when_to_poll() -> None:
    session = RecordedSession(call_info(), now=0.0)
    assert session.next_deadline() is None
    session.send_audio(tone(440, 0.5, 8000).tobytes(), 8000, 1.0)
    assert session.next_deadline() == pytest.approx(1.0)  # due now
    commands, _ = session.poll(1.0)
    assert len([c for c in commands if isinstance(c, SendAudio)]) == 5
    # The sixth frame plays from 1.10, so it is released 80 ms ahead of that.
    assert session.next_deadline() == pytest.approx(1.02)
    assert session.poll(1.019)[0] == []
    assert len(session.poll(1.02)[0]) == 1


def test_a_paused_bot_tail_goes_out_when_the_queue_would_run_dry() -> None:
    session = RecordedSession(call_info(), now=0.0)
    x = tone(1000, 0.03, 8000)
    session.send_audio(x.tobytes(), 8000, 0.0)
    assert len(session.poll(0.0)[0]) == 1
    assert session.next_deadline() == pytest.approx(DEFAULT_IDLE_FLUSH)  # quiet, queue dry
    assert session.poll(DEFAULT_IDLE_FLUSH - 0.001)[0] == []
    commands, _ = session.poll(DEFAULT_IDLE_FLUSH)
    assert [type(c) for c in commands] == [SendAudio, SendMark]
    assert commands[0].payload[:80] == ulaw_encode(x[160:]).tobytes()  # type: ignore[union-attr]
    assert session.stats.idle_flushes == 1


def test_a_deep_queue_does_not_flush_while_a_streaming_bot_is_briefly_late() -> None:
    """A TTS ahead of real time pauses 100 ms between chunks: no silence inserted."""
    session = RecordedSession(call_info(), now=0.0)
    fake = FakeProvider()
    x = tone(440, 1.0, 24000)
    pieces = [x[i : i + 2400] for i in range(0, len(x), 2400)]  # 100 ms pieces
    actions = [(0.1 * i * 0.9, send(p, 24000)) for i, p in enumerate(pieces)]
    actions.append((0.95, end_utterance))
    drive(session, fake, actions, until=2.5)
    assert session.stats.idle_flushes == 0
    assert fake.audio_sent() == _spurt_on_wire(x, 24000)


def test_a_real_time_bot_with_jitter_below_the_pause_threshold_gets_no_silence() -> None:
    """An echo at a 16 kHz bot rate sends 20 ms every 20 ms, up to 60 ms late: with the
    default pause threshold no padded frame is inserted mid-stream, so the provider's
    queue does not grow (a padded frame would add 20 ms for the rest of the spurt)."""
    rng = random.Random(5)
    session = RecordedSession(call_info(), now=0.0)
    fake = FakeProvider()
    x = tone(440, 2.0, 16000)
    actions = []
    at = 0.0
    for i in range(100):  # late by up to 60 ms, never out of order (a bot sends in order)
        at = max(at, 0.02 * i + rng.uniform(0, 0.06))
        actions.append((at, send(x[320 * i : 320 * (i + 1)], 16000)))
    drive(session, fake, actions, until=3.0)
    assert session.stats.idle_flushes == 1  # only the real end
    assert fake.audio_sent() == _spurt_on_wire(x, 16000)
    assert len(fake.frames) == 101  # 100 frames of audio + the padded filter tail


def test_a_real_time_bot_with_jitter_gets_at_most_one_silence_frame() -> None:
    """An echo-like bot sends 20 ms every 20 ms, up to 15 ms late: the first late chunk
    may cost one padded frame, after which the slack absorbs the jitter."""
    rng = random.Random(3)
    session = RecordedSession(call_info(), now=0.0)
    fake = FakeProvider()
    x = tone(440, 2.0, 16000)
    actions = [(0.02 * i + rng.uniform(0, 0.015), send(x[320 * i : 320 * (i + 1)], 16000))
               for i in range(100)]
    drive(session, fake, actions, until=3.0)
    assert session.stats.idle_flushes <= 2  # the last one is the real end
    assert len(fake.frames) <= 100 + 2


def test_a_clear_drops_the_partial_frame_and_restarts_the_resampler() -> None:
    session = RecordedSession(call_info(), now=0.0)
    fake = FakeProvider()
    a = tone(440, 0.505, 24000)  # leaves a partial frame and a filter tail behind
    b = tone(880, 0.3, 24000)
    actions = [(0.0, send(a, 24000)), (0.1, clear(fake)),
               (0.5, send(b, 24000)), (0.5, end_utterance)]
    drive(session, fake, actions, until=2.0)
    after = b"".join(c.payload for t, c in fake.received if isinstance(c, SendAudio) and t >= 0.5)
    assert after == _spurt_on_wire(b, 24000)  # nothing of ``a`` leaks into the next utterance


def test_config_defaults_match_the_session_defaults() -> None:
    """Config repeats the session's defaults (config must not import numpy); keep them equal."""
    from mediastream.config import Config
    from mediastream.session.ledger import DEFAULT_MARK_GRACE

    assert Config().idle_flush == DEFAULT_IDLE_FLUSH
    assert Config().mark_grace == DEFAULT_MARK_GRACE
