"""Local stand-ins for the voice agent's three services: Deepgram, OpenAI, Cartesia.

``bot.voice_agent`` talks to Deepgram's live transcription WebSocket, OpenAI's streaming
chat completions and Cartesia's TTS WebSocket. None of them can be reached here (and
they cost money), so the conversation tests and ``bench voice`` point the bot at these
servers through the services' own base-URL options (``DEEPGRAM_BASE_URL``,
``OPENAI_BASE_URL``, ``CARTESIA_URL``). One aiohttp server on 127.0.0.1 answers all three
on the paths the real services use, built from their documented protocols:

* **Deepgram** ``/v1/listen`` (developers.deepgram.com, "Live audio" API reference and
  the Finalize / CloseStream / KeepAlive control messages): ``Authorization: Token KEY``;
  query ``encoding=linear16``, ``sample_rate``, ``channels=1``, ``model``; binary audio
  frames; ``Results`` messages with ``is_final`` / ``speech_final`` / ``from_finalize``,
  ``UtteranceEnd`` when ``utterance_end_ms`` is asked for, ``Metadata`` on CloseStream.
  What the caller says is found from the audio's energy (20 ms blocks), and each
  utterance gets the next transcript of the script (a Finalize mid-utterance
  finalises the part of it said before the pause).
* **OpenAI** ``POST /v1/chat/completions`` (platform.openai.com, "Chat Completions" and
  "Streaming" references): ``Authorization: Bearer KEY``; a JSON body with ``model``,
  ``messages`` and ``stream: true``; answered as server-sent events, one
  ``chat.completion.chunk`` per token, a ``finish_reason: "stop"`` chunk, a usage chunk
  when ``stream_options.include_usage`` is set, then ``data: [DONE]``. A scripted failure
  answers 500 with OpenAI's error body on every attempt of that request (the client's
  retries carry ``x-stainless-retry-count``, so an attempt is told from a new request).
* **Cartesia** ``/tts/websocket`` (docs.cartesia.ai, "TTS (WebSocket)"): ``X-API-Key``
  and ``Cartesia-Version`` headers; generation requests with ``model_id``,
  ``transcript``, ``voice {mode: id}``, ``output_format {container: raw, encoding:
  pcm_s16le, sample_rate}``, ``context_id`` and ``continue``; ``{"context_id", "cancel":
  true}`` cancels a context. Answers ``chunk`` (base64 PCM), ``timestamps``
  (``word_timestamps {words, start, end}``, seconds from the context's first sample)
  and ``done`` once a context was closed with ``continue: false`` and all its audio sent.
  Audio is made faster than real time (``Delays.tts_speed`` x), as the real service does.

Every check that fails is answered the way the service documents (HTTP 401/400 at the
handshake, an error body or message) and recorded in :attr:`VoiceServices.problems`, so a
test can assert the bot spoke each protocol correctly. Each "word" of synthesised audio
is a tone burst (its length grows with the word) followed by a short silence, so a test
can count the words a caller heard.

Delays (:class:`Delays`) model the services' own latency: zero shows what mediastream and
the pipeline add on their own; :meth:`Delays.typical` adds figures of the order the
providers publish for their streaming APIs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

__all__ = [
    "CARTESIA_KEY",
    "DEEPGRAM_KEY",
    "OPENAI_KEY",
    "Delays",
    "Script",
    "VoiceServices",
    "main",
    "word_seconds",
]

DEEPGRAM_KEY = "dg-standin-key"
OPENAI_KEY = "sk-standin-key"
CARTESIA_KEY = "ca-standin-key"

#: Output rates Cartesia's raw PCM output accepts.
CARTESIA_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
#: Rates Deepgram accepts for linear16 live audio (its docs' list of common rates).
DEEPGRAM_RATES = (8000, 16000, 24000, 32000, 44100, 48000)

#: A 20 ms block louder than this (RMS, -40 dBFS) is speech to the stand-in STT.
SPEECH_RMS = 32768 * 10 ** (-40 / 20)
#: Silence between synthesised words, seconds.
WORD_GAP_S = 0.06
TONE_HZ = 440.0
TONE_LEVEL = 0.3


def word_seconds(word: str) -> float:
    """Length of one synthesised word's tone burst: grows with the word, 0.12-0.4 s."""
    return min(0.4, max(0.12, 0.05 * len(word)))


