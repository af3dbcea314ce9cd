"""The voice agent's service stand-ins refuse what the real services refuse, and answer
in their documented shapes, so the conversation tests' ``problems == []`` means the bot
spoke each protocol correctly (bench/voice_standins.py)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
import pytest_asyncio

from bench.voice_standins import (
    CARTESIA_KEY,
    DEEPGRAM_KEY,
    OPENAI_KEY,
    Delays,
    Script,
    VoiceServices,
    word_seconds,
)

DG_QUERY = "encoding=linear16&sample_rate=16000&channels=1&model=nova-3-general" \
           "&interim_results=true"


@pytest_asyncio.fixture
async def services() -> AsyncIterator[VoiceServices]:
    script = Script(transcripts=("Hello there | how are you?",),
                    replies=("Hi!", "Fine, thanks."))
    async with VoiceServices(script, Delays(tts_speed=100.0)) as svc:
        yield svc


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def tone(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 300 * t) * 8000).astype("<i2").tobytes()


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    return data


@pytest.mark.asyncio
@pytest.mark.parametrize(("headers", "query", "status"), [
    ({"Authorization": "Token wrong"}, DG_QUERY, 401),
    ({"Authorization": f"Bearer {DEEPGRAM_KEY}"}, DG_QUERY, 401),
    ({"Authorization": f"Token {DEEPGRAM_KEY}"}, DG_QUERY.replace("linear16", "opus"), 400),
    ({"Authorization": f"Token {DEEPGRAM_KEY}"}, DG_QUERY.replace("16000", "12345"), 400),
])
async def test_deepgram_refuses_bad_handshakes(services: VoiceServices,
                                               http: aiohttp.ClientSession,
                                               headers: dict[str, str], query: str,
                                               status: int) -> None:
    url = f"{services.base_urls['deepgram']}/v1/listen?{query}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(url, headers=headers)
    assert info.value.status == status
    assert len(services.problems) == 1


@pytest.mark.asyncio
async def test_deepgram_transcribes_parts_at_finalize_and_the_rest_at_endpointing(
    services: VoiceServices, http: aiohttp.ClientSession,
) -> None:
    url = f"{services.base_urls['deepgram']}/v1/listen?{DG_QUERY}"
    async with http.ws_connect(url, headers={"Authorization": f"Token {DEEPGRAM_KEY}"}) as ws:
        await ws.send_bytes(bytes(3200) + tone(0.9))
        interim = await next_json(ws)
        assert interim["type"] == "Results" and interim["is_final"] is False
        assert interim["channel"]["alternatives"][0]["transcript"] == "Hello"
        await ws.send_str(json.dumps({"type": "Finalize"}))  # a pause: the first part
        first = await next_json(ws)
        assert (first["is_final"], first["from_finalize"]) == (True, True)
        assert first["channel"]["alternatives"][0]["transcript"] == "Hello there"
        words = first["channel"]["alternatives"][0]["words"]
        assert [w["punctuated_word"] for w in words] == ["Hello", "there"]
        await ws.send_bytes(tone(0.3) + bytes(2 * 16000))  # more words, then silence
        rest = await next_json(ws)
        while rest["type"] == "Results" and not rest["is_final"]:
            rest = await next_json(ws)
        assert (rest["is_final"], rest["speech_final"], rest["from_finalize"]) == (
            True, True, False)
        assert rest["channel"]["alternatives"][0]["transcript"] == "how are you?"
        await ws.send_str(json.dumps({"type": "Finalize"}))  # nothing left: empty final
        empty = await next_json(ws)
        assert empty["from_finalize"] is True
        assert empty["channel"]["alternatives"][0]["transcript"] == ""
        await ws.send_str(json.dumps({"type": "CloseStream"}))
        meta = await next_json(ws)
        assert meta["type"] == "Metadata" and meta["channels"] == 1
        assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert services.stt_finals == ["Hello there", "how are you?"]
    assert services.problems == []


@pytest.mark.asyncio
async def test_deepgram_closes_on_an_unknown_control_message(
    services: VoiceServices, http: aiohttp.ClientSession,
) -> None:
    url = f"{services.base_urls['deepgram']}/v1/listen?{DG_QUERY}"
    async with http.ws_connect(url, headers={"Authorization": f"Token {DEEPGRAM_KEY}"}) as ws:
        await ws.send_str(json.dumps({"type": "Flush"}))
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
    assert services.problems and "unknown control message" in services.problems[0]


def chat(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-4.1", "stream": True,
                            "stream_options": {"include_usage": True},
                            "messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "Hello"}]}
    body.update(overrides)
    return body


@pytest.mark.asyncio
@pytest.mark.parametrize(("key", "body", "status"), [
    ("sk-wrong", chat(), 401),
    (OPENAI_KEY, chat(stream=False), 400),
    (OPENAI_KEY, chat(messages=[]), 400),
    (OPENAI_KEY, chat(messages=[{"role": "robot", "content": "x"}]), 400),
    (OPENAI_KEY, chat(tools=[{"type": "function"}]), 400),
])
async def test_openai_refuses_bad_requests(services: VoiceServices,
                                           http: aiohttp.ClientSession, key: str,
                                           body: dict[str, Any], status: int) -> None:
    async with http.post(f"{services.base_urls['openai']}/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {key}"}) as response:
        assert response.status == status
        error = (await response.json())["error"]
        assert error["type"] == "invalid_request_error"
    assert len(services.problems) == 1


@pytest.mark.asyncio
async def test_openai_streams_the_reply_as_server_sent_chunks(
    services: VoiceServices, http: aiohttp.ClientSession,
) -> None:
    async with http.post(f"{services.base_urls['openai']}/chat/completions", json=chat(),
                         headers={"Authorization": f"Bearer {OPENAI_KEY}"}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in (await response.text()).split("\n\n")
                  if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"])
    assert text == "Fine, thanks."  # one user turn: the script's second reply
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert services.problems == []


@pytest.mark.asyncio
async def test_openai_fails_a_scripted_request_on_every_retry(
    http: aiohttp.ClientSession,
) -> None:
    async with VoiceServices(Script(fail_llm=frozenset({0}))) as svc:
        url = f"{svc.base_urls['openai']}/chat/completions"
        statuses = []
        for attempt in ("0", "1", "2", "0"):
            async with http.post(url, json=chat(), headers={
                    "Authorization": f"Bearer {OPENAI_KEY}",
                    "x-stainless-retry-count": attempt}) as response:
                statuses.append(response.status)
        assert statuses == [500, 500, 500, 200]  # the next request is a new one
        assert [(r["index"], r["attempt"]) for r in svc.llm_requests] == [
            (0, 0), (0, 1), (0, 2), (1, 0)]


def tts(context_id: str, transcript: str, *, more: bool = True,
        **fmt: Any) -> dict[str, Any]:
    return {"model_id": "sonic-3", "transcript": transcript, "context_id": context_id,
            "continue": more, "voice": {"mode": "id", "id": "voice-1"},
            "output_format": {"container": "raw", "encoding": "pcm_s16le",
                              "sample_rate": 8000, **fmt}, "add_timestamps": True}


def cartesia_headers(key: str = CARTESIA_KEY, version: str = "2026-03-01") -> dict[str, str]:
    return {"X-API-Key": key, "Cartesia-Version": version}


@pytest.mark.asyncio
@pytest.mark.parametrize(("headers", "status"), [
    (cartesia_headers(key="wrong"), 401),
    ({"X-API-Key": CARTESIA_KEY}, 400),
])
async def test_cartesia_refuses_bad_handshakes(services: VoiceServices,
                                               http: aiohttp.ClientSession,
                                               headers: dict[str, str], status: int) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(services.base_urls["cartesia"], headers=headers)
    assert info.value.status == status
    assert len(services.problems) == 1


@pytest.mark.asyncio
async def test_cartesia_streams_audio_timestamps_and_done_and_honours_cancel(
    services: VoiceServices, http: aiohttp.ClientSession,
) -> None:
    async with http.ws_connect(services.base_urls["cartesia"],
                               headers=cartesia_headers()) as ws:
        await ws.send_str(json.dumps(tts("c1", "Hello there friend.")))
        await ws.send_str(json.dumps(tts("c1", "", more=False)))
        audio, stamps = b"", None
        while True:
            msg = await next_json(ws)
            assert msg["context_id"] == "c1"
            if msg["type"] == "chunk":
                audio += base64.b64decode(msg["data"])
            elif msg["type"] == "timestamps":
                stamps = msg["word_timestamps"]
            else:
                assert msg["type"] == "done" and msg["done"] is True
                break
        assert stamps is not None and stamps["words"] == ["Hello", "there", "friend."]
        assert stamps["start"][0] == 0.0
        expected = sum(word_seconds(w) + 0.06 for w in stamps["words"])
        assert abs(len(audio) / 2 / 8000 - expected) < 0.01  # 8 kHz as asked
        # A bad format is an error message for its context; the socket stays up.
        await ws.send_str(json.dumps(tts("c2", "Hi.", sample_rate=12345)))
        error = await next_json(ws)
        assert (error["type"], error["context_id"]) == ("error", "c2")
        # A cancelled context makes no more audio.
        await ws.send_str(json.dumps(tts("c3", " ".join(["word"] * 50))))
        await next_json(ws)
        await ws.send_str(json.dumps({"context_id": "c3", "cancel": True}))
        await asyncio.sleep(0.2)
        while True:
            try:
                msg = await asyncio.wait_for(ws.receive(), 0.2)
            except TimeoutError:
                break
        assert services.tts_cancels == ["c3"]
        await ws.send_str(json.dumps(tts("c4", "Again.", more=False)))
        kinds = []
        while not kinds or kinds[-1] != "done":
            msg = await next_json(ws)
            assert msg["context_id"] == "c4"  # nothing more of c3
            kinds.append(msg["type"])
    assert len(services.problems) == 1 and "sample_rate" in services.problems[0]
