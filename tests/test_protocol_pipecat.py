"""Interoperability with Pipecat 1.14 on the same messages.

* Inbound: for each documented session, our ``CallInfo`` carries what Pipecat's
  ``parse_telephony_websocket`` extracts (provider, call id, stream id, custom
  parameters, numbers), and Pipecat's serializers decode the same audio and digits from
  the media/dtmf messages we turn into events.
* Outbound: for the same audio, our media frames equal (as parsed JSON) what Pipecat's
  Twilio/Telnyx/Plivo serializers emit, and so do our clear frames; Pipecat's
  deserializers read our Twilio/Telnyx media frames back to the same audio.
"""

from __future__ import annotations

import audioop
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _util_protocols import load, new_protocol, to_wire, vector_files
from pipecat.frames.frames import (
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
)
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.serializers.plivo import PlivoFrameSerializer
from pipecat.serializers.telnyx import TelnyxFrameSerializer
from pipecat.serializers.twilio import TwilioFrameSerializer

from mediastream.protocols import (
    AudioReceived,
    ClearAudio,
    DtmfReceived,
    MediaStreamProtocol,
    SendAudio,
    StreamStarted,
)


class InMemoryWebSocket:
    """What ``parse_telephony_websocket`` needs of a FastAPI WebSocket: ``iter_text``."""

    def __init__(self, messages: list[str]) -> None:
        self._messages = messages

    async def iter_text(self) -> AsyncIterator[str]:
        for message in self._messages:
            yield message


#: Sessions Pipecat can see in full: no query string or header options (it never
#: reads the upgrade URL) and a PCMU stream (its serializers assume μ-law/A-law at 8 kHz).
PLAIN_SESSIONS = [
    (provider, path)
    for provider, path in vector_files("session")
    if "options" not in load(path)
]


def _ids(value: object) -> str:
    return value.stem if isinstance(value, Path) else str(value)


def _run(provider: str, vector: dict[str, Any]) -> tuple[MediaStreamProtocol, list[Any]]:
    protocol = new_protocol(provider, vector)
    events = [e for m in vector["messages"] for e in protocol.receive(to_wire(m))]
    return protocol, events


@pytest.mark.asyncio
@pytest.mark.parametrize(("provider", "path"), PLAIN_SESSIONS, ids=_ids)
async def test_call_info_matches_parse_telephony_websocket(provider: str, path: Path) -> None:
    vector = load(path)
    wire = [str(to_wire(m)) for m in vector["messages"]]
    transport, call_data = await parse_telephony_websocket(InMemoryWebSocket(wire))
    _, events = _run(provider, vector)
    call = next(e.call for e in events if isinstance(e, StreamStarted))

    assert transport == provider
    assert call.call_id == call_data.call_id
    assert call.stream_id == call_data.stream_id
    if provider == "twilio":
        assert dict(call.custom_parameters) == call_data.body
        assert call.from_number == call_data.from_number
        assert call.to_number == call_data.to_number
    if provider == "telnyx":
        assert call.from_number == call_data.from_number
        assert call.to_number == call_data.to_number
        assert call.inbound_format.encoding.upper() == call_data.outbound_encoding


async def _serializer(provider: str, stream_id: str, encoding: str = "PCMU") -> FrameSerializer:
    serializer: FrameSerializer
    if provider == "twilio":
        serializer = TwilioFrameSerializer(
            stream_id,
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False, sample_rate=8000),
        )
    elif provider == "telnyx":
        serializer = TelnyxFrameSerializer(
            stream_id,
            outbound_encoding=encoding,
            inbound_encoding=encoding,
            params=TelnyxFrameSerializer.InputParams(auto_hang_up=False, sample_rate=8000),
        )
    else:
        serializer = PlivoFrameSerializer(
            stream_id,
            params=PlivoFrameSerializer.InputParams(auto_hang_up=False, sample_rate=8000),
        )
    # The pipeline rate is given in params, so setup reads nothing from its argument.
    await serializer.setup(SimpleNamespace(audio_in_sample_rate=8000))  # type: ignore[arg-type]
    return serializer


def _decode(encoding: str, payload: bytes) -> bytes:
    return audioop.ulaw2lin(payload, 2) if encoding == "pcmu" else audioop.alaw2lin(payload, 2)


@pytest.mark.asyncio
@pytest.mark.parametrize(("provider", "path"), PLAIN_SESSIONS, ids=_ids)
async def test_pipecat_decodes_the_same_audio_and_digits(provider: str, path: Path) -> None:
    vector = load(path)
    protocol, _ = _run(provider, vector)
    assert protocol.call is not None
    fmt = protocol.call.inbound_format
    serializer = await _serializer(provider, protocol.call.stream_id, fmt.encoding.upper())
    ours = new_protocol(provider, vector)
    # Ours, over the whole stream: Telnyx digits come out once they are known to be in
    # press order (held, released by later media or the stop), not on their own message.
    events = [e for m in vector["messages"] for e in ours.receive(to_wire(m))]
    audio = [e for e in events if isinstance(e, AudioReceived)]
    digits = [e.digit for e in events if isinstance(e, DtmfReceived)]
    frames = [
        await serializer.deserialize(str(to_wire(m)))
        for m in vector["messages"]
        if m["event"] in {"media", "dtmf"}
    ]
    pipecat_audio = [f for f in frames if isinstance(f, InputAudioRawFrame)]
    pipecat_digits = [f.button.value for f in frames if isinstance(f, InputDTMFFrame)]
    assert len(pipecat_audio) + len(pipecat_digits) == len(frames)
    assert [f.audio for f in pipecat_audio] == [
        _decode(fmt.encoding, e.payload) for e in audio
    ]
    assert digits == pipecat_digits
    assert len(frames) >= 1


STARTS = {
    provider: next(path for p, path in vector_files("outbound") if p == provider)
    for provider in ("twilio", "telnyx", "plivo")
}


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", sorted(STARTS))
async def test_our_outbound_frames_equal_pipecats(provider: str) -> None:
    vector = load(STARTS[provider])
    protocol, _ = _run(provider, vector)
    assert protocol.call is not None
    serializer = await _serializer(provider, protocol.call.stream_id)

    # 20 ms of a ramp, as Pipecat's TTS would hand it over (16-bit PCM at 8 kHz).
    pcm = b"".join(((i * 211) % 65536 - 32768).to_bytes(2, "little", signed=True)
                   for i in range(160))
    theirs = await serializer.serialize(OutputAudioRawFrame(pcm, 8000, 1))
    assert isinstance(theirs, str)
    ulaw = base64.b64decode(json.loads(theirs)["media"]["payload"])
    assert ulaw == audioop.lin2ulaw(pcm, 2)
    [ours] = protocol.send(SendAudio(ulaw))
    assert json.loads(ours) == json.loads(theirs)

    [our_clear] = protocol.send(ClearAudio())
    their_clear = await serializer.serialize(InterruptionFrame())
    assert isinstance(their_clear, str)
    assert json.loads(our_clear) == json.loads(their_clear)

    if provider in {"twilio", "telnyx"}:  # Plivo's playAudio is not something it reads
        frame = await serializer.deserialize(ours)
        assert isinstance(frame, InputAudioRawFrame)
        assert frame.audio == audioop.ulaw2lin(ulaw, 2)
