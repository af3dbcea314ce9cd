"""The voice agent of Pipecat's Twilio guide, on mediastream: Deepgram -> OpenAI -> Cartesia.

Keys come from ``DEEPGRAM_API_KEY``, ``OPENAI_API_KEY`` and ``CARTESIA_API_KEY``; loading
the bot (``mediastream serve --bot bot.voice_agent``) fails at once with one error naming
every missing key, rather than on the first call. Optional: ``OPENAI_MODEL``,
``CARTESIA_VOICE_ID``, and the services' endpoints for a proxy, a self-hosted or
regional deployment (or local stand-ins): ``DEEPGRAM_BASE_URL`` (e.g.
``wss://dg.example.internal``; ``ws://`` / ``http://`` for a plain-text one),
``OPENAI_BASE_URL`` (e.g. ``https://llm.example.internal/v1``, any OpenAI-compatible
server) and ``CARTESIA_URL`` (the TTS WebSocket URL). Deepgram needs Pipecat's
``deepgram`` extra (``pip install 'pipecat-ai[deepgram]'``).

The call's custom parameters choose the persona: ``session_type`` picks the system
prompt and greeting (see :data:`PERSONAS`), ``caller_id`` (else the caller's number) is
given to the model so it can address the caller. Turn-taking is Silero VAD in the user
aggregator, as in the guide; the transport turns its interruptions into a provider
``clear``.

What a phone call needs beyond the guide's pipeline (:class:`CallControl`):

* ``#`` ends the call: whatever the agent is saying is cut, it says "Goodbye!", and the
  call is hung up once the caller has heard it. The caller's audio is no longer
  listened to from then on, so the goodbye cannot be talked over.
* A failed service never leaves the caller in silence. The LLM failing a turn (an HTTP
  500 once the client's retries are spent, a timeout) gets a short spoken apology and
  the call goes on; the speech-to-text socket dropping is logged as such, Deepgram's
  service reconnects by itself, and the call goes on. A service that can no longer work
  at all (rejected key, given up reconnecting) gets an apology and a goodbye, and the
  call ends (without words when it is the TTS). Each case is one log line naming the
  call and what the bot decided.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    EndWorkerFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    LLMRunFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner

from bot.transport import MediaStreamTransport
from mediastream.agents import BotLoadError

try:
    from pipecat.services.cartesia.tts import CartesiaTTSService
    from pipecat.services.deepgram.stt import DeepgramSTTService
    from pipecat.services.openai.llm import OpenAILLMService
except ImportError as exc:  # Pipecat raises ImportError naming the missing SDK
    raise BotLoadError(
        f"bot.voice_agent needs Pipecat's service extras ({exc}): "
        "pip install 'pipecat-ai[deepgram,cartesia,openai]'"
    ) from exc
from mediastream.protocols.events import CallInfo

__all__ = [
    "APOLOGY",
    "GOODBYE",
    "OUT_OF_ORDER",
    "PERSONAS",
    "REQUIRED_KEYS",
    "CallControl",
    "Keys",
    "MissingKeysError",
    "Persona",
    "build_worker",
    "persona_for",
    "run_bot",
]

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "CARTESIA_API_KEY")
#: A Cartesia stock voice (the one Pipecat's telephony examples use).
DEFAULT_VOICE = "71a7ad14-091c-4e8e-a314-022ece01c121"
DEFAULT_MODEL = "gpt-4.1"
#: Said when the LLM fails a turn: the caller hears something rather than silence.
APOLOGY = "Sorry, I didn't catch that. Could you say it again?"
#: Said when ``#`` is pressed, before the hang-up.
GOODBYE = "Goodbye!"
#: Said when a service can no longer work at all, before the hang-up.
OUT_OF_ORDER = "Sorry, I'm having technical trouble. Please call back later. Goodbye!"

_PHONE_STYLE = (
    " You are on a phone call: your words are converted to audio, so answer in one or two"
    " short sentences of plain speech, with no lists, markup, emojis or special characters."
)


@dataclass(frozen=True, slots=True)
class Persona:
    """What the agent is for: its system prompt and the instruction for its first words."""

    system_prompt: str
    greeting: str


#: ``session_type`` custom parameter -> persona. Unknown or missing types get "general".
PERSONAS: Mapping[str, Persona] = {
    "general": Persona(
        "You are a friendly, helpful voice assistant." + _PHONE_STYLE,
        "Greet the caller warmly and ask how you can help.",
    ),
    "support": Persona(
        "You are a patient customer-support agent. Find out what went wrong, ask one"
        " question at a time, and confirm the fix with the caller." + _PHONE_STYLE,
        "Greet the caller, say you are support, and ask what the problem is.",
    ),
    "sales": Persona(
        "You are an upbeat sales assistant. Learn what the caller needs before suggesting"
        " anything, and never invent prices or availability." + _PHONE_STYLE,
        "Greet the caller and ask what they are looking for today.",
    ),
    "survey": Persona(
        "You are running a three-question satisfaction survey: ask how satisfied the caller"
        " is from one to five, what went well, and what could be better, then thank them."
        + _PHONE_STYLE,
        "Greet the caller, say the survey takes a minute, and ask the first question.",
    ),
}


class MissingKeysError(BotLoadError):
    """One or more API keys the voice agent needs are not set.

    A :class:`~mediastream.agents.BotLoadError`, so ``mediastream serve`` reports it as one
    line and exits instead of printing a traceback.
    """

    def __init__(self, missing: tuple[str, ...]) -> None:
        self.missing = missing
        super().__init__(
            "bot.voice_agent needs " + ", ".join(missing) + " in the environment "
            "(Deepgram STT, OpenAI LLM, Cartesia TTS); set them, or run the offline parrot "
            "with --bot bot.parrot"
        )


@dataclass(frozen=True, slots=True)
class Keys:
    """The three services' API keys, and the optional model/voice choices."""

    deepgram: str
    openai: str
    cartesia: str
    openai_model: str = DEFAULT_MODEL
    cartesia_voice: str = DEFAULT_VOICE
    #: Endpoints other than the providers' own (a proxy, a self-hosted or regional
    #: deployment); empty means the provider's default.
    deepgram_base_url: str = ""
    openai_base_url: str = ""
    cartesia_url: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Keys:
        """Read the keys; raise :class:`MissingKeysError` naming every one that is unset."""
        env = os.environ if environ is None else environ
        missing = tuple(name for name in REQUIRED_KEYS if not env.get(name, "").strip())
        if missing:
            raise MissingKeysError(missing)
        return cls(
            deepgram=env["DEEPGRAM_API_KEY"].strip(),
            openai=env["OPENAI_API_KEY"].strip(),
            cartesia=env["CARTESIA_API_KEY"].strip(),
            openai_model=env.get("OPENAI_MODEL", "").strip() or DEFAULT_MODEL,
            cartesia_voice=env.get("CARTESIA_VOICE_ID", "").strip() or DEFAULT_VOICE,
            deepgram_base_url=env.get("DEEPGRAM_BASE_URL", "").strip(),
            openai_base_url=env.get("OPENAI_BASE_URL", "").strip(),
            cartesia_url=env.get("CARTESIA_URL", "").strip(),
        )


