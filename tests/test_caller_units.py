"""The caller simulator's pieces without a network: dialect messages, answer documents,
signatures (cross-checked with the providers' SDKs), the playout buffer and the detector."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from mediastream.caller.analysis import measure
from mediastream.caller.answer import AnswerError, parse_answer
from mediastream.caller.audio import FRAME_MS, ProbeConfig, probe_plan, speech_plan
from mediastream.caller.dialects import (
    PlivoCaller,
    ServerClear,
    ServerDtmf,
    ServerMark,
    ServerMedia,
    ServerOther,
    TelnyxCaller,
    TwilioCaller,
    dialect_for,
    new_identity,
)
from mediastream.caller.faults import Fault, FaultPlan, parse_fault
from mediastream.caller.playout import Gap, Playout
from mediastream.caller.signing import plivo_v3_signature, twilio_signature
from mediastream.protocols.events import MediaFormat

PCMU = MediaFormat("pcmu", 8000)
PAYLOAD = base64.b64encode(bytes(range(160)))


# ------------------------------------------------------------------ dialect messages


def test_twilio_messages_match_the_documented_shapes() -> None:
    ids = new_identity("twilio")
    d = TwilioCaller(ids, PCMU, PCMU, {"tenant": "acme"})
    connected, start = (json.loads(m) for m in d.opening(0))
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["sequenceNumber"] == "1" and start["streamSid"] == ids.stream_id
    assert start["start"]["customParameters"] == {"tenant": "acme"}
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1,
    }
    assert ids.call_id.startswith("CA") and len(ids.call_id) == 34
    media = json.loads(d.media(PAYLOAD, 40))
    # §1.2: every counter is a JSON string; sequenceNumber continues after start.
    assert media == {
        "event": "media", "sequenceNumber": "2",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "40",
                  "payload": PAYLOAD.decode()},
        "streamSid": ids.stream_id,
    }
    dtmf = json.loads(d.dtmf("5"))
    assert dtmf["dtmf"] == {"track": "inbound_track", "digit": "5"}
    assert dtmf["sequenceNumber"] == "3"
    assert json.loads(d.mark_played("m1"))["mark"] == {"name": "m1"}
    stop = json.loads(d.stop())
    assert stop["stop"] == {"accountSid": ids.account_id, "callSid": ids.call_id}
    assert stop["sequenceNumber"] == "5"
    assert d.cleared() is None


def test_telnyx_messages_are_snake_case_with_media_format() -> None:
    ids = new_identity("telnyx")
    l16 = MediaFormat("l16", 16000, byteorder="big")
    d = TelnyxCaller(ids, l16, PCMU, {"customer_id": "c1"})
    connected, start = (json.loads(m) for m in d.opening(0))
    assert connected == {"event": "connected", "version": "1.0.0"}
    assert start["stream_id"] == ids.stream_id and start["sequence_number"] == "1"
    assert start["start"]["call_control_id"] == ids.call_id
    assert start["start"]["custom_parameters"] == {"customer_id": "c1"}
    assert start["start"]["media_format"] == {"encoding": "L16", "sample_rate": 16000,
                                              "channels": 1}
    media = json.loads(d.media(PAYLOAD, 20))
    assert media["sequence_number"] == "2" and media["media"]["chunk"] == "1"
    assert media["stream_id"] == ids.stream_id
    assert json.loads(d.dtmf("#")) == {
        "event": "dtmf", "stream_id": ids.stream_id, "sequence_number": "3",
        "dtmf": {"digit": "#"},
    }


def test_plivo_messages_use_numbers_and_extra_headers() -> None:
    ids = new_identity("plivo")
    d = PlivoCaller(ids, PCMU, PCMU, {"userId": "12345", "sessionId": "abc"})
    (start,) = (json.loads(m) for m in d.opening(1_700_000_000_000))
    assert start["sequenceNumber"] == 1
    assert start["start"]["callId"] == ids.call_id
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000}
    assert start["extra_headers"] == "userId=12345;sessionId=abc"
    media = json.loads(d.media(PAYLOAD, 60))
    # §3.2: sequenceNumber and chunk are numbers, the timestamp an epoch-ms string.
    assert media["sequenceNumber"] == 2 and media["media"]["chunk"] == 1
    assert media["media"]["timestamp"] == "1700000000060"
    assert json.loads(d.mark_played("cp")) == {
        "event": "playedStream", "streamId": ids.stream_id, "name": "cp",
    }
    assert json.loads(d.cleared() or b"") == {
        "sequenceNumber": 0, "event": "clearedAudio", "streamId": ids.stream_id,
    }
    assert d.stop() is None
    with pytest.raises(ValueError):
        PlivoCaller(ids, MediaFormat("pcma", 8000), PCMU)


def test_parsing_what_a_server_sends() -> None:
    ids = new_identity("twilio")
    d = TwilioCaller(ids, PCMU, PCMU)
    sid = ids.stream_id
    ok = d.parse(json.dumps({"event": "media", "streamSid": sid,
                             "media": {"payload": PAYLOAD.decode()}}))
    assert ok.message == ServerMedia(bytes(range(160)), PCMU) and not ok.violations
    assert d.parse(json.dumps({"event": "mark", "streamSid": sid,
                               "mark": {"name": "a"}})).message == ServerMark("a")
    assert isinstance(d.parse(json.dumps({"event": "clear", "streamSid": sid})).message,
                      ServerClear)
    wrong = d.parse(json.dumps({"event": "clear", "streamSid": "MZnope"}))
    assert wrong.violations and wrong.violations[0].startswith("31951")
    for bad in ("not json", "[]", '{"event": "playAudio"}',
                json.dumps({"event": "media", "streamSid": sid, "media": {"payload": "%%"}})):
        parsed = d.parse(bad)
        assert isinstance(parsed.message, ServerOther) and parsed.violations, bad

    p = PlivoCaller(new_identity("plivo"), PCMU, PCMU)
    play = p.parse(json.dumps({"event": "playAudio", "media": {
        "contentType": "audio/x-l16", "sampleRate": 16000, "payload": PAYLOAD.decode()}}))
    assert isinstance(play.message, ServerMedia)
    assert play.message.format == MediaFormat("l16", 16000)
    assert any("differs" in v for v in play.violations)
    assert p.parse('{"event":"checkpoint","name":"x"}').message == ServerMark("x")
    assert p.parse('{"event":"sendDTMF","dtmf":"12#"}').message == ServerDtmf("12#")

    t = TelnyxCaller(new_identity("telnyx"), PCMU, PCMU)
    short = t.parse(json.dumps({"event": "media",
                                "media": {"payload": base64.b64encode(b"\xff" * 80).decode()}}))
    assert any("20 ms minimum" in v for v in short.violations)


# ------------------------------------------------------------------ answer documents


def test_twiml_stream_url_parameters_and_dropped_query() -> None:
    doc = """<?xml version="1.0" encoding="UTF-8"?><Response><Connect>
      <Stream url="wss://media.example.com/ws/twilio?token=x" name="agent">
        <Parameter name="tenant" value="acme"/><Parameter name="to" value="+1555"/>
      </Stream></Connect></Response>"""
    target = parse_answer(doc, "twilio")
    assert target.url == "wss://media.example.com/ws/twilio"
    assert target.parameters == {"tenant": "acme", "to": "+1555"}
    assert target.bidirectional and target.warnings  # the dropped query string
    relative = parse_answer('<Response><Connect><Stream url="/ws/twilio"/></Connect></Response>',
                            "twilio", base_url="https://h.example:8443/twilio/voice")
    assert relative.url == "wss://h.example:8443/ws/twilio"
    fork = parse_answer('<Response><Start><Stream url="wss://a/b"/></Start></Response>', "twilio")
    assert not fork.bidirectional


def test_texml_formats_and_plivo_xml() -> None:
    doc = """<Response><Connect><Stream url="wss://m/ws/telnyx" bidirectionalMode="rtp"
      codec="PCMA" bidirectionalCodec="PCMU" bidirectionalSamplingRate="8000">
      <Parameter name="k" value="v"/></Stream></Connect></Response>"""
    t = parse_answer(doc, "telnyx")
    assert t.inbound == MediaFormat("pcma", 8000) and t.outbound == PCMU
    assert t.parameters == {"k": "v"} and t.bidirectional
    mp3 = parse_answer('<Response><Connect><Stream url="wss://m/x"/></Connect></Response>',
                       "telnyx")
    assert not mp3.bidirectional and "mp3" in mp3.warnings[0]
    plivo = parse_answer(
        '<Response><Stream bidirectional="true" keepCallAlive="true" '
        'contentType="audio/x-l16;rate=16000" extraHeaders="tenant=acme,callRef=abc123">'
        "wss://m/ws/plivo</Stream></Response>", "plivo")
    assert plivo.url == "wss://m/ws/plivo" and plivo.bidirectional
    assert plivo.inbound == MediaFormat("l16", 16000, byteorder="little")
    assert plivo.parameters == {"tenant": "acme", "callRef": "abc123"}
    for bad in ("<nope", "<Other/>", "<Response><Hangup/></Response>",
                "<Response><Say>hi</Say></Response>"):
        with pytest.raises(AnswerError):
            parse_answer(bad, "twilio")


# ------------------------------------------------------------------ signatures


def test_signatures_match_the_documented_vectors_and_sdks() -> None:
    from plivo.utils import validate_v3_signature
    from twilio.request_validator import RequestValidator

    params = {
        "AccountSid": "AC0123456789abcdef0123456789abcdef",
        "CallSid": "CA0123456789abcdef0123456789abcdef",
        "CallStatus": "ringing", "Direction": "inbound",
        "From": "+15551230001", "To": "+15559870002",
    }
    url = "https://example.com/twilio/voice"
    sig = twilio_signature("test_auth_token_123", url, params)
    assert sig == "KTpMg6SqJvqLsj+8HQARivkCc6w="
    assert RequestValidator("test_auth_token_123").validate(url, params, sig)
    assert twilio_signature("test_auth_token_123", "wss://example.com/twilio/ws") == (
        "uHQGKw7OXWoeE9KSsP1jbUGw16Q="
    )
    plivo_params = {
        "CallUUID": "b1c2d3e4-0000-1111-2222-333344445555", "From": "15551230001",
        "To": "15559870002", "CallStatus": "ringing", "Direction": "inbound",
    }
    nonce = "12345678901234567890"
    psig = plivo_v3_signature("plivo_auth_token_abc", "https://example.com/plivo/answer",
                              nonce, plivo_params)
    assert psig == "DUXSnEjRRs24Ia8vBFePxVnxg9RqJgkv2dl1s+l5PyA="
    assert validate_v3_signature("POST", "https://example.com/plivo/answer", nonce,
                                 "plivo_auth_token_abc", psig, plivo_params)


def test_fault_specs() -> None:
    assert parse_fault("jitter:15") == Fault("jitter", 15.0)
    assert parse_fault("reorder:0.1") == Fault("reorder", 0.1)
    assert parse_fault("stall:500@2") == Fault("stall", 500.0, 2.0)
    assert parse_fault("close@3.5") == Fault("close", at=3.5)
    assert parse_fault("halfopen@1") == Fault("halfopen", at=1.0)
    for bad in ("jitter:-1", "reorder:2", "stall:5", "close@", "flood:1"):
        with pytest.raises(ValueError):
            parse_fault(bad)
    plan = FaultPlan.of([parse_fault("jitter:5"), parse_fault("stall:100@1")])
    assert plan.jitter_ms == 5 and len(plan.stalls) == 1 and plan.any
    assert not FaultPlan().any


# ------------------------------------------------------------------ playout buffer


def test_playout_plays_20_ms_per_tick_acks_marks_after_their_audio_and_clears() -> None:
    p = Playout(rate=8000, t_ref=100.0)
    frame = b"\x00" * 160  # 20 ms of loud μ-law (code 0 is full scale)
    p.enqueue(frame * 10, PCMU, 100.001)  # 200 ms in one message, just after tick 100.0
    assert not p.add_mark("m1", 100.001)
    # The tick due at 100.0 comes before the audio arrived: it waits for the next tick.
    assert p.advance(100.0) == [] and p.pieces == []
    acks = [p.advance(100.02 + k * 0.02) for k in range(11)]
    # Ten ticks play it (100.02 .. 100.22); the mark is acknowledged on the tick at its end.
    assert acks[:10] == [[]] * 10 and acks[10] == ["m1"]
    assert [piece.start for piece in p.pieces] == [160 * (k + 1) for k in range(10)]
    # A mark with nothing queued or playing is played at once (§2.2, Telnyx).
    assert p.add_mark("now", 100.3)
    # Audio after the buffer ran dry resumes on a tick; the gap is recorded then.
    p.enqueue(frame * 5, PCMU, 100.395)
    assert not p.add_mark("m2", 100.395)
    p.advance(100.40)
    assert p.gaps[-1].index == 1760 and p.gaps[-1].seconds == pytest.approx(0.18)
    # A clear 5 ms into that tick: the rest is dropped, the pending mark returned.
    assert p.clear(100.405) == ["m2"]
    assert p.end_index == 3240 and p.advance(100.42) == [] and p.advance(101.0) == []
    heard = p.heard()
    assert len(heard) == 3240
    assert np.all(heard[160:1760] != 0) and np.all(heard[1760:3200] == 0)
    assert np.all(heard[3200:3240] != 0)
    # The returned-audio timeline: when each played sample had arrived.
    times = p.arrival_times(np.array([160, 170, 320, 3200]))
    assert times == pytest.approx([100.001, 100.00225, 100.021, 100.395])


# ------------------------------------------------------------------ the detector


def _heard_from(sent: np.ndarray, shift: int, drop_frames: tuple[int, ...] = ()) -> np.ndarray:
    out = np.zeros(len(sent) + shift, dtype=np.int16)
    out[shift:] = sent
    for j in drop_frames:
        out[shift + j * 160 : shift + (j + 1) * 160] = 0
    return out


@pytest.mark.parametrize("shift", [0, 1, 337, 1000])
def test_probe_latency_is_exact_to_a_sample(shift: int) -> None:
    plan = probe_plan(PCMU, 3.0)
    t_ref = 50.0
    send_times = t_ref + np.arange(len(plan.frames)) * FRAME_MS / 1000
    heard = _heard_from(plan.pcm, shift)
    p = Playout(rate=8000, t_ref=t_ref)
    m = measure(plan, send_times, len(plan.frames), heard, 8000, t_ref, float("inf"), [], [],
                p.arrival_times)
    assert m.probes_counted == len(plan.probes) == 5
    assert m.probes_matched == 5
    assert m.latencies_ms == pytest.approx([shift / 8] * 5, abs=0.126)
    assert m.lost_ms == 0 and m.jitter_ms == pytest.approx(0, abs=0.01)


def test_lost_frames_and_missing_probes_are_counted() -> None:
    plan = probe_plan(PCMU, 3.0)
    send_times = np.arange(len(plan.frames)) * 0.02
    first = plan.probes[0].frame
    # Drop one frame inside probe 0 and the whole of probe 2.
    p2 = plan.probes[2]
    heard = _heard_from(plan.pcm, 160, (first + 4, *range(p2.frame, p2.frame + p2.frames)))
    p = Playout(rate=8000, t_ref=0.0)
    m = measure(plan, send_times, len(plan.frames), heard, 8000, 0.0, float("inf"), [], [],
                p.arrival_times)
    assert m.probes_matched == 4
    assert m.lost_ms == pytest.approx(20 + 200, abs=0.5)
    assert m.latencies_ms == pytest.approx([20.0] * 4, abs=0.13)


def test_tone_split_by_a_playout_gap_is_late_not_lost() -> None:
    plan = probe_plan(PCMU, 3.0)  # 200 ms tones, 500 ms period: 150 ms of slack
    send_times = np.arange(len(plan.frames)) * 0.02
    p1 = plan.probes[1]
    # The buffer ran dry 300 ms after the first 60 ms of probe 1; the rest came after.
    cut = 160 + (p1.frame + 3) * 160
    heard = np.concatenate(
        (np.zeros(160, np.int16), plan.pcm[: cut - 160], np.zeros(2400, np.int16),
         plan.pcm[cut - 160 :]))
    gap = Gap(cut, 0.3)
    arrival = Playout(rate=8000, t_ref=0.0).arrival_times
    m = measure(plan, send_times, len(plan.frames), heard, 8000, 0.0, float("inf"), [gap], [],
                arrival)
    assert m.probes_matched == 5 and m.lost_ms == 0
    assert m.underruns == 1 and m.underrun_ms == pytest.approx(300)
    # Without the gap in the record the same audio is a loss: 140 ms fell outside the window.
    m = measure(plan, send_times, len(plan.frames), heard, 8000, 0.0, float("inf"), [], [],
                arrival)
    assert m.lost_ms == pytest.approx(140, abs=0.5)
    # A gap where a frame never came is still a loss (the playout records it as a gap too).
    first = plan.probes[0].frame
    dropped = _heard_from(plan.pcm, 160, (first + 4,))
    m = measure(plan, send_times, len(plan.frames), dropped, 8000, 0.0, float("inf"),
                [Gap(160 + (first + 4) * 160, 0.02)], [], arrival)
    assert m.lost_ms == pytest.approx(20, abs=0.5)


def test_probes_are_matched_by_frequency_when_latency_exceeds_a_period() -> None:
    cfg = ProbeConfig(tone_ms=100, period_ms=300, lead_ms=100, tail_ms=900)
    plan = probe_plan(PCMU, 4.0, cfg)
    send_times = np.arange(len(plan.frames)) * 0.02
    shift = int(0.64 * 8000)  # 640 ms: longer than two periods
    heard = _heard_from(plan.pcm, shift)
    m = measure(plan, send_times, len(plan.frames), heard, 8000, 0.0, float("inf"), [], [],
                Playout(rate=8000, t_ref=0.0).arrival_times)
    assert m.probes_matched == m.probes_counted > 3
    assert m.latencies_ms == pytest.approx([640.0] * m.probes_matched, abs=0.13)


def test_speech_utterances_and_response_time() -> None:
    rate = 8000
    rng = np.random.default_rng(1)
    pcm = np.zeros(rate * 3, dtype=np.int16)
    pcm[800:4800] = rng.normal(0, 6000, 4000).astype(np.int16)  # 0.1 .. 0.6 s
    pcm[12000:16000] = rng.normal(0, 6000, 4000).astype(np.int16)  # 1.5 .. 2.0 s
    plan = speech_plan(PCMU, 3.0, pcm, rate)
    assert plan.utterances == [(5, 30), (75, 100)]
    # --wav-at: the same speech one second later (after a bot's greeting).
    assert speech_plan(PCMU, 4.0, pcm, rate, start_s=1.0).utterances == [(55, 80), (125, 150)]
    send_times = np.arange(len(plan.frames)) * 0.02
    heard = np.zeros(rate * 4, dtype=np.int16)
    # The "bot" answers 250 ms after each utterance with 300 ms of tone.
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(2400) / rate)).astype(np.int16)
    for end in (0.6, 2.0):
        start = round((end + 0.25) * rate)
        heard[start : start + 2400] = tone
    m = measure(plan, send_times, len(plan.frames), heard, rate, 0.0, float("inf"), [], [],
                Playout(rate=rate, t_ref=0.0).arrival_times)
    assert m.latencies_ms == pytest.approx([250.0, 250.0], abs=0.5)


@pytest.mark.asyncio
async def test_the_ticker_spreads_calls_over_phases_and_keeps_each_on_its_20_ms_clock() -> None:
    import asyncio

    from mediastream.caller.ticker import PHASES, Ticker

    class Member:
        def __init__(self) -> None:
            self.dues: list[float] = []

        def tick(self, k: int, due: float) -> None:
            self.dues.append(due)

    ticker = Ticker()
    members = [Member() for _ in range(2 * PHASES)]
    for m in members:
        ticker.add(m)
    ticker.add(members[0])  # joining twice changes nothing
    assert len(ticker) == 2 * PHASES
    ticker.start()
    try:
        while min(len(m.dues) for m in members) < 6:
            await asyncio.sleep(0.01)
        leaving = members[-1]
        assert ticker.remove(leaving) and not ticker.remove(leaving)
        seen = len(leaving.dues)
        await asyncio.sleep(0.05)
    finally:
        await ticker.stop()
    assert len(leaving.dues) == seen  # no tick after it left
    for m in members:  # each on its own drift-free 20 ms clock, none skipped
        steps = np.diff(m.dues)
        assert np.allclose(steps, 0.02, atol=1e-9), steps
    # Two calls in each phase, the phases 4 ms apart.
    t0 = min(m.dues[0] for m in members)
    offsets = sorted(round(((m.dues[0] - t0) % 0.02) * 1000, 6) for m in members)
    assert offsets == [p * 20 / PHASES for p in range(PHASES) for _ in range(2)]


@pytest.mark.parametrize("provider", ["twilio", "telnyx", "plivo"])
def test_both_tracks_number_each_track_on_its_own(provider: str) -> None:
    # A both-tracks fork (Twilio <Start><Stream track="both_tracks">, §1.2): start lists
    # both tracks; media alternate inbound/outbound, each with its own chunk counter,
    # one sequence counter for all.
    ids = new_identity(provider)  # type: ignore[arg-type]
    d = dialect_for(provider)(ids, PCMU, PCMU, {}, ("inbound", "outbound"))
    start = json.loads(d.opening(1_700_000_000_000)[-1])
    if provider != "telnyx":  # Telnyx's start carries no tracks list (§2.2)
        assert start["start"]["tracks"] == ["inbound", "outbound"]
    sent = [json.loads(d.media(PAYLOAD, 20 * (i // 2), "outbound" if i % 2 else "inbound"))
            for i in range(4)]
    assert [m["media"]["track"] for m in sent] == ["inbound", "outbound"] * 2
    assert [int(m["media"]["chunk"]) for m in sent] == [1, 1, 2, 2]
    seq = "sequence_number" if provider == "telnyx" else "sequenceNumber"
    assert [int(m[seq]) for m in sent] == [2, 3, 4, 5]
    # Our own protocol layer reads each track's frames as that track's.
    from mediastream.protocols import AudioReceived, protocol_for

    protocol = protocol_for(provider)
    for message in d.opening(1_700_000_000_000):
        protocol.receive(message.decode())
    events = [protocol.receive(json.dumps(m))[0] for m in sent]
    assert [(e.track, e.chunk) for e in events if isinstance(e, AudioReceived)] == [
        ("inbound", 1), ("outbound", 1), ("inbound", 2), ("outbound", 2)]