@dataclass(frozen=True, slots=True)
class Delays:
    """The services' own latency, in seconds.

    ``stt_final``: end of speech (Finalize, or the endpointing silence) to the final
    result. ``llm_first_token``: request to the first token; ``llm_token``: between tokens.
    ``tts_first_chunk``: generation request to its first audio. ``stt_endpointing``: the
    silence after which the STT finalises an utterance by itself (no Finalize needed).
    ``tts_speed``: how many times faster than real time the TTS makes its audio.
    """

    stt_final: float = 0.0
    llm_first_token: float = 0.0
    llm_token: float = 0.0
    tts_first_chunk: float = 0.0
    stt_endpointing: float = 0.5
    tts_speed: float = 10.0

    @classmethod
    def typical(cls) -> Delays:
        """Latencies of the order the providers publish for their streaming APIs."""
        return cls(stt_final=0.15, llm_first_token=0.35, llm_token=0.02, tts_first_chunk=0.1)


@dataclass
class Script:
    """What the services "say": a transcript per caller utterance, a reply per LLM request.

    Transcripts are used in the order the utterances come, over all connections; a
    transcript may be cut with ``|`` into the parts said between the utterance's pauses
    ("Hello! | Can you hear me?"): a Finalize inside the utterance (the client's VAD
    heard a pause) finalises the next part, the endpointing silence all that is left. The
    reply to a request is picked by how many user turns its conversation holds (the
    greeting, with none, gets the first), so concurrent calls each get the script from
    its start. In both, the last one repeats. ``fail_llm`` holds the indexes (in arrival
    order) of LLM requests answered with HTTP 500, every retry of them too.
    ``drop_stt_after`` closes the Deepgram socket abruptly (no close frame) right after
    that many final transcripts; ``refuse_stt_reconnect`` then answers every later
    handshake with 503, so the STT cannot come back.
    """

    transcripts: Sequence[str] = ("Hello, can you hear me?",)
    replies: Sequence[str] = ("Hello! How can I help?",)
    fail_llm: frozenset[int] = frozenset()
    drop_stt_after: int | None = None
    refuse_stt_reconnect: bool = False


@dataclass
class _Utterance:
    parts: list[list[str]]  # the words said between pauses
    start: float
    last_voice: float
    segment_start: float = 0.0  # where the part not yet finalised began
    parts_final: int = 0  # parts already sent in final results
    words_interim: int = 0  # words of the current part shown by interim results
    next_interim: float = 0.0
    ended: bool = False  # followed by the endpointing silence: the next speech is new


@dataclass
class _Context:
    context_id: str
    rate: int
    queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    offset: float = 0.0  # seconds of audio made so far
    task: asyncio.Task[None] | None = None
    cancelled: bool = False


def _pcm_word(seconds: float, rate: int) -> bytes:
    n = round(seconds * rate)
    t = np.arange(n) / rate
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005)  # 5 ms fades: no clicks
    tone = np.sin(2 * np.pi * TONE_HZ * t) * ramp * TONE_LEVEL * 32767
    gap = np.zeros(round(WORD_GAP_S * rate))
    return np.round(np.concatenate([tone, gap])).astype("<i2").tobytes()


