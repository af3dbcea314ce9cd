"""The keyed voice agent: its start-up key check, personas, and its pipeline, built offline.

Nothing here runs the pipeline: the services would open connections to Deepgram, OpenAI
and Cartesia, which cannot be reached here. Building it with dummy keys opens none.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType

import pytest
from _util_bot import MemoryCall, make_info

from bot.transport import MediaStreamTransport
from mediastream.agents import BotLoadError

KEYS = {"DEEPGRAM_API_KEY": "dg-test", "OPENAI_API_KEY": "sk-test", "CARTESIA_API_KEY": "ca-test"}


def _import_agent() -> ModuleType:
    pytest.importorskip("deepgram", reason="needs pipecat-ai[deepgram] (deepgram-sdk)")
    sys.modules.pop("bot.voice_agent", None)
    with warnings.catch_warnings():
        # Pipecat's own tts_service module subclasses a class it deprecated; the warning
        # fires on import and is not about anything this project calls.
        warnings.filterwarnings("ignore", "`AudioContextTTSService` is deprecated",
                                DeprecationWarning)
        return importlib.import_module("bot.voice_agent")


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    return _import_agent()


def test_loading_without_keys_is_one_error_naming_every_missing_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("CARTESIA_API_KEY", "  ")
    with pytest.raises(BotLoadError) as info:
        _import_agent()
    message = str(info.value)
    assert "DEEPGRAM_API_KEY" in message and "CARTESIA_API_KEY" in message
    assert "OPENAI_API_KEY" not in message
    assert type(info.value).__name__ == "MissingKeysError"
    sys.modules.pop("bot.voice_agent", None)


def test_keys_from_an_explicit_mapping(agent: ModuleType) -> None:
    keys = agent.Keys.from_env({**KEYS, "OPENAI_MODEL": "gpt-4.1-mini"})
    assert (keys.deepgram, keys.openai, keys.cartesia) == ("dg-test", "sk-test", "ca-test")
    assert keys.openai_model == "gpt-4.1-mini"
    assert keys.cartesia_voice == agent.DEFAULT_VOICE
    assert (keys.deepgram_base_url, keys.openai_base_url, keys.cartesia_url) == ("", "", "")
    pointed = agent.Keys.from_env({**KEYS, "DEEPGRAM_BASE_URL": "ws://dg.local:81 ",
                                   "OPENAI_BASE_URL": "http://llm.local/v1",
                                   "CARTESIA_URL": "ws://tts.local/tts/websocket"})
    assert (pointed.deepgram_base_url, pointed.openai_base_url, pointed.cartesia_url) == (
        "ws://dg.local:81", "http://llm.local/v1", "ws://tts.local/tts/websocket")
    with pytest.raises(agent.MissingKeysError) as info:
        agent.Keys.from_env({})
    assert info.value.missing == agent.REQUIRED_KEYS


@pytest.mark.parametrize(
    ("params", "persona", "caller"),
    [
        ({"session_type": "support", "caller_id": "Ada"}, "support", "Ada"),
        ({"session_type": "SALES"}, "sales", "+15550001111"),
        ({"session_type": "no-such-type"}, "general", "+15550001111"),
        ({}, "general", "+15550001111"),
    ],
)
def test_custom_parameters_choose_the_persona(
    agent: ModuleType, params: dict[str, str], persona: str, caller: str
) -> None:
    chosen, prompt = agent.persona_for(make_info(**params))
    assert chosen is agent.PERSONAS[persona]
    assert prompt.startswith(chosen.system_prompt)
    assert caller in prompt


def test_the_pipeline_is_the_guides_and_builds_offline(agent: ModuleType) -> None:
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMAssistantAggregator,
        LLMUserAggregator,
    )
    from pipecat.services.cartesia.tts import CartesiaTTSService
    from pipecat.services.deepgram.stt import DeepgramSTTService
    from pipecat.services.openai.llm import OpenAILLMService

    call = MemoryCall(info=make_info(session_type="survey", caller_id="Grace"))
    transport = MediaStreamTransport(call)
    worker = agent.build_worker(transport, agent.Keys.from_env(KEYS))
    inner = worker.pipeline.processors[1]
    kinds = [type(p) for p in inner.processors[1:-1]]  # between its own source and sink
    assert kinds == [
        type(transport.input()), agent.CallControl, DeepgramSTTService, LLMUserAggregator,
        OpenAILLMService, CartesiaTTSService, type(transport.output()), LLMAssistantAggregator,
    ]
    # In at the call's rate (no resampling in Pipecat), out at the wire rate.
    assert worker.params.audio_in_sample_rate == call.sample_rate
    assert worker.params.audio_out_sample_rate == call.info.outbound_format.sample_rate
    # The persona's prompt is the LLM's system instruction, the context starts empty,
    # and the greeting is triggered when the call connects.
    llm = inner.processors[5]
    prompt = llm._settings.system_instruction
    assert prompt.startswith(agent.PERSONAS["survey"].system_prompt)
    assert "Grace" in prompt
    assert inner.processors[4].context.get_messages() == []
    assert transport._event_handlers["on_client_connected"].handlers