def persona_for(info: CallInfo) -> tuple[Persona, str]:
    """The persona chosen by ``session_type`` and the system prompt personalised for the call."""
    params = info.custom_parameters
    session_type = params.get("session_type", "general").strip().lower() or "general"
    persona = PERSONAS.get(session_type)
    if persona is None:
        log.info("[call %s] unknown session_type %r, using 'general'", info.call_id, session_type)
        persona = PERSONAS["general"]
    prompt = persona.system_prompt
    caller = params.get("caller_id") or info.from_number
    if caller:
        prompt += f" The caller is identified as {caller}."
    return persona, prompt


class CallControl(FrameProcessor):
    """What a phone call needs around the guide's pipeline: ``#`` to leave, and no silence
    when a service fails.

    Placed right after the transport's input. On ``#`` it cuts whatever is being said
    (an interruption, which the transport turns into a provider ``clear``), has the TTS
    say :data:`GOODBYE`, and ends the worker behind it: the worker's ``EndFrame`` follows
    the goodbye down the pipeline, and the transport hangs up once it was heard. From
    then on the caller's audio stops here, so neither VAD nor STT can start a new turn
    over the goodbye. Service errors reach it through :meth:`service_failed`, which the
    worker's ``on_pipeline_error`` event calls.
    """

    def __init__(self, call_id: str, *, stt: FrameProcessor, llm: FrameProcessor,
                 tts: FrameProcessor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._call_id = call_id
        self._stt, self._llm, self._tts = stt, llm, tts
        self._leaving = False

    @property
    def leaving(self) -> bool:
        """True once the bot decided to end the call (``#`` or a service out of order)."""
        return self._leaving

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputDTMFFrame) and frame.button == KeypadEntry.POUND:
            if not self._leaving:
                log.info("[call %s] caller pressed #: saying goodbye, then hanging up",
                         self._call_id)
                await self._leave(GOODBYE, interrupt=True)
            return
        if self._leaving and isinstance(frame, InputAudioRawFrame):
            return  # nobody listens any more: the goodbye cannot be talked over
        await self.push_frame(frame, direction)

    async def _leave(self, words: str, *, interrupt: bool) -> None:
        self._leaving = True
        if interrupt:
            await self.broadcast_interruption()  # type: ignore[no-untyped-call]
        await self.push_frame(TTSSpeakFrame(words, append_to_context=False))
        # Behind the words: the worker's EndFrame then follows them down the pipeline,
        # the TTS finishes their audio, and the transport hangs up once it was heard.
        await self.push_frame(EndWorkerFrame(reason="the voice agent ended the call"))

    async def service_failed(self, error: ErrorFrame) -> None:
        """Decide what the caller hears when one of the services reports an error."""
        source = error.processor
        if self._leaving:
            log.info("[call %s] %s failed while leaving: %s", self._call_id,
                     getattr(source, "name", "a processor"), error.error)
            return
        service = {id(self._stt): "speech-to-text", id(self._llm): "LLM",
                   id(self._tts): "text-to-speech"}.get(id(source))
        if service is None:
            log.warning("[call %s] pipeline error: %s", self._call_id, error.error)
            return
        if source is self._tts and not source.is_usable:
            log.error("[call %s] text-to-speech is out of order (%s): ending the call, "
                      "nothing can be said", self._call_id, error.error)
            self._leaving = True
            await self.push_frame(EndWorkerFrame(reason="text-to-speech out of order"))
        elif source is not None and not source.is_usable:
            log.error("[call %s] %s is out of order (%s): apologising and ending the call",
                      self._call_id, service, error.error)
            await self._leave(OUT_OF_ORDER, interrupt=True)
        elif source is self._llm:
            log.warning("[call %s] the LLM failed this turn (%s): apologising, the call goes on",
                        self._call_id, error.error)
            await self.push_frame(TTSSpeakFrame(APOLOGY, append_to_context=False))
        elif source is self._stt:
            log.warning("[call %s] speech-to-text connection failed (%s): it reconnects, "
                        "the call goes on", self._call_id, error.error)
        else:
            log.warning("[call %s] text-to-speech failed (%s): the call goes on",
                        self._call_id, error.error)


