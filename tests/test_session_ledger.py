"""Call session, playout ledger and interruption, against a local provider playout model.

The model (``FakeProvider``) plays what it receives in real time and echoes marks as
Twilio/Telnyx/Plivo document; it records what the caller actually heard, which the
ledger's figures are checked against.
"""

from __future__ import annotations

import pytest

from mediastream.call import PlayoutStarted, PlayoutStopped
from mediastream.protocols.events import (
    ClearAudio,
    MarkPlayed,
    MediaFormat,
    ProviderName,
    SendAudio,
    SendMark,
)
from tests._util_session import (
    FakeProvider,
    RecordedSession,
    call_info,
    clear,
    drive,
    end_utterance,
    send,
    tone,
)

FRAME = 0.02


@pytest.fixture(autouse=True)
def _both_modes(batching: str) -> str:
    """Every test here runs converting each step at once and batched per loop turn."""
    return batching


def _frames(seconds: float, rate: int = 24000) -> float:
    """Wire duration of one utterance of ``seconds``: lead pad, then whole 20 ms frames."""
    from audiocodecs.resample import StreamResampler

    d = StreamResampler(rate, 8000).delay_samples if rate != 8000 else 0
    samples = d + round(seconds * 8000)
    return -(-samples // 160) * FRAME


def _playout(trace_events: list) -> list[object]:
    return [e for _, e in trace_events if isinstance(e, PlayoutStarted | PlayoutStopped)]


def test_the_ledger_follows_what_the_caller_heard() -> None:
    session = RecordedSession(call_info(), now=0.0)
    fake = FakeProvider(latency=0.03)
    checks: list[tuple[float, float, float, bool, bool]] = []

    def observe(now: float) -> None:
        checks.append((now, session.played_s, fake.heard_s(now), session.all_played,
                       session.bot_speaking))

    trace = drive(session, fake, [(0.0, send(tone(440, 1.0, 24000), 24000)), (0.0, end_utterance)],
                  until=3.0, observe=observe)
    total = _frames(1.0)
    marks = [c for _, c in trace.commands if isinstance(c, SendMark)]
    assert len(marks) == 6  # every 200 ms of audio, plus the end of the utterance
    assert len({m.name for m in marks}) == 6 and all(len(m.name) <= 4 for m in marks)
    assert session.stats.marks_sent == session.stats.marks_played == 6
    assert session.stats.marks_timed_out == 0
    # Never claims more than was heard; lags by at most a mark interval plus the round trip.
    for _, played, heard, _, _ in checks:
        assert played <= heard + 1e-9
        assert played >= heard - 0.2 - 2 * 0.03 - 1e-9
    assert session.played_s == pytest.approx(total) == pytest.approx(fake.heard_s(10))
    events = trace.of(PlayoutStarted) + trace.of(PlayoutStopped)
    (t_start, _), (t_stop, stopped) = sorted(events, key=lambda e: e[0])
    assert t_start == 0.0
    assert stopped == PlayoutStopped(pytest.approx(total), cut=False)
    assert t_stop == pytest.approx(total + 0.03 + 0.03)  # the final echo's round trip
    # all_played flips exactly when the final echo arrives; bot_speaking mirrors it.
    for now, _, _, done, speaking in checks:
        assert done == (now >= t_stop)
        assert speaking == (now < t_stop)


@pytest.mark.parametrize("provider", ["twilio", "telnyx"])
def test_an_interruption_cuts_the_queue_and_later_echoes_do_not_count(
    provider: ProviderName,
) -> None:
    session = RecordedSession(call_info(provider), now=0.0)
    fake = FakeProvider(provider, latency=0.03)
    actions = [
        (0.0, send(tone(440, 2.0, 24000), 24000)),
        (0.0, end_utterance),
        (0.51, clear(fake)),  # just after a mark at 0.6 s went out
        (1.2, send(tone(660, 0.3, 24000), 24000)),
        (1.2, end_utterance),
    ]
    trace = drive(session, fake, actions, until=3.0)
    clear_at = next(t for t, c in fake.received if isinstance(c, ClearAudio))
    assert clear_at == 0.51
    sent_after = [t for t, c in fake.received if isinstance(c, SendAudio) and 0.51 <= t < 1.2]
    assert sent_after == []  # the queued rest of the utterance was dropped
    stopped = [e for _, e in trace.of(PlayoutStopped)]
    assert [type(e) for e in _playout(trace.events)] == [
        PlayoutStarted, PlayoutStopped, PlayoutStarted, PlayoutStopped]
    cut, second = stopped
    assert cut.cut and not second.cut
    # The caller heard up to the clear's arrival at the provider; the ledger's estimate
    # (the clock at the clear) is within the one-way latency of it.
    assert cut.played_s == pytest.approx(0.51, abs=1e-6)
    assert abs(cut.played_s - fake.heard_s(1.0)) <= 0.03 + 1e-9
    # The mark for 0.6 s was pending at the provider and came back at once: not played.
    assert session.stats.marks_cut >= 1
    assert session.stats.clear_to_silence_s == pytest.approx(0.06)
    assert second.played_s == pytest.approx(_frames(0.3))
    assert session.played_s == pytest.approx(0.51 + _frames(0.3))
    assert session.stats.clears == 1 and session.stats.frames_cleared > 0


def test_a_clear_resolves_everything_at_once() -> None:
    session = RecordedSession(call_info(), now=0.0)
    session.send_audio(tone(440, 1.0, 16000).tobytes(), 16000, 0.0)
    commands, events = session.poll(0.0)
    assert events == [PlayoutStarted()]
    assert not session.all_played and session.bot_speaking
    assert session.clear(0.05) == [ClearAudio()]
    assert session.all_played and not session.bot_speaking
    assert session.next_deadline() == pytest.approx(0.05)
    commands, events = session.poll(0.05)
    assert commands == [] and events == [PlayoutStopped(pytest.approx(0.05), cut=True)]
    assert session.next_deadline() is None
    # Echoes of the cut marks are not played audio.
    for c in [c for c in session.poll(0.06)[0] if isinstance(c, SendMark)]:
        session.receive_event(MarkPlayed(c.name), 0.07)
    assert session.played_s == pytest.approx(0.05)
    # A second clear with nothing playing cuts nothing: no message for the provider
    # (Pipecat interrupts at every user turn, speaking or not).
    assert session.clear(0.1) == []
    assert session.stats.clears_skipped == 1
    assert session.poll(0.1) == ([], [])


def test_back_to_back_utterances_never_overlap() -> None:
    session = RecordedSession(call_info(), now=0.0)
    fake = FakeProvider()
    actions = [
        (0.0, send(tone(440, 0.3, 24000), 24000)), (0.0, end_utterance),
        (0.05, send(tone(550, 0.5, 24000), 24000)), (0.05, end_utterance),
    ]
    trace = drive(session, fake, actions, until=2.0)
    playout = _playout(trace.events)
    assert playout == [PlayoutStarted(), PlayoutStopped(pytest.approx(_frames(0.3))),
                       PlayoutStarted(), PlayoutStopped(pytest.approx(_frames(0.5)))]


def test_the_clock_stands_in_when_the_provider_never_echoes() -> None:
    session = RecordedSession(call_info(), mark_grace=1.0, now=0.0)
    fake = FakeProvider(echo_marks=False)
    trace = drive(session, fake, [(0.0, send(tone(440, 0.5, 24000), 24000)), (0.0, end_utterance)],
                  until=3.0)
    total = _frames(0.5)
    (t_stop, stopped), = trace.of(PlayoutStopped)
    assert stopped == PlayoutStopped(pytest.approx(total), cut=False)
    assert t_stop == pytest.approx(total + 1.0)  # scheduled end + grace
    assert session.stats.marks_timed_out == session.stats.marks_sent == 3
    assert session.all_played and session.played_s == pytest.approx(total)


def test_plivo_checkpoints_with_the_first_never_acknowledged() -> None:
    session = RecordedSession(call_info("plivo"), now=0.0)
    fake = FakeProvider("plivo", skip_first_checkpoint=True)
    trace = drive(session, fake, [(0.0, send(tone(440, 1.0, 24000), 24000)), (0.0, end_utterance)],
                  until=3.0)
    total = _frames(1.0)
    (t_stop, stopped), = trace.of(PlayoutStopped)
    assert stopped.played_s == pytest.approx(total)
    assert t_stop == pytest.approx(total + 0.06)  # not held up by the missing first ack
    assert session.stats.marks_timed_out == 0  # the second ack confirmed the first too


def test_a_short_plivo_utterance_with_only_the_unacknowledged_checkpoint() -> None:
    session = RecordedSession(call_info("plivo"), mark_grace=0.5, now=0.0)
    fake = FakeProvider("plivo", skip_first_checkpoint=True)
    trace = drive(session, fake, [(0.0, send(tone(440, 0.1, 24000), 24000)), (0.0, end_utterance)],
                  until=2.0)
    (t_stop, _stopped), = trace.of(PlayoutStopped)
    assert t_stop == pytest.approx(_frames(0.1) + 0.5)
    assert session.stats.marks_timed_out == 1 and session.all_played


def test_plivo_clear_is_timed_by_cleared_audio() -> None:
    fmt = MediaFormat("l16", 16000)
    session = RecordedSession(call_info("plivo", inbound=fmt), now=0.0)
    fake = FakeProvider("plivo", latency=0.025)
    actions = [(0.0, send(tone(440, 1.0, 16000), 16000)), (0.3, clear(fake))]
    trace = drive(session, fake, actions, until=2.0)
    (_, stopped), = trace.of(PlayoutStopped)
    assert stopped.cut and stopped.played_s == pytest.approx(0.3)
    assert session.stats.clear_to_silence_s == pytest.approx(0.05)
    assert [c for t, c in fake.received if isinstance(c, SendAudio) and t > 0.3] == []


def test_a_partial_frame_keeps_all_played_false_until_flushed_and_heard() -> None:
    session = RecordedSession(call_info(), now=0.0, idle_flush=0.02)
    session.send_audio(tone(440, 0.01, 8000).tobytes(), 8000, 0.0)
    assert session.poll(0.0) == ([], [])
    assert not session.all_played  # 10 ms waiting for a whole frame is not "played"
    commands, events = session.poll(0.02)
    (mark,) = [c for c in commands if isinstance(c, SendMark)]
    assert events == [PlayoutStarted()] and not session.all_played
    assert session.receive_event(MarkPlayed(mark.name), 0.06) == [PlayoutStopped(0.02)]
    assert session.all_played and session.played_s == pytest.approx(0.02)


def test_marks_unknown_to_the_ledger_are_ignored() -> None:
    session = RecordedSession(call_info(), now=0.0)
    assert session.receive_event(MarkPlayed("utt-7"), 0.0) == []
    assert session.played_s == 0.0 and session.all_played


def test_stop_drops_outbound_and_ends() -> None:
    session = RecordedSession(call_info(), now=0.0)
    session.send_audio(tone(440, 1.0, 16000).tobytes(), 16000, 0.0)
    session.poll(0.0)
    out = session.end("hangup", 0.1)
    assert out[-1].reason == "hangup"  # type: ignore[union-attr]
    assert session.poll(0.2) == ([], [])
    assert session.next_deadline() is None
    session.send_audio(b"\x00\x00" * 100, 16000, 0.3)  # after the end: ignored, no error
    assert session.clear(0.3) == []
