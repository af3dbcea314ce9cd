"""The parrot: the offline default bot. No keys, no network, every part of the path used.

* A greeting plays when the call starts.
* Silero VAD (its ONNX model ships inside pipecat-ai) finds the caller's turns; after each
  turn the parrot plays the caller's own words back.
* Speaking over the parrot interrupts it: an ``InterruptionFrame`` clears the provider's
  buffer, and the new words become the next turn.
* Each key pressed is acknowledged with its DTMF tone; ``#`` plays a goodbye and hangs up
  once the caller has heard it.

Greeting and goodbye are small 16 kHz WAVs in ``bot/assets`` (made with espeak-ng, see
its README), so nothing is synthesised at run time.
"""

from __future__ import annotations

import wave
from collections import deque
from functools import cache
from importlib.resources import files
from typing import Any

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    OutputAudioRawFrame,
    OutputDTMFFrame,
    StartFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
from pipecat.workers.runner import WorkerRunner

from mediastream.protocols.events import CallInfo

__all__ = ["ParrotProcessor", "PrimedVADProcessor", "build_worker", "load_asset", "run_bot"]

#: Silero's model takes 8 or 16 kHz only.
VAD_RATES = (8000, 16000)
#: A pause this long ends the caller's turn: long enough not to cut a sentence at a comma.
TURN_STOP_SECS = 0.6


@cache
def load_asset(name: str) -> tuple[bytes, int]:
    """A bundled WAV (16-bit mono) as ``(pcm, sample_rate)``."""
    with files("bot").joinpath("assets", name).open("rb") as f, wave.open(f) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{name}: want 16-bit mono PCM")
        return w.readframes(w.getnframes()), w.getframerate()


class ParrotProcessor(FrameProcessor):
    """Records each caller turn between VAD start/stop frames and plays it back.

    ``preroll_secs`` of audio from before the VAD fired is kept, because Silero needs
    ``start_secs`` of speech before it reports a start; the trailing ``stop_secs`` of
    silence that ended the turn is trimmed. Turns are capped at ``max_turn_secs``.
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        greeting: tuple[bytes, int] | None = None,
        goodbye: tuple[bytes, int] | None = None,
        preroll_secs: float = 0.4,
        trim_secs: float = TURN_STOP_SECS - 0.15,
        max_turn_secs: float = 15.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self._rate = sample_rate
        self._greeting = greeting
        self._goodbye = goodbye
        self._preroll: deque[bytes] = deque()
        self._preroll_bytes = 0
        self._preroll_max = round(preroll_secs * sample_rate) * 2
        self._trim_bytes = max(0, round(trim_secs * sample_rate)) * 2
        self._max_bytes = round(max_turn_secs * sample_rate) * 2
        self._turn: list[bytes] | None = None
        self._turn_bytes = 0
        self._bot_speaking = False
        self._leaving = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self._listen(frame.audio)
            return  # the caller's audio ends here: nothing downstream wants it
        if isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
        await self.push_frame(frame, direction)

        if isinstance(frame, StartFrame):
            if self._greeting:
                await self._say(*self._greeting)
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            await self._turn_started()
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            await self._turn_stopped()
        elif isinstance(frame, InputDTMFFrame):
            await self._key(frame.button)

    def _listen(self, audio: bytes) -> None:
        if self._turn is not None:
            if self._turn_bytes < self._max_bytes:
                self._turn.append(audio)
                self._turn_bytes += len(audio)
            return
        self._preroll.append(audio)
        self._preroll_bytes += len(audio)
        while self._preroll and self._preroll_bytes - len(self._preroll[0]) >= self._preroll_max:
            self._preroll_bytes -= len(self._preroll.popleft())

    async def _turn_started(self) -> None:
        if self._leaving:
            return
        if self._bot_speaking:
            # Barge-in: stop talking (the transport clears the provider's buffer).
            await self.broadcast_interruption()  # type: ignore[no-untyped-call]
        self._turn = list(self._preroll)
        self._turn_bytes = self._preroll_bytes
        self._preroll.clear()
        self._preroll_bytes = 0

    async def _turn_stopped(self) -> None:
        turn, self._turn = self._turn, None
        if turn is None or self._leaving:
            return
        audio = b"".join(turn)
        audio = audio[: max(0, len(audio) - self._trim_bytes)]
        if audio:
            await self._say(audio, self._rate)

    async def _key(self, button: KeypadEntry) -> None:
        if self._leaving:
            return
        if button != KeypadEntry.POUND:
            await self.push_frame(OutputDTMFFrame(button=button))
            return
        self._leaving = True
        self._turn = None
        if self._bot_speaking:
            await self.broadcast_interruption()  # type: ignore[no-untyped-call]
        await self.push_frame(OutputDTMFFrame(button=button))
        if self._goodbye:
            await self._say(*self._goodbye, interruptible=False)
        # Downstream, behind the goodbye: the worker then sends an EndFrame through the
        # pipeline and the output transport hangs up once the goodbye was heard.
        await self.push_frame(EndWorkerFrame(reason="caller pressed #"))

    async def _say(self, audio: bytes, rate: int, *, interruptible: bool = True) -> None:
        frame = OutputAudioRawFrame(audio=audio, sample_rate=rate, num_channels=1)
        frame.interruptible = interruptible
        await self.push_frame(frame)


class PrimedVADProcessor(VADProcessor):
    """A VADProcessor whose analyzer has heard ``prime_secs`` of silence before the call.

    Silero's recurrent state and the analyzer's smoothed volume both start from zero, and
    from there the first half second of a call is judged too quietly: a caller who
    speaks at once (a short "hello" as the greeting starts) was never heard. Silence
    first puts both where they would be on a line that had been open a moment.
    """

    def __init__(self, *, vad_analyzer: VADAnalyzer, prime_secs: float = 0.5,
                 **kwargs: Any) -> None:
        super().__init__(vad_analyzer=vad_analyzer, **kwargs)
        self._analyzer = vad_analyzer
        self._prime_secs = prime_secs

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        await super().setup(setup)
        samples = round(self._prime_secs * self._analyzer.sample_rate)
        await self._analyzer.analyze_audio(bytes(2 * samples))


def build_worker(transport: Any, **worker_args: Any) -> PipelineWorker:
    """input -> Silero VAD -> parrot -> output, at the transport's rate."""
    rate = transport.sample_rate
    if rate not in VAD_RATES:
        raise ValueError(f"the parrot's Silero VAD needs 8000 or 16000 Hz, the call has {rate}")
    vad = PrimedVADProcessor(
        vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=TURN_STOP_SECS)))
    parrot = ParrotProcessor(
        sample_rate=rate, greeting=load_asset("greeting.wav"), goodbye=load_asset("goodbye.wav")
    )
    pipeline = Pipeline([transport.input(), vad, parrot, transport.output()])
    args: dict[str, Any] = {
        "params": PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
        "enable_rtvi": False,
    }
    args.update(worker_args)
    return PipelineWorker(pipeline, **args)


async def run_bot(transport: Any, call: CallInfo) -> None:
    """Greet, parrot each turn back, ack keys, say goodbye on ``#``."""
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(build_worker(transport))
    await runner.run()