def build_worker(
    transport: BaseTransport,
    keys: Keys,
    *,
    info: CallInfo | None = None,
    in_rate: int | None = None,
    out_rate: int | None = None,
    **worker_args: Any,
) -> PipelineWorker:
    """The guide's pipeline over ``transport``: STT -> user turn -> LLM -> TTS -> output.

    With a :class:`MediaStreamTransport`, input is at the call's rate (what the session
    delivers) and output at the provider's wire rate, so the session has nothing to
    resample on the way out. Any other Pipecat transport (the benchmark runs the same
    bot behind Pipecat's own FastAPI stack) passes the call's ``info`` and its rates.
    Building it opens no connection; the services connect when the pipeline starts.
    """
    if isinstance(transport, MediaStreamTransport):
        info = info or transport.info
        in_rate = in_rate or transport.sample_rate
        out_rate = out_rate or info.outbound_format.sample_rate
    if info is None or in_rate is None or out_rate is None:
        raise ValueError("build_worker needs info, in_rate and out_rate with this transport")
    persona, prompt = persona_for(info)
    stt = DeepgramSTTService(api_key=keys.deepgram, base_url=keys.deepgram_base_url)
    llm = OpenAILLMService(api_key=keys.openai, base_url=keys.openai_base_url or None,
                           settings=OpenAILLMService.Settings(model=keys.openai_model,
                                                              system_instruction=prompt))
    tts_args: dict[str, Any] = {"url": keys.cartesia_url} if keys.cartesia_url else {}
    tts = CartesiaTTSService(api_key=keys.cartesia,
                             settings=CartesiaTTSService.Settings(voice=keys.cartesia_voice),
                             **tts_args)
    control = CallControl(info.call_id, stt=stt, llm=llm, tts=tts)
    # The persona's prompt is the service's system instruction (Pipecat >= 1.9 deprecates
    # carrying it as the context's first message); the context holds the conversation.
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    pipeline = Pipeline([
        transport.input(),
        control,
        stt,
        aggregators.user(),
        llm,
        tts,
        transport.output(),
        aggregators.assistant(),
    ])
    args: dict[str, Any] = {
        "params": PipelineParams(audio_in_sample_rate=in_rate, audio_out_sample_rate=out_rate),
        "enable_rtvi": False,  # a phone has no RTVI client
    }
    args.update(worker_args)
    worker = PipelineWorker(pipeline, **args)

    async def greet(_transport: Any, _call: Any) -> None:
        # An instruction from the application, not words of the caller: OpenAI's
        # "developer" role.
        context.add_message({"role": "developer", "content": persona.greeting})
        await worker.queue_frames([LLMRunFrame()])

    async def failed(_worker: PipelineWorker, error: ErrorFrame) -> None:
        await control.service_failed(error)

    async def finished(_worker: PipelineWorker, _frame: Any) -> None:
        # Pipecat never closes the OpenAI client it made for the service: its pooled
        # keep-alive connection (no expiry) would stay open after the call until the
        # garbage collector found it, one socket per call. A private attribute: if a
        # Pipecat release renames it, the call still ends (and the socket waits for
        # the collector, as before).
        client = getattr(llm, "_client", None)
        if client is not None:
            await client.close()

    transport.add_event_handler("on_client_connected", greet)
    worker.add_event_handler("on_pipeline_error", failed)
    worker.add_event_handler("on_pipeline_finished", finished)

    return worker


async def run_bot(transport: MediaStreamTransport, call: CallInfo) -> None:
    """Talk with the caller until either side hangs up."""
    worker = build_worker(transport, Keys.from_env())
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


# Loading the bot is its start-up: missing keys are reported once, when the server loads
# it, not as a failure on every call.
Keys.from_env()
