"""The minimal Pipecat bot: every input audio frame comes straight back as output.

transport input -> :class:`EchoProcessor` -> transport output, at the call's rate (16 kHz
by default: what STT services want, so the whole resampling path is exercised). The
benchmarks run it on mediastream and on Pipecat's own Twilio stack alike.
"""

from __future__ import annotations

from typing import Any

from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner

from mediastream.protocols.events import CallInfo

__all__ = ["EchoProcessor", "build_worker", "run_bot"]


class EchoProcessor(FrameProcessor):
    """Turns each ``InputAudioRawFrame`` into an ``OutputAudioRawFrame`` with the same audio."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            await self.push_frame(
                OutputAudioRawFrame(
                    audio=frame.audio,
                    sample_rate=frame.sample_rate,
                    num_channels=frame.num_channels,
                )
            )
        else:
            await self.push_frame(frame, direction)


def build_worker(transport: BaseTransport, sample_rate: int, **worker_args: Any) -> PipelineWorker:
    """The echo pipeline over any Pipecat transport, at ``sample_rate`` in and out.

    RTVI, turn tracking and the idle timeout are off: a phone caller has no RTVI client
    and an echo has no turns. The benchmark builds Pipecat's reference stack with this
    same function so that only the transport differs.
    """
    pipeline = Pipeline([transport.input(), EchoProcessor(), transport.output()])
    args: dict[str, Any] = {
        "params": PipelineParams(audio_in_sample_rate=sample_rate,
                                 audio_out_sample_rate=sample_rate),
        "enable_rtvi": False,
        "enable_turn_tracking": False,
        "idle_timeout_secs": None,
    }
    args.update(worker_args)
    return PipelineWorker(pipeline, **args)


async def run_bot(transport: Any, call: CallInfo) -> None:
    """Echo the caller until the call ends."""
    worker = build_worker(transport, transport.sample_rate)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()