class VoiceServices:
    """Deepgram, OpenAI and Cartesia stand-ins on one aiohttp server on 127.0.0.1.

    ``base_urls`` gives the three services' URLs for the bot's configuration
    (:meth:`environ` as environment variables). Everything received is recorded:
    ``stt_connections`` (query and headers of each handshake), ``llm_requests`` (each
    request body, retries included, with its ``attempt``), ``tts_requests`` and
    ``tts_cancels``; ``problems`` lists every check that failed.
    """

    def __init__(self, script: Script | None = None, delays: Delays | None = None) -> None:
        self.script = script or Script()
        self.delays = delays or Delays()
        self.problems: list[str] = []
        self.stt_connections: list[dict[str, Any]] = []
        self.stt_finals: list[str] = []
        self.stt_drops = 0
        self.llm_requests: list[dict[str, Any]] = []
        self.tts_requests: list[dict[str, Any]] = []
        self.tts_cancels: list[str] = []
        self._utterances = 0
        self._llm_index = -1
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> VoiceServices:
        """Listen on a free port of 127.0.0.1."""
        return await self.start_on(0)

    async def start_on(self, port: int) -> VoiceServices:
        """Listen on ``port`` of 127.0.0.1 (0: a free one)."""
        app = web.Application()
        app.router.add_get("/v1/listen", self._deepgram)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_get("/tts/websocket", self._cartesia)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> VoiceServices:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_urls(self) -> dict[str, str]:
        host = f"127.0.0.1:{self.port}"
        return {"deepgram": f"ws://{host}", "openai": f"http://{host}/v1",
                "cartesia": f"ws://{host}/tts/websocket"}

    def environ(self) -> dict[str, str]:
        """The voice agent's keys and base URLs, pointing at this server."""
        urls = self.base_urls
        return {
            "DEEPGRAM_API_KEY": DEEPGRAM_KEY, "OPENAI_API_KEY": OPENAI_KEY,
            "CARTESIA_API_KEY": CARTESIA_KEY, "DEEPGRAM_BASE_URL": urls["deepgram"],
            "OPENAI_BASE_URL": urls["openai"], "CARTESIA_URL": urls["cartesia"],
        }

    def _problem(self, service: str, what: str) -> None:
        self.problems.append(f"{service}: {what}")

    # ------------------------------------------------------------------- Deepgram

    async def _deepgram(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        self.stt_connections.append({"query": dict(q), "headers": dict(request.headers)})
        if request.headers.get("Authorization") != f"Token {DEEPGRAM_KEY}":
            self._problem("deepgram", "bad Authorization")
            return web.json_response(
                {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}, status=401)
        if self.script.refuse_stt_reconnect and self.stt_drops:
            return web.json_response({"err_code": "SERVICE_UNAVAILABLE",
                                      "err_msg": "Service unavailable."}, status=503)
        try:
            rate = int(q.get("sample_rate", ""))
        except ValueError:
            rate = 0
        bad = []
        if q.get("encoding") != "linear16":
            bad.append(f"encoding {q.get('encoding')!r}")
        if rate not in DEEPGRAM_RATES:
            bad.append(f"sample_rate {q.get('sample_rate')!r}")
        if q.get("channels", "1") != "1":
            bad.append(f"channels {q.get('channels')!r}")
        if not q.get("model"):
            bad.append("no model")
        if bad:
            self._problem("deepgram", ", ".join(bad))
            return web.json_response({"err_code": "Bad Request", "err_msg": "; ".join(bad)},
                                     status=400)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await _DeepgramStream(self, ws, request, rate).run()
        return ws

    def _next_transcript(self) -> str:
        items = self.script.transcripts
        text = items[min(self._utterances, len(items) - 1)]
        self._utterances += 1
        return text

    # --------------------------------------------------------------------- OpenAI

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {OPENAI_KEY}":
            self._problem("openai", "bad Authorization")
            return web.json_response({"error": {
                "message": "Incorrect API key provided.", "type": "invalid_request_error",
                "param": None, "code": "invalid_api_key"}}, status=401)
        try:
            body = await request.json()
        except ValueError:
            body = None
        problems = _chat_request_problems(body, request.content_type)
        if problems:
            self._problem("openai", "; ".join(problems))
            return web.json_response({"error": {
                "message": "; ".join(problems), "type": "invalid_request_error",
                "param": None, "code": None}}, status=400)
        attempt = int(request.headers.get("x-stainless-retry-count", "0") or 0)
        if attempt == 0:
            self._llm_index += 1
        index = self._llm_index
        self.llm_requests.append({"index": index, "attempt": attempt, "body": body})
        if index in self.script.fail_llm:
            return web.json_response({"error": {
                "message": "The server had an error while processing your request. Sorry "
                           "about that!", "type": "server_error", "param": None,
                "code": None}}, status=500)
        replies = self.script.replies
        turns = sum(1 for m in body["messages"] if m.get("role") == "user")
        reply = replies[min(turns, len(replies) - 1)]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        model = body["model"]
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {"id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": model, "system_fingerprint": None,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                 "finish_reason": finish}]}
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        if self.delays.llm_first_token:
            await asyncio.sleep(self.delays.llm_first_token)
        await response.write(chunk({"role": "assistant", "content": "", "refusal": None}))
        words = reply.split(" ")
        for i, word in enumerate(words):
            if i and self.delays.llm_token:
                await asyncio.sleep(self.delays.llm_token)
            await response.write(chunk({"content": word if i == 0 else " " + word}))
        await response.write(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"id": ident, "object": "chat.completion.chunk", "created": created,
                     "model": model, "choices": [],
                     "usage": {"prompt_tokens": 20, "completion_tokens": len(words),
                               "total_tokens": 20 + len(words)}}
            await response.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # ------------------------------------------------------------------- Cartesia

    async def _cartesia(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get("X-API-Key") or request.query.get("api_key")
        if key != CARTESIA_KEY:
            self._problem("cartesia", "bad X-API-Key")
            return web.json_response({"error": "Invalid API key"}, status=401)
        version = request.headers.get("Cartesia-Version") or request.query.get("cartesia_version")
        if not version or len(version) != 10 or version[4] != "-" or version[7] != "-":
            self._problem("cartesia", f"bad Cartesia-Version {version!r}")
            return web.json_response({"error": "Cartesia-Version header required"}, status=400)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        contexts: dict[str, _Context] = {}
        send_lock = asyncio.Lock()

        async def send(msg: dict[str, Any]) -> None:
            async with send_lock:
                if not ws.closed:
                    await ws.send_str(json.dumps(msg))

        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    self._problem("cartesia", f"unexpected {message.type.name} message")
                    continue
                try:
                    msg = json.loads(message.data)
                except ValueError:
                    msg = None
                if not isinstance(msg, dict) or not isinstance(msg.get("context_id"), str):
                    self._problem("cartesia", f"message without context_id: {message.data!r}")
                    await send({"type": "error", "context_id": "", "status_code": 400,
                                "done": True, "error": "context_id is required"})
                    continue
                cid = msg["context_id"]
                if msg.get("cancel") is True:
                    self.tts_cancels.append(cid)
                    ctx = contexts.pop(cid, None)
                    if ctx is not None:
                        ctx.cancelled = True
                        if ctx.task is not None:
                            ctx.task.cancel()
                    continue
                self.tts_requests.append(msg)
                problems = _tts_request_problems(msg)
                if problems:
                    self._problem("cartesia", "; ".join(problems))
                    await send({"type": "error", "context_id": cid, "status_code": 400,
                                "done": True, "error": "; ".join(problems)})
                    continue
                ctx = contexts.get(cid)
                if ctx is None:
                    ctx = contexts[cid] = _Context(cid, msg["output_format"]["sample_rate"])
                    ctx.task = asyncio.create_task(self._synthesise(ctx, send))
                if msg["transcript"]:
                    ctx.queue.put_nowait(msg["transcript"])
                if not msg.get("continue", False):
                    ctx.queue.put_nowait(None)
        finally:
            for ctx in contexts.values():
                if ctx.task is not None:
                    ctx.task.cancel()
        return ws

    async def _synthesise(self, ctx: _Context, send: Any) -> None:
        first = True
        while True:
            text = await ctx.queue.get()
            if text is None:
                await send({"type": "done", "context_id": ctx.context_id, "status_code": 200,
                            "done": True})
                return
            if first and self.delays.tts_first_chunk:
                await asyncio.sleep(self.delays.tts_first_chunk)
            first = False
            words = text.split()
            starts, ends, audio = [], [], []
            for word in words:
                seconds = word_seconds(word)
                starts.append(round(ctx.offset, 3))
                ends.append(round(ctx.offset + seconds, 3))
                audio.append(_pcm_word(seconds, ctx.rate))
                ctx.offset += seconds + WORD_GAP_S
            pcm = b"".join(audio)
            step = 2 * round(0.1 * ctx.rate)  # 100 ms per chunk
            for i in range(0, len(pcm), step):
                await send({"type": "chunk", "context_id": ctx.context_id, "status_code": 206,
                            "done": False, "step_time": 1.0,
                            "data": base64.b64encode(pcm[i:i + step]).decode()})
                if i == 0 and words:
                    await send({"type": "timestamps", "context_id": ctx.context_id,
                                "status_code": 206, "done": False,
                                "word_timestamps": {"words": words, "start": starts,
                                                    "end": ends}})
                await asyncio.sleep(0.1 / self.delays.tts_speed)


class _DeepgramStream:
    """One live-transcription connection: audio in, results out, on the audio's clock."""

    BLOCK_S = 0.02
    INTERIM_EVERY_S = 0.4

    def __init__(self, services: VoiceServices, ws: web.WebSocketResponse,
                 request: web.Request, rate: int) -> None:
        self.services = services
        self.ws = ws
        self.request = request
        self.rate = rate
        self.request_id = str(uuid.uuid4())
        q = request.query
        self.interim = q.get("interim_results") == "true"
        self.utterance_end = float(q["utterance_end_ms"]) / 1000 if q.get("utterance_end_ms") \
            else None
        self.model = q.get("model", "")
        self.clock = 0.0  # seconds of audio received
        self.pending = b""
        self.utterance: _Utterance | None = None
        self.last_word_end: float | None = None
        self.finals: list[asyncio.Task[None]] = []
        self.send_lock = asyncio.Lock()

    async def run(self) -> None:
        svc = self.services
        try:
            async for message in self.ws:
                if message.type == WSMsgType.BINARY:
                    if len(message.data) % 2:
                        svc._problem("deepgram", "linear16 audio of an odd byte count")
                    await self._audio(message.data)
                elif message.type == WSMsgType.TEXT:
                    try:
                        msg = json.loads(message.data)
                    except ValueError:
                        msg = {}
                    kind = msg.get("type") if isinstance(msg, dict) else None
                    if kind == "KeepAlive":
                        continue
                    if kind == "Finalize":
                        await self._finalise(from_finalize=True)
                    elif kind == "CloseStream":
                        await self._send({
                            "type": "Metadata", "transaction_key": "deprecated",
                            "request_id": self.request_id, "sha256": "0" * 64,
                            "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                            "duration": round(self.clock, 3), "channels": 1})
                        await self.ws.close()
                    else:
                        svc._problem("deepgram", f"unknown control message {message.data!r}")
                        await self.ws.close(code=1008, message=b"DATA-0000")
                if (svc.script.drop_stt_after is not None and not svc.stt_drops
                        and len(svc.stt_finals) >= svc.script.drop_stt_after):
                    await self._drop()
                    return
        finally:
            for task in self.finals:
                task.cancel()

    async def _drop(self) -> None:
        """The network fails: the TCP connection goes, with no close frame."""
        self.services.stt_drops += 1
        for task in self.finals:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def _audio(self, data: bytes) -> None:
        self.pending += data
        block = 2 * round(self.BLOCK_S * self.rate)
        while len(self.pending) >= block:
            samples = np.frombuffer(self.pending[:block], dtype="<i2").astype(np.float64)
            self.pending = self.pending[block:]
            self.clock += self.BLOCK_S
            loud = math.sqrt(float(np.mean(samples * samples))) > SPEECH_RMS
            await self._block(loud)

    async def _block(self, loud: bool) -> None:
        # An utterance is speech up to a silence of ``stt_endpointing``; it says one line
        # of the script. A Finalize inside it (the client's VAD heard a short pause)
        # finalises the next part of the line; the endpointing silence all the rest.
        u = self.utterance
        now = self.clock
        if loud:
            if u is None or u.ended:
                line = self.services._next_transcript()
                parts = [p.split() for p in line.split("|") if p.split()] or [[]]
                u = self.utterance = _Utterance(
                    parts=parts, start=now - self.BLOCK_S, last_voice=now,
                    segment_start=now - self.BLOCK_S, next_interim=now + self.INTERIM_EVERY_S)
            u.last_voice = now
            if self.interim and now >= u.next_interim and u.parts_final < len(u.parts):
                u.next_interim = now + self.INTERIM_EVERY_S
                words = u.parts[u.parts_final]
                shown = min(len(words) - 1, u.words_interim + 1)
                if shown > u.words_interim:
                    u.words_interim = shown
                    await self._results(" ".join(words[:shown]), u.segment_start, now,
                                        is_final=False, speech_final=False)
            return
        if u is not None and not u.ended:
            if now - u.last_voice >= self.services.delays.stt_endpointing:
                u.ended = True
                await self._finalise(from_finalize=False)
        elif (self.utterance_end is not None and self.last_word_end is not None
              and now - self.last_word_end >= self.utterance_end):
            await self._send({"type": "UtteranceEnd", "channel": [0, 1],
                              "last_word_end": round(self.last_word_end, 3)})
            self.last_word_end = None

    async def _finalise(self, *, from_finalize: bool) -> None:
        u = self.utterance
        text = ""
        start, end = self.clock, self.clock
        if u is not None and u.parts_final < len(u.parts):
            upto = len(u.parts) if u.ended else u.parts_final + 1
            text = " ".join(w for part in u.parts[u.parts_final:upto] for w in part)
            start, end = u.segment_start, u.last_voice
            u.parts_final = upto
            u.words_interim = 0
            u.segment_start = self.clock
            self.last_word_end = end
        if not text and not from_finalize:
            return
        delay = self.services.delays.stt_final

        async def later() -> None:
            if delay:
                await asyncio.sleep(delay)
            await self._results(text, start, end, is_final=True, speech_final=bool(text),
                                from_finalize=from_finalize)
            if text:
                self.services.stt_finals.append(text)

        self.finals.append(asyncio.create_task(later()))

    async def _results(self, text: str, start: float, end: float, *, is_final: bool,
                       speech_final: bool, from_finalize: bool = False) -> None:
        words = text.split()
        span = max(end - start, 0.01)
        items = [{"word": w.strip(",.?!").lower(),
                  "start": round(start + span * i / len(words), 3),
                  "end": round(start + span * (i + 1) / len(words), 3),
                  "confidence": 0.99, "punctuated_word": w} for i, w in enumerate(words)]
        await self._send({
            "type": "Results", "channel_index": [0, 1], "duration": round(end - start, 3),
            "start": round(start, 3), "is_final": is_final, "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [{"transcript": text, "confidence": 0.99 if text else 0,
                                          "words": items}]},
            "metadata": {"request_id": self.request_id,
                         "model_info": {"name": self.model, "version": "standin",
                                        "arch": self.model.split("-")[0] if self.model else ""},
                         "model_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, self.model))},
        })

    async def _send(self, msg: dict[str, Any]) -> None:
        async with self.send_lock:
            if not self.ws.closed:
                with contextlib.suppress(ConnectionError):
                    await self.ws.send_str(json.dumps(msg))


def _chat_request_problems(body: Any, content_type: str) -> list[str]:
    if content_type != "application/json":
        return [f"content type {content_type!r}"]
    if not isinstance(body, dict):
        return ["body is not a JSON object"]
    out = []
    if not isinstance(body.get("model"), str) or not body["model"]:
        out.append("no model")
    if body.get("stream") is not True:
        out.append("stream is not true (the bot must stream)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        out.append("no messages")
    else:
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in (
                    "system", "developer", "user", "assistant", "tool"):
                out.append(f"bad message {m!r}")
            elif not isinstance(m.get("content"), (str, list)):
                out.append(f"message without content {m!r}")
    if body.get("tools"):
        out.append("tools were offered (the stand-in answers tool-call-free)")
    return out


def _tts_request_problems(msg: dict[str, Any]) -> list[str]:
    out = []
    if not isinstance(msg.get("transcript"), str):
        out.append("no transcript")
    if not isinstance(msg.get("model_id"), str) or not msg["model_id"]:
        out.append("no model_id")
    voice = msg.get("voice")
    if not isinstance(voice, dict) or voice.get("mode") != "id" or not voice.get("id"):
        out.append(f"bad voice {voice!r}")
    fmt = msg.get("output_format")
    if not isinstance(fmt, dict):
        out.append("no output_format")
    else:
        if fmt.get("container") != "raw" or fmt.get("encoding") != "pcm_s16le":
            out.append(f"output_format {fmt!r}: want raw pcm_s16le")
        if fmt.get("sample_rate") not in CARTESIA_RATES:
            out.append(f"sample_rate {fmt.get('sample_rate')!r}")
    if "continue" in msg and not isinstance(msg["continue"], bool):
        out.append("continue is not a boolean")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the stand-ins until interrupted, after printing the environment to use."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(
        prog="python -m bench.voice_standins",
        description="Local Deepgram/OpenAI/Cartesia stand-ins for bot.voice_agent.")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--delays", choices=("zero", "typical"), default="typical")
    parser.add_argument("--reply", action="append", default=[],
                        help="the LLM's replies in order (the last repeats); repeatable")
    parser.add_argument("--transcript", action="append", default=[],
                        help="the STT's transcript per caller utterance, '|' between the "
                             "parts said between pauses; repeatable (default: the words "
                             "of bot/assets/caller-demo.wav)")
    args = parser.parse_args(argv)
    script = Script(transcripts=tuple(args.transcript) or ("Hello parrot! | Can you hear me?",),
                    replies=tuple(args.reply) or ("Hello! How can I help?",
                                                  "Yes, I can hear you.",))
    delays = Delays.typical() if args.delays == "typical" else Delays()

    async def serve() -> None:
        services = VoiceServices(script, delays)
        await services.start_on(args.port)
        for name, value in services.environ().items():
            print(f"export {name}={value}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for problem in services.problems:
            print(f"refused: {problem}", flush=True)
        await services.close()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
