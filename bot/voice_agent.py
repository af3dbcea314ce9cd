"""The voice agent of Pipecat's Twilio guide, on mediastream: Deepgram -> OpenAI -> Cartesia.

Keys come from ``DEEPGRAM_API_KEY``, ``OPENAI_API_KEY`` and ``CARTESIA_API_KEY``; loading
the bot (``mediastream serve --bot bot.voice_agent``) fails at once with one error naming
every missing key, rather than on the first call. Optional: ``OPENAI_MODEL``,
``CARTESIA_VOICE_ID``. Deepgram needs Pipecat's ``deepgram`` extra
(``pip install 'pipecat-ai[deepgram]'``).

The call's custom parameters choose the persona: ``session_type`` picks the system
prompt and greeting (see :data:`PERSONAS`), ``caller_id`` (else the caller's number) is
given to the model so it can address the caller. Turn-taking is Silero VAD in the user
aggregator, as in the guide; the transport turns its interruptions into a provider
``clear``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
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
    "PERSONAS",
    "REQUIRED_KEYS",
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


def build_worker(transport: MediaStreamTransport, keys: Keys, **worker_args: Any) -> PipelineWorker:
    """The guide's pipeline over ``transport``: STT -> user turn -> LLM -> TTS -> output.

    Input is at the call's rate (what the session delivers), output at the provider's
    wire rate so the session has nothing to resample on the way out. Building it opens
    no connection; the services connect when the pipeline starts.
    """
    info = transport.info
    persona, prompt = persona_for(info)
    stt = DeepgramSTTService(api_key=keys.deepgram)
    llm = OpenAILLMService(api_key=keys.openai,
                           settings=OpenAILLMService.Settings(model=keys.openai_model))
    tts = CartesiaTTSService(api_key=keys.cartesia,
                             settings=CartesiaTTSService.Settings(voice=keys.cartesia_voice))
    context = LLMContext(messages=[{"role": "system", "content": prompt}])
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    pipeline = Pipeline([
        transport.input(),
        stt,
        aggregators.user(),
        llm,
        tts,
        transport.output(),
        aggregators.assistant(),
    ])
    args: dict[str, Any] = {
        "params": PipelineParams(
            audio_in_sample_rate=transport.sample_rate,
            audio_out_sample_rate=info.outbound_format.sample_rate,
        ),
        "enable_rtvi": False,  # a phone has no RTVI client
    }
    args.update(worker_args)
    worker = PipelineWorker(pipeline, **args)

    async def greet(_transport: MediaStreamTransport, _call: Any) -> None:
        context.add_message({"role": "system", "content": persona.greeting})
        await worker.queue_frames([LLMRunFrame()])

    transport.add_event_handler("on_client_connected", greet)

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
